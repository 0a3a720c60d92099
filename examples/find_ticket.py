"""Find a lottery ticket on a TFDS dataset with one of tf_unilth's methods.

    python examples/find_ticket.py --method=unilth --target_sparsity=0.9 \
        --dataset=mnist --model=lenet300_100 --output_dir=runs/unilth

Writes to --output_dir: results.json (per-round records, final numbers, every
flag), ticket.keras (the trained ticket, wrappers stripped), curve.png (test
accuracy against sparsity per round) and TensorBoard logs under logs/.

The search snapshots itself in --output_dir/state after every epoch: a run
killed at any point (kill -9 included) continues from its last snapshot when
the same command is started again; a finished run says so and exits.

Distributed training (--distribution): `mirrored` trains on this machine's
GPUs, or on --cpu_devices logical CPU devices; `multi_worker` is one process
per worker configured by TF_CONFIG (examples/launch_local_workers.py starts
them on this machine). --batch_size is the global batch, split evenly over the
replicas. Under multi-worker only the chief writes results.json, the ticket and
the plot; --output_dir must be a directory every worker sees. Every worker
prints the digest of its masks at the end (equal digests: same ticket).
"""

import json
import os
import sys

from absl import app, flags, logging

import tf_unilth
from tf_unilth import distribute, results

FLAGS = flags.FLAGS

# Run
flags.DEFINE_enum("method", "dense", sorted(tf_unilth.methods.METHODS), "Ticket method.")
flags.DEFINE_string("dataset", "mnist", f"TFDS dataset ({', '.join(tf_unilth.data.KNOWN_DATASETS)}).")
flags.DEFINE_string("model", "lenet300_100", f"Network ({', '.join(tf_unilth.models.names())}).")
flags.DEFINE_string("data_dir", None, "TFDS data dir (default: $TFDS_DATA_DIR, else TFDS's own).")
flags.DEFINE_string("output_dir", None, "Directory for results.json, the ticket and plots.",
                    required=True)
flags.DEFINE_integer("seed", 0, "Seed for initialization, data order, splits and random tickets.")
flags.DEFINE_float("target_sparsity", 0.9, "Fraction of prunable weights removed, in [0, 1).")
flags.DEFINE_integer("verbose", 2, "Keras verbosity: 0 silent, 1 progress bar, 2 a line per epoch.")
flags.DEFINE_enum("distribution", "default", list(distribute.STRATEGIES),
                  "default: one device; mirrored: this machine's GPUs (else --cpu_devices "
                  "logical CPUs); multi_worker: MultiWorkerMirroredStrategy from TF_CONFIG.")
flags.DEFINE_integer("cpu_devices", 2, "--distribution=mirrored without GPUs: logical CPU "
                     "devices (replicas) to split the CPU into.")
# Training protocol
flags.DEFINE_integer("batch_size", 60, "Global batch size (LTH paper: 60); split evenly over "
                     "the replicas of --distribution.")
flags.DEFINE_float("learning_rate", 6e-4, "Learning rate. Default chosen on MNIST validation accuracy "
                   "of dense LeNet-300-100 (6e-4: 98.22%, 1.2e-3 (LTH paper): 98.04%).")
flags.DEFINE_enum("optimizer", "adam", list(tf_unilth.training.OPTIMIZERS), "Optimizer.")
flags.DEFINE_integer("epochs", None, "Epoch budget: whole run (unilth/unidlth), per round "
                     "(lth), all (dense/random). Default: the method's default.")
flags.DEFINE_integer("validation_size", 5000, "Training examples held out for validation.")
flags.DEFINE_boolean("standardize", False, "Per-channel standardization of the images.")
flags.DEFINE_integer("train_limit", None, "Use only the first N training examples (try-outs).")
flags.DEFINE_integer("test_limit", None, "Use only the first N test examples (try-outs).")
# Method hyperparameters (ALGORITHMS.md); unset flags keep the method's default.
flags.DEFINE_integer("rounds", None, "Pruning rounds (unilth/unidlth: R; lth: fixed count).")
flags.DEFINE_float("prune_rate", None, "LTH: fraction of surviving weights removed per round.")
flags.DEFINE_integer("rewind_step", None, "LTH: rewind to iteration k (0 = original LTH).")
flags.DEFINE_enum("selection", None, list(tf_unilth.masks.SELECTIONS),
                  "Which weights a pruning step removes.")
flags.DEFINE_list("block_size", None, "Remove whole blocks, e.g. 4,1 (Keras kernel layout "
                  "[in, out]: 4 consecutive inputs, the pattern TFLite's sparse kernels run "
                  "fast); magnitude selections rank blocks by L2 norm, random ones draw blocks.")
flags.DEFINE_float("output_rate_scale", None, "The output layer is pruned at this times the "
                   "others' rate (default 0.5, LTH's convention; 1.0 prunes all layers alike).")
flags.DEFINE_enum("allocation", None, ["uniform", "erk"], "Random tickets: per-layer "
                  "densities uniform (output layer per --output_rate_scale) or "
                  "Erdos-Renyi-Kernel.")
flags.DEFINE_integer("patience", None, "Plateau trigger patience P (epochs).")
flags.DEFINE_float("min_delta", None, "Plateau trigger min_delta.")
flags.DEFINE_integer("rewind_epochs", None, "UniLTH: rewind r epochs (default P).")
flags.DEFINE_integer("round_epochs", None, "UniLTH: epochs per pruning round.")
flags.DEFINE_integer("growth_steps", None, "UniLTH: steps G for lambda to reach lambda_max.")
flags.DEFINE_float("lambda_max", None, "Largest regularization coefficient.")
flags.DEFINE_float("gamma", None, "UniLTH: lambda growth exponent (t/G)^gamma.")
flags.DEFINE_float("lambda_delta", None, "DLTH: lambda increment.")
flags.DEFINE_integer("lambda_every", None, "DLTH: steps between increments.")
flags.DEFINE_integer("hold_epochs", None, "DLTH: epochs lambda is held at its maximum.")
flags.DEFINE_integer("finetune_epochs", None, "DLTH: fine-tuning epochs after removal.")
flags.DEFINE_integer("finetune_patience", None, "UniLTH: patience of the fine-tuning trigger.")

_METHOD_FLAGS = {
    "dense": [],
    "random": ["block_size", "output_rate_scale", "allocation"],
    "lth": ["rounds", "prune_rate", "rewind_step", "selection", "block_size",
            "output_rate_scale"],
    "dlth": ["lambda_delta", "lambda_every", "lambda_max", "hold_epochs", "finetune_epochs",
             "block_size", "output_rate_scale", "allocation"],
    "unilth": ["rounds", "selection", "patience", "min_delta", "rewind_epochs", "round_epochs",
               "growth_steps", "lambda_max", "gamma", "finetune_patience", "block_size",
               "output_rate_scale"],
}
_METHOD_FLAGS["unidlth"] = [f for f in _METHOD_FLAGS["unilth"] if f != "selection"] + [
    "allocation"]
_SEEDED = {"random", "dlth", "unilth", "unidlth"}


def method_args():
    args = {}
    for name in _METHOD_FLAGS[FLAGS.method]:
        value = FLAGS[name].value
        if value is not None:
            args[name] = value
    if "block_size" in args:
        try:
            args["block_size"] = tuple(int(b) for b in args["block_size"])
            assert len(args["block_size"]) == 2 and min(args["block_size"]) >= 1
        except (ValueError, AssertionError):
            raise app.UsageError(f"--block_size must be two positive ints like 4,1; got "
                                 f"{','.join(FLAGS.block_size)}.") from None
    if FLAGS.method in _SEEDED:
        args["seed"] = FLAGS.seed
    unused = [name for names in _METHOD_FLAGS.values() for name in names
              if name not in _METHOD_FLAGS[FLAGS.method] and FLAGS[name].present]
    if unused:
        raise app.UsageError(f"--{', --'.join(sorted(set(unused)))} not used by "
                             f"--method={FLAGS.method}.")
    return args


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep the output to progress and round lines
    flag_values = {name: FLAGS[name].value for name in sorted(_all_flag_names())}
    multi_worker = FLAGS.distribution == "multi_worker"
    if multi_worker:
        try:
            distribute.tf_config()
        except ValueError as e:
            raise app.UsageError(str(e)) from None
    args = method_args()
    # First TensorFlow work: logical devices and collective ops are set up here.
    strategy = distribute.make_strategy(FLAGS.distribution, cpu_devices=FLAGS.cpu_devices)
    try:
        per_replica = distribute.check_batch_size(FLAGS.batch_size, strategy)
    except ValueError as e:
        raise app.UsageError(f"--batch_size: {e}") from None
    # Flags are checked (and recorded) only once they are known to be usable.
    # Only the chief records them; under multi-worker every worker reads them.
    run_dir = results.RunDir(FLAGS.output_dir, write_flags=distribute.is_chief(strategy))
    if run_dir.check_flags(flag_values) == "finished":
        print(f"{FLAGS.output_dir} already holds the finished run with these flags "
              f"(results.json); nothing to do.")
        return 0
    splits = tf_unilth.data.load(
        FLAGS.dataset, data_dir=FLAGS.data_dir, batch_size=FLAGS.batch_size,
        validation_size=FLAGS.validation_size, seed=FLAGS.seed, standardize=FLAGS.standardize,
        train_limit=FLAGS.train_limit, test_limit=FLAGS.test_limit)
    with strategy.scope():  # weights, wrappers, masks, optimizer: all in the scope
        model = tf_unilth.models.build(FLAGS.model, splits.info.input_shape,
                                       splits.info.num_classes, seed=FLAGS.seed)
    print(f"{FLAGS.method} on {FLAGS.dataset}/{FLAGS.model}: "
          f"{tf_unilth.models.count_params(model):,} parameters, target sparsity "
          f"{FLAGS.target_sparsity}, {splits.info.num_train} train / "
          f"{splits.info.num_validation} validation / {splits.info.num_test} test examples.")
    where = (f"worker {distribute.task_id(strategy)}"
             f"{' (chief)' if distribute.is_chief(strategy) else ''}, " if multi_worker else "")
    print(f"Distribution: {FLAGS.distribution}, {where}{strategy.num_replicas_in_sync} "
          f"replica(s) in sync, global batch {FLAGS.batch_size} = {per_replica} per replica.")
    result = tf_unilth.find_ticket(
        model, FLAGS.method, splits.train, splits.validation,
        target_sparsity=FLAGS.target_sparsity, test_data=splits.test, epochs=FLAGS.epochs,
        optimizer=FLAGS.optimizer, learning_rate=FLAGS.learning_rate,
        verbose=FLAGS.verbose, log_dir=os.path.join(FLAGS.output_dir, "logs"),
        state_dir=run_dir.path("state"), strategy=strategy, **args)
    digests = tf_unilth.training.replica_masks_digests(result.pruned_model) \
        if result.pruned_model is not None else []
    if digests:
        print(f"masks digest ({where}replicas {', '.join(map(str, range(len(digests))))}): "
              f"{' '.join(digests)}")
    distribution = {"strategy": FLAGS.distribution, "replicas": strategy.num_replicas_in_sync,
                    "per_replica_batch": per_replica, "masks_digest": digests[0] if digests
                    else None}
    # Every worker saves (saving may need all of them); a non-chief into its
    # temporary directory, removed right after (TensorFlow's convention).
    writer = results.RunDir(distribute.worker_dirpath(FLAGS.output_dir, strategy))
    summary = writer.write_results(
        method=FLAGS.method, dataset=FLAGS.dataset, model_name=FLAGS.model, seed=FLAGS.seed,
        target_sparsity=FLAGS.target_sparsity, result=result, flag_values=flag_values,
        distribution=distribution)
    distribute.remove_worker_dirpath(FLAGS.output_dir, strategy)
    print(json.dumps(summary["final"], indent=1))
    if distribute.is_chief(strategy):
        print(f"Wrote {run_dir.path('results.json')}, {run_dir.path('ticket.keras')} and "
              f"{run_dir.path('curve.png')}.")
    return 0


def _all_flag_names():
    own = FLAGS.get_key_flags_for_module(sys.argv[0]) or FLAGS.get_key_flags_for_module(
        __name__)
    return [f.name for f in own]


if __name__ == "__main__":
    app.run(main)
