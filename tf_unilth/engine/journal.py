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
import socket
import tempfile
import time
import zipfile

import numpy as np

from tf_unilth._compat import keras, tf
from tf_unilth import masks as masks_lib
from tf_unilth import wrapper as wrapper_lib

PROGRESS_FILE = "progress.json"
WORKER_TEMP_PREFIX = "workertemp_"  # TensorFlow's name for a non-chief worker's files


LOCK_FILE = "LOCK"


class ReplayMismatch(RuntimeError):
    """A resumed method did not redo its Python work identically."""


class CorruptState(RuntimeError):
    """No readable snapshot is left in a state directory."""


class RunLocked(RuntimeError):
    """Another live process writes this directory."""


class _Unreadable(Exception):
    """A snapshot whose files cannot be read back."""


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lock:
    """One writer per directory: `<directory>/LOCK` holds the writer's pid and
    host. A lock left by a process that is gone (same host, pid not alive) is
    taken over, and `taken_over` says whose it was."""

    def __init__(self, directory):
        self.path = os.path.join(directory, LOCK_FILE)
        self.taken_over = None
        self._held = False

    def acquire(self):
        mine = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder and holder.get("host") == mine["host"] and \
                        not _pid_alive(int(holder.get("pid", -1))):
                    self.taken_over = holder  # its process is gone
                    os.remove(self.path)
                    continue
                when = time.strftime("%Y-%m-%d %H:%M:%S",
                                     time.localtime((holder or {}).get("since", 0)))
                raise RunLocked(
                    f"{os.path.dirname(self.path)} is being written by process "
                    f"{(holder or {}).get('pid', '?')} on {(holder or {}).get('host', '?')} "
                    f"(since {when}): one run per directory. Wait for it or stop it, or use "
                    f"another output directory. (If that process is gone, delete {self.path}.)"
                ) from None
            with os.fdopen(fd, "w") as f:
                json.dump(mine, f)
            self._held = True
            return self
        raise RunLocked(f"Could not take the lock {self.path}.")

    def _holder(self):
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def release(self):
        if self._held:
            self._held = False
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass


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
        self.notes = []  # what a resume had to work around, for the search to say
        if self.worker is None:
            self.directory = self.root
            os.makedirs(self.directory, exist_ok=True)
        else:
            self.directory = os.path.join(self.root, f"{WORKER_TEMP_PREFIX}{self.worker}")
            _copy_chief_state(self.root, self.directory)
        self.lock = Lock(self.directory).acquire()
        if self.lock.taken_over:
            self.notes.append(f"The lock of {self.directory} was left by process "
                              f"{self.lock.taken_over.get('pid')}, which is gone; taken over.")
        try:
            self.progress = self._read_progress()
        except BaseException:
            self.lock.release()
            raise
        self.progress.setdefault("starts", {})
        self.resumed = bool(self.progress["fits"] or self.progress["rounds"])

    def _read_progress(self):
        """progress.json, or the copy of its previous version when it cannot be
        read; an empty state when neither exists and no snapshot was taken."""
        path = os.path.join(self.directory, PROGRESS_FILE)
        for candidate in (path, path + ".prev"):
            if not os.path.exists(candidate):
                continue
            try:
                with open(candidate) as f:
                    progress = json.load(f)
                if not isinstance(progress, dict) or "fits" not in progress:
                    raise ValueError("not a progress record")
            except (OSError, ValueError) as e:
                self.notes.append(f"{candidate} cannot be read ({type(e).__name__}: {e}); "
                                  "trying the copy of its previous version.")
                continue
            if candidate != path:
                self.notes.append(f"Resuming from {candidate} (the previous version of "
                                  f"{PROGRESS_FILE}): at most one epoch is trained again.")
            return progress
        checkpoints = os.path.join(self.directory, "checkpoints")
        if os.path.isdir(checkpoints) and os.listdir(checkpoints):
            raise CorruptState(
                f"{self.directory} holds snapshots but no readable {PROGRESS_FILE} (deleted or "
                "damaged), so it cannot say where the search was. Start again with --restart "
                "(or delete the directory), or put the file back.")
        return {"fits": {}, "rounds": [], "starts": {}}

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

    def previous(self, index):
        """The snapshot before fit `index`'s latest one (one epoch earlier), or None."""
        entry = self.progress["fits"].get(str(index))
        return entry.get("previous") if entry else None

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
        # The snapshot before stays too: if this one cannot be read back, a
        # resume falls back to it (one epoch earlier).
        previous = old["snapshot"] if old else None
        if previous is not None and previous["checkpoint"] == snapshot["checkpoint"]:
            previous = old.get("previous")
        self.progress["fits"][str(index)] = {"done": done, "snapshot": snapshot,
                                             "previous": previous}
        self.progress["rounds"] = list(search_state["rounds"])
        self._write()
        keep = {snapshot["checkpoint"], previous and previous["checkpoint"]}
        for stale in (old or {}).get("previous"), (old or {}).get("snapshot"):
            if stale is not None and stale["checkpoint"] not in keep:
                self._remove(stale)

    def save_rounds(self, rounds):
        self.progress["rounds"] = list(rounds)
        self._write()

    def truncate_rounds(self, count):
        del self.progress["rounds"][count:]

    def restore(self, snapshot, model, callbacks):
        """Puts the model, its optimizer and the callbacks back to `snapshot`;
        `_Unreadable` when its files cannot be read back. Every file is read
        in full before anything is assigned, so an unreadable snapshot leaves
        the model as it was."""
        wrapper_lib.link_optimizer(model)  # slots must exist to be restored into
        path = os.path.join(self.directory, snapshot["checkpoint"])
        arrays = {}
        reading = f"{path}.index and .data-*"  # the files read, for the message
        try:
            reader = tf.train.load_checkpoint(path)
            for name in reader.get_variable_to_shape_map():
                reader.get_tensor(name)  # a truncated .data fails here, not half-assigned
            if snapshot.get("arrays"):
                reading = os.path.join(self.directory, snapshot["arrays"])
                with np.load(reading) as f:
                    arrays = dict(f)
            reading = f"{path}.index and .data-*"
            _checkpoint(model).read(path).assert_existing_objects_matched()
        except (tf.errors.OpError, ValueError, IndexError, OSError, EOFError, KeyError,
                AssertionError, zipfile.BadZipFile) as e:
            raise _Unreadable(f"{reading} ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:200]})") from e
        states = snapshot["callbacks"]
        for key, cb in keyed_callbacks(callbacks).items():
            if key in states:
                set_callback_state(cb, _from_json(states[key], arrays))

    def restore_readable(self, index, snapshot, model, callbacks, say):
        """`restore(snapshot)`, or, if its files cannot be read, the snapshot
        before it (said with `say`); returns the snapshot restored, or None
        when the unreadable one was the fit's first (the fit starts over).
        Raises CorruptState when neither of the fit's two kept snapshots can
        be read."""
        try:
            self.restore(snapshot, model, callbacks)
            return snapshot
        except _Unreadable as first:
            previous = self.previous(index)
            if previous is None:
                # The fit's first snapshot: the model is still as the fit
                # started (nothing was assigned), so the fit starts over.
                say(f"The snapshot {first} cannot be read; it was the first of fit "
                    f"{index + 1}, which is trained again from its start.")
                del self.progress["fits"][str(index)]
                return None
            say(f"The snapshot {first} cannot be read; falling back to the one before it "
                f"(fit {index + 1}, after epoch {previous['epoch'] + 1}): that epoch is trained "
                "again.")
            try:
                self.restore(previous, model, callbacks)
            except _Unreadable as second:
                raise CorruptState(
                    f"No snapshot of fit {index + 1} can be read ({first}; {second}). Start "
                    "again with --restart (or delete the state directory).") from None
            entry = self.progress["fits"][str(index)]
            entry.update({"done": False, "snapshot": previous, "previous": None})
            return previous

    def _write(self):
        path = os.path.join(self.directory, PROGRESS_FILE)
        tmp = f"{path}.{os.getpid()}.tmp"  # no two writers share a temporary name
        with open(tmp, "w") as f:
            json.dump(self.progress, f)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(path):
            shutil.copyfile(path, path + ".prev")  # the version before, for a bad write
        os.replace(tmp, path)

    def _remove(self, snapshot):
        prefix = os.path.join(self.directory, snapshot["checkpoint"])
        folder = os.path.dirname(prefix)
        for name in os.listdir(folder):
            if name.startswith(os.path.basename(prefix) + "."):
                os.remove(os.path.join(folder, name))

    def cleanup(self):
        """Releases the lock; removes a temporary state, or a non-chief worker's
        copy (the chief's stays, to resume or to be removed by its owner)."""
        self.lock.release()
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
        if name.startswith(WORKER_TEMP_PREFIX) or name.endswith(".tmp") or name == LOCK_FILE:
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
        self.diverged = None  # why the last epoch diverged, if it did

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
        self.diverged = self.search.divergence(self.model, logs)
        if self.diverged:
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
