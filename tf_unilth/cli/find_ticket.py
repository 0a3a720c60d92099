"""Find a lottery ticket on a TFDS dataset with one of tf_unilth's methods.

    tf-unilth find-ticket --method=unilth --target_sparsity=0.9 \
        --dataset=mnist --model=lenet300_100 --output_dir=runs/unilth

Writes to --output_dir: results.json (per-round records, final numbers, every
flag), ticket.keras (the trained ticket, wrappers stripped), curve.png (test
accuracy against sparsity per round) and TensorBoard logs under logs/.

Every method hyperparameter is a flag (`--helpfull` lists each method's
default); `--plugin=my_method.py` imports a file (or module) first, so the
methods it registers are available and get their flags too.

The search snapshots itself in --output_dir/state after every epoch: a run
killed at any point (kill -9 included) continues from its last snapshot when
the same command is started again; a finished run says so and exits.

Distributed training (--distribution): `mirrored` trains on this machine's
GPUs, or on --cpu_devices logical CPU devices; `multi_worker` is one process
per worker configured by TF_CONFIG (`tf-unilth launch-workers` starts them on
this machine). --batch_size is the global batch, split evenly over the
replicas. Under multi-worker only the chief writes results.json, the ticket and
the plot; --output_dir must be a directory every worker sees. Every worker
prints the digest of its masks at the end (equal digests: same ticket).
"""

import json
import os
import shutil
import sys

from absl import app, flags, logging

import tf_unilth
from tf_unilth import distribute, methods, results
from tf_unilth.cli import errors, method_flags
from tf_unilth.engine import journal as journal_lib
from tf_unilth.engine import trainer as trainer_lib
from tf_unilth.engine.execution import make_deterministic

FLAGS = flags.FLAGS
# The flags of a run (recorded in flags.json and results.json); method flags are added.
RUN_FLAGS = []


def _define(kind, name, default, help_text, choices=None, **kwargs):
    if kind == "enum":
        flags.DEFINE_enum(name, default, choices, help_text, **kwargs)
    else:
        getattr(flags, f"DEFINE_{kind}")(name, default, help_text, **kwargs)
    RUN_FLAGS.append(name)


def define_flags():
    """Defines the program's flags (after plugins registered their methods)."""
    if RUN_FLAGS:
        return
    _define("enum", "method", "dense", "Ticket method.", sorted(methods.names()))
    _define("string", "dataset", "mnist",
            f"TFDS dataset ({', '.join(tf_unilth.data.KNOWN_DATASETS)}).")
    _define("string", "model", "lenet300_100",
            f"Network ({', '.join(tf_unilth.models.names())}).")
    _define("string", "data_dir", None,
            "TFDS data dir (default: $TFDS_DATA_DIR, else TFDS's own).")
    _define("string", "output_dir", None,
            "Directory for results.json, the ticket and plots.", required=True)
    _define("integer", "seed", 0,
            "Seed for initialization, data order, splits and random tickets.")
    _define("float", "target_sparsity", 0.9,
            "Fraction of prunable weights removed, in [0, 1).")
    _define("integer", "verbose", 2,
            "Keras verbosity: 0 silent, 1 progress bar, 2 a line per epoch; 3: as 2, and an "
            "error shows its traceback.")
    _define("boolean", "restart", False, "Discard what an earlier run left in --output_dir "
            "(flags, results, state) and start over.")
    _define("boolean", "keep_state", False, "Keep --output_dir/state (the snapshots) after "
            "the run finishes; by default it is removed then.")
    _define("enum", "distribution", "default",
            "default: one device; mirrored: this machine's GPUs (else --cpu_devices "
            "logical CPUs); multi_worker: MultiWorkerMirroredStrategy from TF_CONFIG.",
            list(distribute.STRATEGIES))
    _define("integer", "cpu_devices", 2, "--distribution=mirrored without GPUs: logical "
            "CPU devices (replicas) to split the CPU into.")
    _define("integer", "peer_timeout", 300, "--distribution=multi_worker: seconds to wait "
            "for every worker of the cluster to join before stopping with an error.")
    _define("integer", "batch_size", 60, "Global batch size (LTH paper: 60); split evenly "
            "over the replicas of --distribution.")
    _define("float", "learning_rate", 6e-4, "Learning rate. Default chosen on MNIST "
            "validation accuracy of dense LeNet-300-100 (6e-4: 98.22%, 1.2e-3 (LTH paper): "
            "98.04%).")
    _define("enum", "optimizer", "adam", "Optimizer.",
            list(trainer_lib.OPTIMIZERS))
    _define("list", "exclude", [], "Layers to keep dense (names, comma-separated).")
    _define("string", "steps_per_execution", "auto", "Training steps per call of the train "
            "function: an int, or auto (the fast setting where it is exact; the run's first "
            "lines say which).")
    _define("enum", "jit_compile", "auto", "Compile the training step with XLA: true, false, "
            "or auto (on one device, for a dense model or on a GPU, and a search planned for "
            "3,000 steps or more; the run's first lines say which).", ["auto", "true", "false"])
    _define("boolean", "deterministic", False, "Seed Python, numpy and TensorFlow with --seed "
            "and use deterministic TensorFlow ops: the same command gives the same numbers "
            "in another process.")
    _define("boolean", "strict", False, "A degenerate run (an emptied layer, a round at "
            "chance accuracy, a forced plateau trigger) is an error, not a warning.")
    _define("integer", "validation_size", 5000, "Training examples held out for validation.")
    _define("boolean", "standardize", False, "Per-channel standardization of the images.")
    _define("integer", "train_limit", None,
            "Use only the first N training examples (try-outs).")
    _define("integer", "test_limit", None, "Use only the first N test examples (try-outs).")
    _define("list", "plugin", [], "Python files or modules to import first (they may "
            "register methods and criteria).")
    _define("enum", "keras", "2", "2: tf_keras and tfmot (the default); 3: Keras 3 with the "
            "backend of KERAS_BACKEND (jax, tensorflow, torch), docs/KERAS3.md.", ["2", "3"])
    method_flags.define()
    RUN_FLAGS.extend(sorted(method_flags.method_fields()))


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep the output to progress and round lines
    flag_values = {name: FLAGS[name].value for name in sorted(RUN_FLAGS)}
    multi_worker = FLAGS.distribution == "multi_worker"
    # Everything that can be checked without TensorFlow, before anything is written.
    try:
        if multi_worker:
            distribute.tf_config()
        execution = _execution_flags()
        args = method_flags.values(FLAGS.method)
        method = methods.get(FLAGS.method).create(**args)
        method.check(FLAGS.target_sparsity)
        if FLAGS.keras == "3":
            if FLAGS.distribution != "default":
                raise ValueError("--keras=3 runs on one device (--distribution=default); Keras "
                                 "3's DataParallel is tf_unilth.keras3's distribution=.")
            from tf_unilth.keras3 import finder as keras3_finder  # pylint: disable=import-outside-toplevel
            keras3_finder.check_method(method)
        if not FLAGS.learning_rate > 0:
            raise ValueError(f"--learning_rate must be > 0, got {FLAGS.learning_rate}.")
        if FLAGS.batch_size < 1 or FLAGS.validation_size < 0:
            raise ValueError("--batch_size must be >= 1 and --validation_size >= 0.")
    except methods.HyperparameterError:
        raise  # one line as it is, with its flags (errors.one_line)
    except (TypeError, ValueError) as e:
        raise errors.UsageError(str(e)) from None
    chief = not multi_worker or distribute.tf_config()["task"]["index"] == 0
    run_dir = results.RunDir(FLAGS.output_dir)
    lock = None
    if chief:
        run_dir.ensure_writable()
        lock = journal_lib.Lock(FLAGS.output_dir).acquire()  # one writer per run directory
    try:
        return _search(run_dir, flag_values, method, execution, multi_worker, chief)
    finally:
        if lock is not None:
            lock.release()


def _search(run_dir, flag_values, method, execution, multi_worker, chief):
    if chief and FLAGS.restart:
        run_dir.clear()
    status = run_dir.status(flag_values)
    if status == "finished":
        print(f"{FLAGS.output_dir} already holds the finished run with these flags "
              f"(results.json); nothing to do.")
        return 0
    if FLAGS.keras == "3":
        return _search_keras3(run_dir, flag_values, method, execution)
    # First TensorFlow work: logical devices and collective ops are set up here.
    with distribute.PeerTimeout(FLAGS.peer_timeout if multi_worker else 0):
        strategy = distribute.make_strategy(FLAGS.distribution, cpu_devices=FLAGS.cpu_devices)
        distribute.barrier(strategy)  # every worker is there
    if FLAGS.deterministic:
        make_deterministic(FLAGS.seed)
    try:
        per_replica = distribute.check_batch_size(FLAGS.batch_size, strategy)
    except ValueError as e:
        raise errors.UsageError(f"--batch_size: {e}") from None
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
             f"{' (chief)' if chief else ''}, " if multi_worker else "")
    print(f"Distribution: {FLAGS.distribution}, {where}{strategy.num_replicas_in_sync} "
          f"replica(s) in sync, global batch {FLAGS.batch_size} = {per_replica} per replica.")
    result = tf_unilth.find_ticket(
        model, method, splits.train, splits.validation,
        target_sparsity=FLAGS.target_sparsity, test_data=splits.test,
        optimizer=FLAGS.optimizer, learning_rate=FLAGS.learning_rate, exclude=FLAGS.exclude,
        verbose=min(FLAGS.verbose, 2), log_dir=os.path.join(FLAGS.output_dir, "logs"),
        state_dir=run_dir.path("state"), strategy=strategy, strict=FLAGS.strict,
        # The flags are recorded once the run is known to start.
        before_training=(lambda: run_dir.record_flags(flag_values)) if chief else None,
        **execution)
    digests = tf_unilth.masks.replica_digests(result.pruned_model) \
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
    if chief and not FLAGS.keep_state:  # finished: the snapshots have served
        shutil.rmtree(run_dir.path("state"), ignore_errors=True)
    print(json.dumps(summary["final"], indent=1))
    if chief:
        print(f"Wrote {run_dir.path('results.json')}, {run_dir.path('ticket.keras')} and "
              f"{run_dir.path('curve.png')}.")
    return 0


def _search_keras3(run_dir, flag_values, method, execution):
    """--keras=3: the same search on a Keras 3 model (tf_unilth.keras3), one device
    (checked with the other flags, in main)."""
    import keras  # pylint: disable=import-outside-toplevel
    from tf_unilth.keras3 import models as keras3_models  # pylint: disable=import-outside-toplevel
    keras.utils.set_random_seed(FLAGS.seed)
    splits = tf_unilth.data.load(
        FLAGS.dataset, data_dir=FLAGS.data_dir, batch_size=FLAGS.batch_size,
        validation_size=FLAGS.validation_size, seed=FLAGS.seed, standardize=FLAGS.standardize,
        train_limit=FLAGS.train_limit, test_limit=FLAGS.test_limit)
    try:
        model = keras3_models.build(FLAGS.model, splits.info.input_shape,
                                    splits.info.num_classes, seed=FLAGS.seed)
    except ValueError as e:
        raise errors.UsageError(str(e)) from None
    print(f"{FLAGS.method} on {FLAGS.dataset}/{FLAGS.model} with Keras {keras.__version__} "
          f"({keras.backend.backend()} backend): {model.count_params():,} parameters, target "
          f"sparsity {FLAGS.target_sparsity}. No snapshots on Keras 3: a killed run starts "
          "over (docs/KERAS3.md).")
    result = tf_unilth.find_ticket(
        model, method, splits, target_sparsity=FLAGS.target_sparsity,
        optimizer=FLAGS.optimizer, learning_rate=FLAGS.learning_rate, exclude=FLAGS.exclude,
        verbose=min(FLAGS.verbose, 2), log_dir=os.path.join(FLAGS.output_dir, "logs"),
        strict=FLAGS.strict, before_training=lambda: run_dir.record_flags(flag_values),
        **execution)
    summary = run_dir.write_results(
        method=FLAGS.method, dataset=FLAGS.dataset, model_name=FLAGS.model, seed=FLAGS.seed,
        target_sparsity=FLAGS.target_sparsity, result=result, flag_values=flag_values,
        distribution={"strategy": "default", "replicas": 1, "keras": keras.__version__,
                      "backend": keras.backend.backend()})
    print(json.dumps(summary["final"], indent=1))
    print(f"Wrote {run_dir.path('results.json')}, {run_dir.path('ticket.keras')} and "
          f"{run_dir.path('curve.png')}.")
    return 0


def _execution_flags():
    spe = FLAGS.steps_per_execution
    if spe != "auto":
        try:
            spe = int(spe)
        except ValueError:
            raise ValueError(f"--steps_per_execution must be auto or an int >= 1, got "
                             f"{spe!r}.") from None
    jit = {"auto": "auto", "true": True, "false": False}[FLAGS.jit_compile]
    return {"steps_per_execution": spe, "jit_compile": jit}


def run(argv=None):
    """The program: loads --plugin modules, defines the flags, runs `main`.
    An error the library raises on purpose is one line (tracebacks for bugs,
    or for everything with --verbose=3)."""
    argv = list(sys.argv if argv is None else argv)
    with errors.one_line(lambda: FLAGS["verbose"].value >= 3 if "verbose" in FLAGS else False):
        method_flags.load_plugins(argv)
        define_flags()
        app.run(main, argv=argv)
