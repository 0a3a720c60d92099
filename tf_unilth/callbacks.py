"""Keras callbacks that drive the ticket methods from one `model.fit`.

- `UpdatePruningStep`: tfmot's step callback, plus wiring the optimizer's slots
  into the monotone wrappers (so removed weights' state is cleared).
- `PlateauTrigger`: Keras `EarlyStopping`, but instead of stopping it fires
  listeners (rewind, regularizer growth, pruning plan) and can be re-armed.
- `Rewind`: tf.train checkpoints of weights and optimizer state per epoch and
  at step k; restores "r epochs back" or "step k" keeping the current masks.
- `RegularizerGrowth`: raises the growing regularizers' lambda along a curve.
"""

import math
import os
import tempfile

from tf_unilth._compat import keras, steps_per_execution_variable, tf, tfmot
from tf_unilth import masks as masks_lib
from tf_unilth import regularizers as reg_lib
from tf_unilth import wrapper as wrapper_lib


def _strategy_scope(model):
    strategy = getattr(model, "distribute_strategy", None)
    return strategy.scope() if strategy is not None else tf.distribute.get_strategy().scope()


def current_step(model):
    """The wrappers' pruning step (number of training batches seen so far)."""
    layers = wrapper_lib.wrappers(model)
    return int(layers[0].pruning_step.numpy()) if layers else 0


class UpdatePruningStep(tfmot.sparsity.keras.UpdatePruningStep):
    """tfmot's `UpdatePruningStep`, also handing optimizer slots to the wrappers
    (works on models pruned by tfmot's `prune_low_magnitude` too)."""

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        wrapper_lib.link_optimizer(self.model)


class PlateauTrigger(keras.callbacks.EarlyStopping):
    """Fires when the monitored metric plateaus, instead of stopping training.

    Same `monitor`, `mode`, `min_delta`, `patience`, `baseline` and
    `start_from_epoch` semantics as `EarlyStopping` (its decision logic is
    reused unchanged). When it fires it records the epoch, sets the `fired`
    variable and calls every listener as `listener(trigger, epoch, logs)`.
    After firing it is disarmed until `rearm()`; `stop_on_fire=True` also stops
    training (a second-phase trigger that ends fine-tuning).
    """

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, mode="auto",
                 baseline=None, start_from_epoch=0, listeners=(), stop_on_fire=False,
                 verbose=0):
        super().__init__(monitor=monitor, min_delta=min_delta, patience=patience,
                         verbose=0, mode=mode, baseline=baseline,
                         restore_best_weights=False, start_from_epoch=start_from_epoch)
        self.listeners = list(listeners)
        self.stop_on_fire = stop_on_fire
        self.trigger_verbose = verbose
        self.fired = None  # created with the model, in its strategy's scope
        self.fired_epoch = None
        self.armed = True

    def set_model(self, model):
        super().set_model(model)
        if self.fired is None:
            with _strategy_scope(model):
                self.fired = tf.Variable(False, trainable=False, name="plateau_fired")

    def add_listener(self, listener):
        self.listeners.append(listener)
        return listener

    def on_train_begin(self, logs=None):
        # Keeps fired/armed across fit calls on purpose: a method may run its
        # phases as several fits. `rearm()` starts a new watch.
        if self.armed:
            super().on_train_begin(logs)

    def rearm(self):
        """Starts watching afresh (wait, best value and epoch reset)."""
        super().on_train_begin()
        self.armed = True
        self.fired_epoch = None
        if self.fired is not None:
            self.fired.assign(False)

    def get_monitor_value(self, logs):
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(
                f"PlateauTrigger monitors {self.monitor!r}, which is not in the "
                f"epoch logs (available: {sorted(logs)}). Pass validation_data "
                "to model.fit (val_* metrics need it) or choose another monitor.")
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
        """Python state for resuming a run (see tf_unilth.resume)."""
        state = {name: getattr(self, name, None) for name in self._STATE}
        state["best"] = None if state["best"] is None else float(state["best"])
        return state

    def set_state(self, state):
        for name in self._STATE:
            setattr(self, name, state[name])
        self.fired.assign(self.fired_epoch is not None)

    def fire(self, epoch, logs=None):
        """Fires now (also used to force the trigger when a budget runs out)."""
        self.armed = False
        self.fired_epoch = epoch
        self.fired.assign(True)
        if self.trigger_verbose:
            print(f"PlateauTrigger: {self.monitor} plateaued at epoch {epoch + 1} "
                  f"(best {self.best:.5f} at epoch {self.best_epoch + 1}).")
        for listener in self.listeners:
            listener(self, epoch, logs)
        if self.stop_on_fire:
            self.model.stop_training = True


def _rewindable_variables(model):
    """Model variables a rewind restores: all but what the wrappers say belongs
    to the pruning (masks, thresholds, steps). Removal plans, penalties and
    schedules are modules outside the model's variables."""
    skip = {id(v) for v in wrapper_lib.pruning_state_variables(model)}
    return [v for v in model.variables if id(v) not in skip]


class Rewind(keras.callbacks.Callback):
    """Checkpoints weights and optimizer state; restores them keeping the masks.

    Saves at the end of every epoch (keeping the last `keep_epochs`) and, when
    `save_step` is given, once after that many training batches (k = 0 saves
    the initialization at train begin). `rewind_epochs(r)` restores the state
    of `r` epochs ago, `rewind_to_step()` the step-k state. Masks never come
    back: restored weights and optimizer slots are multiplied by the current
    masks. `restore_optimizer=False` zeroes the optimizer state instead of
    restoring it. Uses `tf.train.Checkpoint` / `CheckpointManager`.
    """

    def __init__(self, directory=None, keep_epochs=2, save_step=None,
                 restore_optimizer=True):
        super().__init__()
        if keep_epochs < 1:
            raise ValueError(f"keep_epochs must be >= 1, got {keep_epochs}.")
        if save_step is not None and save_step < 0:
            raise ValueError(f"save_step (k) must be >= 0, got {save_step}.")
        self.directory = directory
        self.keep_epochs = keep_epochs
        self.save_step = save_step
        self.restore_optimizer = restore_optimizer
        self._checkpoint = None
        self._epochs = None
        self._step_path = None
        self.saved_epochs = []
        self.last_restored = None
        self._chunk = None  # the model's steps_per_execution (chunks may be cut short)

    # -- lifecycle --------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._ensure_checkpoint()
        variable = steps_per_execution_variable(self.model)
        self._chunk = None if variable is None else int(variable.numpy())
        if self._step_path is None and self.save_step is not None and \
                os.path.exists(self._step_prefix() + ".index"):
            self._step_path = self._step_prefix()  # taken by an earlier attempt of the run
        if self.save_step == 0 and self._step_path is None:
            self._save_step_checkpoint()

    def get_state(self):
        return {"saved_epochs": list(self.saved_epochs), "step_path": self._step_path,
                "last_restored": self.last_restored}

    def set_state(self, state):
        self._ensure_checkpoint()
        self.saved_epochs = list(state["saved_epochs"])
        self._step_path = state["step_path"]
        self.last_restored = state["last_restored"]

    def on_epoch_begin(self, epoch, logs=None):
        self._split_chunk_at_step()

    def on_train_batch_end(self, batch, logs=None):
        if self.save_step and self._step_path is None:
            if current_step(self.model) >= self.save_step:
                self._save_step_checkpoint()
                self._restore_chunk()
            else:
                self._split_chunk_at_step()

    def on_epoch_end(self, epoch, logs=None):
        if not math.isfinite(float((logs or {}).get("loss", 0.0))):
            return  # a diverged epoch is never kept (the search puts the last good back)
        self._epochs.save(checkpoint_number=epoch)
        self.saved_epochs = [e for e in self.saved_epochs if e != epoch] + [epoch]
        self.saved_epochs = self.saved_epochs[-self.keep_epochs:]

    # Keras only calls batch hooks of callbacks that override them; skip the
    # per-batch cost entirely when there is no step-k checkpoint left to take.
    def _implements_train_batch_hooks(self):
        return bool(self.save_step) and self._step_path is None

    def _split_chunk_at_step(self):
        """With multi-step execution (steps_per_execution > 1) Keras calls batch
        hooks once per chunk of steps; the chunk that would run past step k is
        shortened to end exactly at k (Keras reads the chunk length before
        every call, and counts by it), so theta_k is taken at step k."""
        variable = steps_per_execution_variable(self.model)
        if not self.save_step or self._step_path is not None or variable is None:
            return
        left = self.save_step - current_step(self.model)
        if 0 < left < self._chunk:
            variable.assign(left)

    def _restore_chunk(self):
        variable = steps_per_execution_variable(self.model)
        if variable is not None and self._chunk:
            variable.assign(self._chunk)

    # -- restoring ----------------------------------------------------------
    def rewind_to_epoch(self, epoch):
        """Restores the checkpoint saved at the end of `epoch` (0-based)."""
        path = os.path.join(self._epochs.directory, f"epoch-{epoch}")
        if epoch not in self.saved_epochs:
            raise ValueError(
                f"No checkpoint of epoch {epoch + 1} is kept (kept: "
                f"{[e + 1 for e in self.saved_epochs]}); raise keep_epochs.")
        self._restore(path)
        self.last_restored = ("epoch", epoch)

    def rewind_epochs(self, r, from_epoch=None):
        """Restores the state `r` epochs before `from_epoch` (default: the last)."""
        last = self.saved_epochs[-1] if from_epoch is None else from_epoch
        self.rewind_to_epoch(last - r)

    def rewind_to_step(self):
        if self._step_path is None:
            raise ValueError(f"No step-{self.save_step} checkpoint was taken "
                             "(set save_step and train at least that many steps).")
        self._restore(self._step_path)
        self.last_restored = ("step", self.save_step)

    def keep(self, name):
        """Checkpoints the current weights and optimizer state as `name` (kept
        until the directory goes; `restore(name)` puts them back). Returns the
        checkpoint's path."""
        self._ensure_checkpoint()
        return self._checkpoint.write(os.path.join(self.directory, name, "ckpt"))

    def restore(self, name):
        """Puts back the state kept as `name`, the current masks kept."""
        self._ensure_checkpoint()
        self._restore(os.path.join(self.directory, name, "ckpt"))
        self.last_restored = ("kept", name)

    # -- internals ----------------------------------------------------------
    def _ensure_checkpoint(self):
        if self._checkpoint is not None:
            return
        if self.directory is None:
            # The model.fit route without a directory: a temporary one, removed
            # with this callback (or at exit).
            self._temporary = tempfile.TemporaryDirectory(prefix="tf_unilth_rewind_")
            self.directory = self._temporary.name
        wrapper_lib.link_optimizer(self.model)
        variables = {f"v{i}": v for i, v in enumerate(_rewindable_variables(self.model))}
        self._weights = tf.train.Checkpoint(**variables)
        self._checkpoint = tf.train.Checkpoint(weights=self._weights,
                                               optimizer=self.model.optimizer)
        # One epoch more than the rewinds need: the search's snapshot from one
        # epoch back (a kill, a divergence) still finds every epoch it lists.
        self._epochs = tf.train.CheckpointManager(
            self._checkpoint, os.path.join(self.directory, "epochs"),
            max_to_keep=self.keep_epochs + 1, checkpoint_name="epoch")

    def _save_step_checkpoint(self):
        self._ensure_checkpoint()
        self._step_path = self._checkpoint.write(self._step_prefix())

    def _step_prefix(self):
        return os.path.join(self.directory, f"step-{self.save_step}", "ckpt")

    def _restore(self, path):
        if self.restore_optimizer:
            # A fresh root: the manager's save_counter is bookkeeping, not
            # state, so it is left unread on purpose (expect_partial keeps TF
            # from warning about it at every rewind).
            tf.train.Checkpoint(weights=self._weights, optimizer=self.model.optimizer).read(
                path).assert_existing_objects_matched().expect_partial()
        else:
            tf.train.Checkpoint(weights=self._weights).read(path).expect_partial()
            reset_optimizer(self.model.optimizer)
        masks_lib.apply_masks(self.model)


def reset_optimizer(optimizer):
    """Zeroes the optimizer's state (slots and iteration count)."""
    for v in optimizer.variables:
        v.assign(tf.zeros_like(v))


class RegularizerGrowth(keras.callbacks.Callback):
    """Grows lambda of the model's GrowingRegularizers along `curve(t)`.

    Idle (lambda held) until `start()` (e.g. a PlateauTrigger listener); then
    lambda = curve(t), t = training steps since the start. `restart()` begins a
    new growth from t = 0 (a new UniLTH round); `stop()` holds lambda at 0.
    The curve is evaluated inside the training step (`regularizers.LambdaGrowth`):
    this callback only writes the curve's start, so it has no per-batch hook.
    """

    def __init__(self, curve, active=False):
        super().__init__()
        self.curve = curve
        self.active = active
        self._growth = None

    def on_train_begin(self, logs=None):
        self._growth = reg_lib.growth(self.model)
        if self._growth is None:
            raise ValueError("RegularizerGrowth found no GrowingRegularizer attached by "
                             "tf_unilth.regularizers.attach(model); attach them first.")
        if self.active and int(self._growth.start_step.numpy()) < 0:
            self.start()

    def start(self, *unused_args):
        """Starts (or restarts) growth from t = 0 at the next training step."""
        self.active = True
        growth = self._growth or reg_lib.growth(self.model)
        growth.start(self.curve, current_step(self.model))

    restart = start

    def stop(self, *unused_args):
        self.active = False
        (self._growth or reg_lib.growth(self.model)).hold(0.0)

    def get_state(self):
        return {"active": self.active, "curve": self.curve.get_config()}

    def set_state(self, state):
        self.active = state["active"]
        self.curve = type(self.curve)(**state["curve"])

    def current(self):
        """Lambda now (what the next step uses is curve(t + 1))."""
        growth = self._growth or reg_lib.growth(self.model)
        return growth.value() if growth is not None else 0.0
