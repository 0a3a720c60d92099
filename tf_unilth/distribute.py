"""Distribution strategies for a ticket search: which one, and who writes what.

`make_strategy(name)` builds the strategy of examples/find_ticket.py's
`--distribution` flag:

  default       TensorFlow's default strategy (one device);
  mirrored      `MirroredStrategy` over this machine's GPUs, or, without GPUs,
                over `cpu_devices` logical devices carved out of the CPU;
  multi_worker  `MultiWorkerMirroredStrategy` from the `TF_CONFIG` environment
                variable: one process per worker, each running the same command.

Batch sizes are global: a dataset batched with B gives each of the R replicas
B / R examples per step (Keras splits every batch; the loss is averaged over
the global batch), so a step is the step of one device with batch B.
`check_batch_size` requires R to divide B, which keeps that exact.

Files under multi-worker follow TensorFlow's convention: every worker runs the
same code, saving included (saving may read variables through collective ops,
which need every worker), but only the chief's files are the real ones. A
non-chief worker writes to `worker_dirpath(dir)` = `<dir>/workertemp_<task id>`
and removes it when done (`remove_worker_dirpath`). Files that every worker
must read back (resumable state, rewind checkpoints) need a directory all
workers share, as for Keras' `BackupAndRestore`; `check_same` turns a worker
that sees something else into a clear error instead of a silent divergence.
"""

import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys

from tf_unilth._compat import (check_model, in_multi_worker_mode, keras,
                               mirrored_strategy_with_key_offset, tf, tf_initialized)

STRATEGIES = ("default", "mirrored", "multi_worker")
TEMP_PREFIX = "workertemp_"
_KEY_BASES = itertools.count(1)


def make_strategy(name, cpu_devices=2):
    """The strategy called `name` (one of STRATEGIES).

    Call it first thing in a program: logical CPU devices (mirrored without a
    GPU) and the collective ops of multi_worker can only be set up before
    TensorFlow runs its first operation.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_physical_devices("GPU")
        return _mirrored(None if gpus else _cpu_devices(cpu_devices))
    if name == "multi_worker":
        tf_config()  # a clear error before TensorFlow's own
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        try:
            return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
        except RuntimeError as e:
            raise RuntimeError(
                f"MultiWorkerMirroredStrategy could not be set up ({e}). Create it before "
                "any TensorFlow operation runs (make_strategy first thing in main).") from e
    raise ValueError(f"Unknown distribution {name!r}; known: {list(STRATEGIES)}.")


def _mirrored(devices):
    """A MirroredStrategy whose collective ops cannot collide with another's:
    each strategy made here gets its own key range (see _compat)."""
    return mirrored_strategy_with_key_offset(devices, 100000 * next(_KEY_BASES))


def _cpu_devices(count):
    """Names of `count` logical CPU devices, splitting the CPU if needed."""
    if count < 1:
        raise ValueError(f"cpu_devices must be >= 1, got {count}.")
    logical = tf.config.list_logical_devices("CPU") if _initialized() else None
    if logical is None:
        cpu = tf.config.list_physical_devices("CPU")[0]
        if tf.config.get_logical_device_configuration(cpu) is None:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * count)
        logical = tf.config.list_logical_devices("CPU")
    if len(logical) < count:
        raise RuntimeError(
            f"mirrored needs {count} CPU devices but TensorFlow already runs with "
            f"{len(logical)}; call make_strategy before any TensorFlow operation (logical "
            "devices can only be configured before TensorFlow initializes), or lower "
            "cpu_devices (--cpu_devices).")
    return [d.name for d in logical[:count]]


def _initialized():
    return tf_initialized()


def tf_config():
    """The parsed TF_CONFIG of this worker; raises a clear error when unusable."""
    raw = os.environ.get("TF_CONFIG")
    how = ('Set it per worker, e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:port", '
           '"host2:port"]}, "task": {"type": "worker", "index": 0}}\' (index 1 on the '
           "second worker), or start local workers with examples/launch_local_workers.py.")
    if not raw:
        raise ValueError(f"--distribution=multi_worker needs the TF_CONFIG environment "
                         f"variable, which is not set. {how}")
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        task = config["task"]
        task_type, index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"TF_CONFIG is not a valid cluster description ({e!r}): {raw!r}. "
                         f"{how}") from None
    if task_type not in config["cluster"] or index >= len(config["cluster"][task_type]):
        raise ValueError(f"TF_CONFIG's task {task} is not in its cluster "
                         f"{config['cluster']}. {how}")
    if not workers:
        raise ValueError(f"TF_CONFIG's cluster has no worker: {raw!r}. {how}")
    return config


# ---------------------------------------------------------------------------
# Who is who

def is_multi_worker(strategy=None):
    strategy = strategy or tf.distribute.get_strategy()
    return in_multi_worker_mode(strategy)


def task_id(strategy=None):
    """This worker's task index (0 outside multi-worker)."""
    strategy = strategy or tf.distribute.get_strategy()
    if not is_multi_worker(strategy):
        return 0
    return int(strategy.cluster_resolver.task_id)


def is_chief(strategy=None):
    """True on the worker whose files are the real ones (always, outside multi-worker)."""
    strategy = strategy or tf.distribute.get_strategy()
    return not is_multi_worker(strategy) or bool(strategy.extended.should_checkpoint)


def worker_dirpath(dirpath, strategy=None):
    """`dirpath` on the chief, `<dirpath>/workertemp_<task id>` on other workers."""
    if is_chief(strategy):
        return dirpath
    return os.path.join(dirpath, f"{TEMP_PREFIX}{task_id(strategy)}")


def remove_worker_dirpath(dirpath, strategy=None):
    """Removes a non-chief worker's temporary directory (nothing on the chief)."""
    if not is_chief(strategy):
        shutil.rmtree(worker_dirpath(dirpath, strategy), ignore_errors=True)


def is_worker_temp(name):
    return os.path.basename(name).startswith(TEMP_PREFIX)


# ---------------------------------------------------------------------------
# Checks

def check_batch_size(batch_size, strategy=None):
    """Raises unless the global `batch_size` splits evenly over the replicas."""
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        lower = batch_size - batch_size % replicas
        raise ValueError(
            f"The batch size {batch_size} is the global batch and must be divisible by the "
            f"{replicas} replicas in sync (each replica gets batch_size / {replicas} "
            f"examples); use {lower or replicas} or {lower + replicas}.")
    return batch_size // replicas


def created_in_scope(model, strategy):
    """True when every variable of `model` belongs to `strategy`."""
    return all(strategy.extended.variable_created_in_scope(v) for v in model.variables)


def into_scope(model, strategy):
    """`model` itself if built in `strategy`'s scope, else a copy built there.

    The copy (`clone_model` + the same weights) is what training under the
    strategy needs: variables created outside its scope are not mirrored.
    """
    check_model(model)
    if created_in_scope(model, strategy):
        return model
    with strategy.scope():
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
    return copy


def fingerprint(value):
    """A 56-bit integer digest (SHA-256) of a JSON-able value or of bytes."""
    data = value if isinstance(value, bytes) else json.dumps(value, sort_keys=True).encode()
    return int.from_bytes(hashlib.sha256(data).digest()[:7], "big")


def check_same(strategy, value, what):
    """Raises on every worker unless all workers hold the same `value`.

    A collective op (so also a barrier): every worker must call it at the same
    point. Nothing happens outside multi-worker.
    """
    if not is_multi_worker(strategy):
        return
    mine = fingerprint(value)
    with strategy.scope():
        gathered = strategy.gather(strategy.run(
            lambda: tf.constant([mine], tf.int64)), axis=0).numpy().tolist()
    if len(set(gathered)) > 1:
        raise RuntimeError(
            f"The workers disagree on {what} (digests by replica: {gathered}; this is "
            f"worker {task_id(strategy)}). Every worker must see the same files: put the "
            "output/state directory on a filesystem all workers share, and start every "
            "worker with the same flags.")


# The watchdog of PeerTimeout, run as its own process: the waiting worker sits
# in TensorFlow's C++ holding the GIL, so no thread (or Python signal handler)
# of its own would run. It polls that the worker is still its parent.
_WATCHDOG = """
import os, sys, time
parent, deadline, message = int(sys.argv[1]), time.time() + float(sys.argv[2]), sys.argv[3]
while time.time() < deadline:
    if os.getppid() != parent:
        sys.exit(0)
    time.sleep(0.25)
sys.stderr.write(message)
sys.stderr.flush()
os.kill(parent, 9)
"""


class PeerTimeout:
    """Stops the process with a clear error if the block does not finish within
    `seconds`: a MultiWorkerMirroredStrategy worker waits forever for a peer
    that never comes (and does not even stop on SIGTERM then), so the cluster's
    forming is watched by a watchdog process that kills it (SIGKILL) and says
    why on stderr."""

    def __init__(self, seconds, what="the other workers"):
        self.seconds, self.what = seconds, what
        self._watchdog = None

    def __enter__(self):
        if self.seconds and self.seconds > 0:
            message = (f"error: {self.what} did not answer within {self.seconds:.0f} s (is "
                       "every worker of TF_CONFIG's cluster started, with the same flags?); "
                       "stopping this worker. Raise --peer_timeout if they start slowly.\n")
            self._watchdog = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(self.seconds), message],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc):
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None


def barrier(strategy):
    """Waits until every worker gets here (nothing outside multi-worker)."""
    check_same(strategy, 0, "a barrier")
