"""The journal of a search: what makes a run killed at any point resumable.

A search is a sequence of `model.fit` calls (LTH: one per round; DLTH: two;
UniLTH: one). The journal numbers them and, after every epoch, writes a
`tf.train.Checkpoint` of the model and its optimizer (which tracks the
weights, masks, schedules, removal plans, penalties and lambda-growth
variables) plus a JSON snapshot of the Python state: the search's counters
and round records, each callback's state (`get_state()` / `set_state()`,
keyed by the callback's type and its ordinal among callbacks of that type),
and the fit's history. A snapshot is also taken when a fit ends, and at
every recorded round.

Started again on the same directory, the method's code runs from the top:
finished fits are not trained again (their end state is restored, their
history returned), the interrupted fit continues after its last saved epoch,
and rounds already recorded are returned as they were. Everything the method
does in Python between fits (selecting and removing weights, rewinding) is
then redone on exactly the restored state, and checked: at every fit start
the masks digest and the round count must equal what the first attempt had
there (`ReplayMismatch` otherwise). Writes are atomic (checkpoint first,
then `os.replace` of the JSON), so a kill at any instant leaves the previous
snapshot valid. An epoch whose loss is not finite is never saved.

Keras' `BackupAndRestore` covers one fit; a search is several fits with
Python work and callback state between them, which is why this exists.

Multi-worker (TensorFlow's convention, see `tf_unilth.distribute`): every
worker saves (checkpoint writes may need collective ops), but only the chief's
`directory` is the real state. A non-chief worker keeps its own copy in
`<directory>/workertemp_<id>`, which starts as a copy of the chief's state (so
on a restart every worker continues from the chief's snapshot) and is removed
when the search ends. The directory must be one every worker can read.
"""

import json
import math
import os
import shutil
import tempfile
import time

import numpy as np

from tf_unilth._compat import keras, tf
from tf_unilth import masks as masks_lib
from tf_unilth import wrapper as wrapper_lib

PROGRESS_FILE = "progress.json"
WORKER_TEMP_PREFIX = "workertemp_"  # TensorFlow's name for a non-chief worker's files


class ReplayMismatch(RuntimeError):
    """A resumed method did not redo its Python work identically."""


class Journal:
    """The resumable state of one ticket search, kept in `directory`.

    `worker`: None on the chief (or without multi-worker); a non-chief
    worker's task id, whose state lives in `<directory>/workertemp_<id>`,
    started from a copy of the chief's (the caller must keep the chief from
    writing until every worker is constructed: `distribute.check_same`).
    """

    def __init__(self, directory=None, worker=None):
        self.temporary = directory is None
        self.root = directory or tempfile.mkdtemp(prefix="tf_unilth_state_")
        self.worker = None if self.temporary else worker
        if self.worker is None:
            self.directory = self.root
            os.makedirs(self.directory, exist_ok=True)
        else:
            self.directory = os.path.join(self.root, f"{WORKER_TEMP_PREFIX}{self.worker}")
            _copy_chief_state(self.root, self.directory)
        path = os.path.join(self.directory, PROGRESS_FILE)
        self.progress = {"fits": {}, "rounds": [], "starts": {}}
        if os.path.exists(path):
            with open(path) as f:
                self.progress = json.load(f)
            self.progress.setdefault("starts", {})
        self.resumed = bool(self.progress["fits"] or self.progress["rounds"])

    def subdirectory(self, name):
        """A directory of this state (it survives a restart unless the state is
        temporary, and goes with a temporary state)."""
        path = os.path.join(self.directory, name)
        os.makedirs(path, exist_ok=True)
        return path

    # -- reading ------------------------------------------------------------
    def finished_fit(self, index):
        entry = self.progress["fits"].get(str(index))
        return entry["snapshot"] if entry and entry["done"] else None

    def partial_fit(self, index):
        entry = self.progress["fits"].get(str(index))
        return entry["snapshot"] if entry and not entry["done"] else None

    @property
    def rounds(self):
        return self.progress["rounds"]

    def last_good(self):
        """The most recent snapshot (of any fit), or None."""
        fits = self.progress["fits"]
        if not fits:
            return None
        return fits[str(max(int(i) for i in fits))]["snapshot"]

    # -- the replay check -----------------------------------------------------
    def check_replay(self, index, model, rounds_count):
        """At the start of fit `index`: records where the method stood (masks
        digest, rounds) the first time, and raises `ReplayMismatch` when a
        resumed attempt arrives there in another state."""
        state = {"masks_digest": masks_lib.masks_digest(model), "rounds": rounds_count}
        seen = self.progress["starts"].get(str(index))
        if seen is None:
            self.progress["starts"][str(index)] = state
            return
        if seen != state:
            raise ReplayMismatch(
                f"Resuming the search in {self.directory}: fit {index + 1} starts with masks "
                f"{state['masks_digest']} after {state['rounds']} round(s), but the "
                f"interrupted attempt started it with masks {seen['masks_digest']} after "
                f"{seen['rounds']} round(s). The method did not redo its work between fits "
                "identically (a changed hyperparameter, data or code); start again in a "
                "new directory.")

    # -- writing ------------------------------------------------------------
    def save(self, index, model, callbacks, search_state, history, epoch, done):
        """Snapshot after `epoch` of fit `index` (done=True: the fit ended)."""
        tag = f"fit{index}-end" if done else f"fit{index}-epoch{epoch}"
        prefix = os.path.join(self.directory, "checkpoints", tag)
        _checkpoint(model).write(prefix)
        arrays = {}
        states = {}
        for key, cb in keyed_callbacks(callbacks).items():
            state = callback_state(cb)
            if state is not None:
                states[key] = _to_json(state, arrays, key)
        snapshot = {
            "epoch": epoch, "checkpoint": os.path.relpath(prefix, self.directory),
            "session": search_state, "history": history,
            "stop_training": bool(model.stop_training), "callbacks": states,
        }
        if arrays:
            np.savez(prefix + ".arrays.npz", **arrays)
            snapshot["arrays"] = os.path.relpath(prefix + ".arrays.npz", self.directory)
        old = self.progress["fits"].get(str(index))
        self.progress["fits"][str(index)] = {"done": done, "snapshot": snapshot}
        self.progress["rounds"] = list(search_state["rounds"])
        self._write()
        if old and old["snapshot"]["checkpoint"] != snapshot["checkpoint"]:
            self._remove(old["snapshot"])

    def save_rounds(self, rounds):
        self.progress["rounds"] = list(rounds)
        self._write()

    def truncate_rounds(self, count):
        del self.progress["rounds"][count:]

    def restore(self, snapshot, model, callbacks):
        """Puts the model, its optimizer and the callbacks back to `snapshot`."""
        wrapper_lib.link_optimizer(model)  # slots must exist to be restored into
        _checkpoint(model).read(
            os.path.join(self.directory, snapshot["checkpoint"])).assert_existing_objects_matched()
        arrays = {}
        if snapshot.get("arrays"):
            with np.load(os.path.join(self.directory, snapshot["arrays"])) as f:
                arrays = dict(f)
        states = snapshot["callbacks"]
        for key, cb in keyed_callbacks(callbacks).items():
            if key in states:
                set_callback_state(cb, _from_json(states[key], arrays))

    def _write(self):
        path = os.path.join(self.directory, PROGRESS_FILE)
        with open(path + ".tmp", "w") as f:
            json.dump(self.progress, f)
        os.replace(path + ".tmp", path)

    def _remove(self, snapshot):
        prefix = os.path.join(self.directory, snapshot["checkpoint"])
        folder = os.path.dirname(prefix)
        for name in os.listdir(folder):
            if name.startswith(os.path.basename(prefix) + "."):
                os.remove(os.path.join(folder, name))

    def cleanup(self):
        """Removes a temporary state, or a non-chief worker's copy; keeps the chief's."""
        if self.temporary or self.worker is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def _copy_chief_state(chief, mine):
    """`mine` <- the chief's state files (without other workers' copies)."""
    shutil.rmtree(mine, ignore_errors=True)
    os.makedirs(mine)
    if not os.path.isdir(chief):
        return
    for name in os.listdir(chief):
        source = os.path.join(chief, name)
        if name.startswith(WORKER_TEMP_PREFIX) or name.endswith(".tmp"):
            continue
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(mine, name))
        else:
            shutil.copy2(source, os.path.join(mine, name))


def _checkpoint(model):
    return tf.train.Checkpoint(model=model, optimizer=model.optimizer)


class SaveProgress(keras.callbacks.Callback):
    """Snapshots the search after every epoch with a finite loss; restores an
    interrupted fit's snapshot at train begin. Must come after every callback
    with state (it restores their state after their own `on_train_begin` reset
    it, and saves after their `on_epoch_end` decisions)."""

    def __init__(self, journal, index, callbacks, search, resume_from=None):
        super().__init__()
        self.journal, self.index, self.callbacks = journal, index, list(callbacks)
        self.search, self.resume_from = search, resume_from
        self.history = {k: list(v) for k, v in resume_from["history"].items()} \
            if resume_from else {}
        self.last_epoch = None
        self._start = None

    def on_train_begin(self, logs=None):
        if self.resume_from is not None:
            self.journal.restore(self.resume_from, self.model, self.callbacks)

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def running_seconds(self):
        """Seconds of the epoch under way (0 between epochs)."""
        return 0.0 if self._start is None else time.perf_counter() - self._start

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.search.add_epoch(time.perf_counter() - self._start)
        self._start = None
        self.last_epoch = epoch
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        if not math.isfinite(float(logs.get("loss", 0.0))):
            # Never keep a diverged state; stop (the trainer restores the last
            # good snapshot). Checked once an epoch: no per-batch Python hook.
            self.model.stop_training = True
            return
        self.journal.save(self.index, self.model, self.callbacks, self.search.get_state(),
                          self.history, epoch, done=False)


# --------------------------------------------------------------------------
# Callback state: ours implement get_state/set_state; Keras' EarlyStopping is
# handled here. Values may hold numpy arrays (kept in an .npz beside the JSON).

_EARLY_STOPPING_FIELDS = ("wait", "stopped_epoch", "best", "best_epoch", "best_weights")


def keyed_callbacks(callbacks):
    """{"<type>#<ordinal among that type>": callback}: a callback's state goes
    back to the callback of the same kind and place, not to a list position."""
    seen, keyed = {}, {}
    for cb in callbacks:
        kind = type(cb).__name__
        n = seen.get(kind, 0)
        seen[kind] = n + 1
        keyed[f"{kind}#{n}"] = cb
    return keyed


def callback_state(cb):
    if hasattr(cb, "get_state"):
        return cb.get_state()
    if isinstance(cb, keras.callbacks.EarlyStopping):
        return {name: getattr(cb, name, None) for name in _EARLY_STOPPING_FIELDS}
    return None


def set_callback_state(cb, state):
    if hasattr(cb, "set_state"):
        cb.set_state(state)
    elif isinstance(cb, keras.callbacks.EarlyStopping):
        for name, value in state.items():
            setattr(cb, name, value)


def _to_json(value, arrays, key):
    if isinstance(value, np.ndarray):
        arrays[key] = value
        return {"__array__": key}
    if isinstance(value, dict):
        return {k: _to_json(v, arrays, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v, arrays, f"{key}.{i}") for i, v in enumerate(value)]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    return value


def _from_json(value, arrays):
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            return arrays[value["__array__"]]
        return {k: _from_json(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v, arrays) for v in value]
    return value


class History:
    """What `fit` returns for a fit restored from a snapshot."""

    def __init__(self, history):
        self.history = {k: list(v) for k, v in history.items()}
        n = max((len(v) for v in self.history.values()), default=0)
        self.epoch = list(range(n))
