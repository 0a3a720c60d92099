"""The callbacks of the Keras 3 path (same names and API as `tf_unilth.callbacks`).

- `UpdatePruningStep`: counts the steps in Python and runs the schedules'
  events just before the step they are planned for (at a step boundary
  Python sees: every batch, or every chunk with steps_per_execution > 1);
  builds the optimizer so removed weights' slots can be cleared.
- `PlateauTrigger`: Keras 3 `EarlyStopping`'s decision, firing listeners
  instead of stopping (re-armable).
- `Rewind`: snapshots of weights + optimizer state (iterations included) per
  epoch and at step k, as .npz files; restores keep the current masks.
- `RegularizerGrowth`: starts / restarts / stops the in-step lambda growth.
"""

import math
import os
import tempfile

import numpy as np

from tf_unilth.keras3 import core
from tf_unilth.keras3._compat import build_optimizer, keras, sync

current_step = core.current_step


class UpdatePruningStep(keras.callbacks.Callback):
    """Runs the pruning schedules' events (see module doc)."""

    def on_train_begin(self, logs=None):
        build_optimizer(self.model)
        self.step = core.current_step(self.model)
        self._epoch_start = self.step
        core.due_events(self.model, self.step)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = core.current_step(self.model)
        self.step = self._epoch_start
        core.due_events(self.model, self.step)

    def on_train_batch_end(self, batch, logs=None):
        self.step = self._epoch_start + int(batch) + 1
        upcoming = core.next_event(self.model)
        if upcoming is not None and upcoming <= self.step + 1:
            core.due_events(self.model, self.step)

    def on_epoch_end(self, epoch, logs=None):
        core.due_events(self.model, core.current_step(self.model))


class PlateauTrigger(keras.callbacks.EarlyStopping):
    """Fires listeners when the monitored metric plateaus (see tf_unilth.callbacks)."""

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, mode="auto",
                 baseline=None, start_from_epoch=0, listeners=(), stop_on_fire=False,
                 verbose=0):
        super().__init__(monitor=monitor, min_delta=min_delta, patience=patience, verbose=0,
                         mode=mode, baseline=baseline, restore_best_weights=False,
                         start_from_epoch=start_from_epoch)
        self.listeners = list(listeners)
        self.stop_on_fire = stop_on_fire
        self.trigger_verbose = verbose
        self.fired = False
        self.fired_epoch = None
        self.armed = True

    def add_listener(self, listener):
        self.listeners.append(listener)
        return listener

    def on_train_begin(self, logs=None):
        if self.armed:
            super().on_train_begin(logs)

    def rearm(self):
        super().on_train_begin()
        self.armed = True
        self.fired_epoch = None
        self.fired = False

    def get_monitor_value(self, logs):
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(
                f"PlateauTrigger monitors {self.monitor!r}, which is not in the epoch logs "
                f"(available: {sorted(logs)}). Pass validation_data to model.fit (val_* "
                "metrics need it) or choose another monitor.")
        return logs[self.monitor]

    def on_epoch_end(self, epoch, logs=None):
        if not self.armed:
            return
        was_stopping = self.model.stop_training
        super().on_epoch_end(epoch, logs)
        if self.model.stop_training and not was_stopping:
            self.model.stop_training = False
            self.fire(epoch, logs)

    _STATE = ("wait", "best", "best_epoch", "stopped_epoch", "armed", "fired_epoch")

    def get_state(self):
        state = {name: getattr(self, name, None) for name in self._STATE}
        state["best"] = None if state["best"] is None else float(state["best"])
        return state

    def set_state(self, state):
        for name in self._STATE:
            setattr(self, name, state[name])
        self.fired = self.fired_epoch is not None

    def fire(self, epoch, logs=None):
        self.armed = False
        self.fired_epoch = epoch
        self.fired = True
        if self.trigger_verbose:
            print(f"PlateauTrigger: {self.monitor} plateaued at epoch {epoch + 1}.")
        for listener in self.listeners:
            listener(self, epoch, logs)
        if self.stop_on_fire:
            self.model.stop_training = True


def _rewindable(model):
    skip = {id(v) for v in core.pruning_state_variables(model)}
    return [v for v in model.variables if id(v) not in skip]


class Rewind(keras.callbacks.Callback):
    """Snapshots weights and optimizer state; restores them keeping the masks.

    Saved at every epoch's end (the last `keep_epochs` kept) and once after
    `save_step` training steps (k = 0: at train begin; with steps_per_execution
    > 1 at the first chunk boundary at or after k, `taken_step` says which).
    """

    def __init__(self, directory=None, keep_epochs=2, save_step=None, restore_optimizer=True):
        super().__init__()
        if keep_epochs < 1:
            raise ValueError(f"keep_epochs must be >= 1, got {keep_epochs}.")
        if save_step is not None and save_step < 0:
            raise ValueError(f"save_step (k) must be >= 0, got {save_step}.")
        self.directory = directory
        self.keep_epochs = keep_epochs
        self.save_step = save_step
        self.restore_optimizer = restore_optimizer
        self.saved_epochs = []
        self.last_restored = None
        self.taken_step = None
        self._epoch_start = 0

    def _dir(self):
        if self.directory is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="tf_unilth_rewind_")
            self.directory = self._temporary.name
        os.makedirs(self.directory, exist_ok=True)
        return self.directory

    def _path(self, name):
        return os.path.join(self._dir(), f"{name}.npz")

    def _save(self, name):
        sync(self.model)
        build_optimizer(self.model)
        arrays = {f"w{i}": np.asarray(v.numpy()) for i, v in enumerate(_rewindable(self.model))}
        optimizer = self.model.optimizer
        arrays.update({f"o{i}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)})
        path = self._path(name)
        np.savez(path + ".tmp.npz", **arrays)
        os.replace(path + ".tmp.npz", path)
        return path

    def _restore_path(self, path):
        sync(self.model)
        build_optimizer(self.model)
        with np.load(path) as saved:
            for i, v in enumerate(_rewindable(self.model)):
                v.assign(saved[f"w{i}"])
            for i, v in enumerate(self.model.optimizer.variables):
                v.assign(saved[f"o{i}"] if self.restore_optimizer else np.zeros(v.shape,
                                                                                v.dtype))
        core.apply_masks(self.model)

    # -- lifecycle ----------------------------------------------------------
    def on_train_begin(self, logs=None):
        if self.save_step == 0 and self.taken_step is None:
            self._save("step")
            self.taken_step = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = core.current_step(self.model)

    def on_train_batch_end(self, batch, logs=None):
        if self.save_step and self.taken_step is None:
            step = self._epoch_start + int(batch) + 1
            if step >= self.save_step:
                self._save("step")
                self.taken_step = step

    def on_epoch_end(self, epoch, logs=None):
        if not math.isfinite(float((logs or {}).get("loss", 0.0))):
            return
        self._save(f"epoch-{epoch}")
        self.saved_epochs = [e for e in self.saved_epochs if e != epoch] + [epoch]
        for old in self.saved_epochs[:-self.keep_epochs - 1]:
            try:
                os.remove(self._path(f"epoch-{old}"))
            except OSError:
                pass
        self.saved_epochs = self.saved_epochs[-self.keep_epochs:]

    def get_state(self):
        return {"saved_epochs": list(self.saved_epochs), "taken_step": self.taken_step,
                "last_restored": self.last_restored}

    def set_state(self, state):
        self.saved_epochs = list(state["saved_epochs"])
        self.taken_step = state["taken_step"]
        self.last_restored = state["last_restored"]

    # -- restoring ------------------------------------------------------------
    def rewind_to_epoch(self, epoch):
        if epoch not in self.saved_epochs:
            raise ValueError(f"No checkpoint of epoch {epoch + 1} is kept (kept: "
                             f"{[e + 1 for e in self.saved_epochs]}); raise keep_epochs.")
        self._restore_path(self._path(f"epoch-{epoch}"))
        self.last_restored = ("epoch", epoch)

    def rewind_epochs(self, r, from_epoch=None):
        last = self.saved_epochs[-1] if from_epoch is None else from_epoch
        self.rewind_to_epoch(last - r)

    def rewind_to_step(self):
        if self.taken_step is None:
            raise ValueError(f"No step-{self.save_step} checkpoint was taken "
                             "(set save_step and train at least that many steps).")
        self._restore_path(self._path("step"))
        self.last_restored = ("step", self.save_step)

    def keep(self, name):
        return self._save(f"kept-{name}")

    def restore(self, name):
        self._restore_path(self._path(f"kept-{name}"))
        self.last_restored = ("kept", name)


class RegularizerGrowth(keras.callbacks.Callback):
    """Grows lambda along `curve(t)` (inside the step); see tf_unilth.callbacks."""

    def __init__(self, curve, active=False):
        super().__init__()
        self.curve = curve
        self.active = active
        self._started = False

    def on_train_begin(self, logs=None):
        if not any(l._tfu_penalized for l in core.wrappers(self.model)):
            raise ValueError("RegularizerGrowth found no penalty attached; call "
                             "attach_regularizers(model) first.")
        if self.active and not self._started:
            self.start()

    def start(self, *unused_args):
        self.active = self._started = True
        core.start_growth(self.model, self.curve, core.current_step(self.model))

    restart = start

    def stop(self, *unused_args):
        self.active = False
        core.hold_lambda(self.model, 0.0)

    def get_state(self):
        return {"active": self.active, "curve": self.curve.get_config()}

    def set_state(self, state):
        self.active = state["active"]
        self.curve = type(self.curve)(**state["curve"])

    def current(self):
        return core.current_lambda(self.model)
