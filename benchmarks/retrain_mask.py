"""Diagnostic: is a ticket's mask, or its trained weights, what limits it?

Takes finished `examples/find_ticket.py` runs, rebuilds their initialization
theta_0 (same model, same seed), keeps each ticket's mask (its zero weights) and
trains it from theta_0 the way an LTH round does (fresh Adam, `--steps`, two
data orders), then measures the VALIDATION accuracy: a method's mask against
LTH's mask at the same density, trained the same way, without touching test.

    python benchmarks/retrain_mask.py --data_dir=$TFDS_DATA_DIR \
        --runs=benchmarks/runs/unilth_s0.965_seed0 --lth_run=benchmarks/runs/lth_seed0 \
        --output=benchmarks/results/retrain_mask.json
"""

import json
import os
import sys

import numpy as np
from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import collect_runs  # noqa: E402  (its JSON table helpers and --runs/--output flags)
import tf_unilth  # noqa: E402
from tf_unilth import analysis, masks  # noqa: E402
from tf_unilth._compat import keras  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("lth_run", None, "An LTH run whose round nearest each ticket's density "
                    "is quoted beside it (its rounds train from theta_0 the same way).")
flags.DEFINE_string("data_dir", os.environ.get("TFDS_DATA_DIR"), "TFDS data dir with mnist.")
flags.DEFINE_integer("steps", 9170, "Training steps from theta_0 (10 epochs at batch 60).")


def retrain(run):
    with open(os.path.join(run, "results.json")) as f:
        result = json.load(f)
    fl = result["flags"]
    splits = tf_unilth.data.load(fl["dataset"], data_dir=FLAGS.data_dir,
                                 batch_size=fl["batch_size"],
                                 validation_size=fl["validation_size"], seed=fl["seed"],
                                 standardize=fl["standardize"])
    theta0 = tf_unilth.models.build(fl["model"], splits.info.input_shape,
                                    splits.info.num_classes, seed=fl["seed"])
    ticket = keras.models.load_model(os.path.join(run, "ticket.keras"), compile=False)
    # The ticket's zeros (a Mask keyed like a wrapped model's; the ticket has
    # theta_0's layer names); stability_test applies the mask to theta_0 itself.
    mask = masks.zeros_mask(ticket)
    res = analysis.stability_test(
        theta0, mask, 0, splits.train, splits.validation,
        train_steps=FLAGS.steps, batch_size=fl["batch_size"],
        learning_rate=fl["learning_rate"], seeds=(1, 2))
    row = {"run": os.path.basename(os.path.normpath(run)), "method": result["method"],
           "sparsity": result["final"]["sparsity"],
           "layer_density": {k: float(v.mean()) for k, v in mask.items()},
           "ticket_val_accuracy": result["final"]["val_accuracy"],
           "mask_from_theta0_val_accuracy": [float(a) for a in res.test_accuracy],
           "steps": FLAGS.steps}
    if FLAGS.lth_run:
        with open(os.path.join(FLAGS.lth_run, "results.json")) as f:
            rounds = json.load(f)["rounds"]
        near = min(rounds, key=lambda r: abs(np.log((1 - r["sparsity"]) /
                                                    (1 - row["sparsity"]))))
        row["lth_round"] = {"run": os.path.basename(os.path.normpath(FLAGS.lth_run)),
                            "round": near["round"], "sparsity": near["sparsity"],
                            "val_accuracy": near["val_accuracy"]}
    return row


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # the searches' checkpoint writes log at INFO
    table = collect_runs.load_table(FLAGS.output)
    for run in FLAGS.runs:
        row = retrain(run)
        table[row["run"]] = row
        lth = row.get("lth_round")
        print(f"{row['run']}: ticket val {100 * row['ticket_val_accuracy']:.2f}%, its mask "
              f"from theta_0 {', '.join(f'{100 * a:.2f}%' for a in row['mask_from_theta0_val_accuracy'])}"
              + (f"; LTH round {lth['round']} ({100 * (1 - lth['sparsity']):.2f}% density) val "
                 f"{100 * lth['val_accuracy']:.2f}%" if lth else ""), flush=True)
        collect_runs.write_table(FLAGS.output, table, benchmark="retrain_mask")


if __name__ == "__main__":
    app.run(main)
