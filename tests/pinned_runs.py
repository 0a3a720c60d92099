"""Fixed-seed short searches whose outcome is pinned in tests/data/pinned_runs.json.

Every method (and the main variants of its options) runs on a small real-MNIST
subset; the masks digest, the round
records (without wall time), the final numbers and the method's summary are
compared with the pinned ones by tests/test_pinned_runs.py, so a refactoring
that changes what a method does cannot pass unnoticed. The pins were written
with one step per execution; the runs use multi-step execution (chunks of 50
here, which divide neither LTH's k = 7 nor every event step), so the test also
shows that chunking changes nothing. XLA is off: it gives the same masks, but
its fused float arithmetic can change the last bits of a loss.

    python tests/pinned_runs.py --write   # re-pin (only for an intended change)
    python tests/pinned_runs.py --one_step --jit_compile   # other settings, printed
"""

import json
import os
import sys

PINS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "pinned_runs.json")

# name -> (method, hyperparameters); target sparsity 0.75 unless given.
RUNS = {
    "dense": ("dense", dict(epochs=2)),
    "random": ("random", dict(epochs=2)),
    "random_erk": ("random", dict(epochs=2, allocation="erk")),
    "lth": ("lth", dict(epochs_per_round=1, prune_rate=0.5, rewind_step=7)),
    "lth_global": ("lth", dict(epochs_per_round=1, prune_rate=0.5, rewind_step=0,
                               selection="magnitude_global")),
    "lth_block": ("lth", dict(epochs_per_round=1, prune_rate=0.5, block_size=(4, 1))),
    "dlth": ("dlth", dict(growth="absolute", lambda_delta=0.02, lambda_every=1,
                          hold_epochs=1, finetune_epochs=1)),
    "dlth_erk": ("dlth", dict(growth="absolute", lambda_delta=0.02, lambda_every=1,
                              hold_epochs=1, finetune_epochs=1, allocation="erk")),
    "unilth": ("unilth", dict(epochs=9, rounds=2, round_epochs=1, patience=1,
                              min_finetune_epochs=0)),
    "unilth_global": ("unilth", dict(epochs=9, rounds=2, round_epochs=1, patience=1,
                                     min_finetune_epochs=0, selection="magnitude_global")),
    # The v1 configuration (UniDLTH's defaults before #17): pinned before the
    # defaults changed, so the flags still reach it exactly.
    "unidlth": ("unidlth", dict(epochs=9, rounds=2, round_epochs=1, patience=1,
                                min_finetune_epochs=0, allocation="uniform",
                                remove_at_end=False)),
    "unidlth_defaults": ("unidlth", dict(epochs=9, rounds=2, round_epochs=1, patience=1,
                                         min_finetune_epochs=0)),
}


def _strip_time(record):
    return {k: v for k, v in record.items() if k not in ("wall_seconds", "seconds")}


def run(name, data_dir, **settings):
    import tf_unilth  # pylint: disable=import-outside-toplevel
    method, kwargs = RUNS[name]
    splits = tf_unilth.data.load("mnist", data_dir=data_dir, download=False, batch_size=60,
                                 train_limit=3000, validation_size=1000, test_limit=1000)
    model = tf_unilth.models.build("lenet300_100", (28, 28, 1), 10, seed=0)
    result = tf_unilth.find_ticket(
        model, method, splits.train, splits.validation, target_sparsity=0.75,
        test_data=splits.test, verbose=0, printer=lambda *_: None,
        **{"steps_per_execution": "auto", "jit_compile": False, **settings}, **kwargs)
    digest = tf_unilth.training.masks_digest(result.pruned_model) \
        if result.pruned_model is not None else None
    info = {k: v for k, v in (result.method_info or {}).items() if k != "plan"} or None
    return {"masks_digest": digest, "rounds": [_strip_time(r) for r in result.rounds],
            "final": result.final, "total": _strip_time(result.total), "method_info": info}


def main(argv):
    data_dir = os.environ.get("TFDS_DATA_DIR")
    settings = {}
    if "--one_step" in argv:  # the settings the pins were written with
        settings["steps_per_execution"] = 1
    if "--jit_compile" in argv:
        settings["jit_compile"] = True
    out = {name: run(name, data_dir, **settings) for name in RUNS}
    text = json.dumps(out, indent=1, sort_keys=True)
    if "--write" in argv:
        with open(PINS, "w") as f:
            f.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
