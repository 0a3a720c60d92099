"""Compiling, fitting and evaluating: the one training loop of every method.

`Trainer.compile` uses the search's loss, metrics and optimizer (a name or an
optimizer to clone); `Trainer.fit` is `model.fit` made resumable through the
journal, guarded against a loss that stops being finite, and, under
multi-worker, checked after every epoch that the workers decided alike.
"""

import hashlib
import math

import numpy as np

from tf_unilth._compat import TfmotPruneLowMagnitude, build_optimizer, check_model, keras
from tf_unilth import data as data_lib
from tf_unilth import distribute
from tf_unilth import masks as masks_lib
from tf_unilth.engine import journal as journal_lib
from tf_unilth.engine import summaries
from tf_unilth.engine.execution import AUTO, Execution

OPTIMIZERS = ("adam", "sgd", "momentum", "rmsprop")
# Chosen on MNIST validation accuracy of dense LeNet-300-100 (docs/ALGORITHMS.md).
DEFAULT_LEARNING_RATE = 6e-4
# An epoch whose data loss (the loss without penalties) exceeds this times the
# search's first epoch's, and this times a chance-level loss (ln classes),
# diverged: handled like a non-finite loss. The first epoch's own mean counts
# at most this times chance, so a run that blows up within its first epoch
# (a learning rate of 1e6) is caught there, not taken as the reference.
DIVERGENCE_FACTOR = 10.0


def make_optimizer(name, learning_rate):
    """A fresh tf_keras optimizer by name (momentum = SGD with Nesterov 0.9)."""
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate)
    if name == "momentum":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    raise ValueError(f"Unknown optimizer {name!r}; known: {list(OPTIMIZERS)}.")


def fresh_optimizer(optimizer, learning_rate=None):
    """A new optimizer: by name (at `learning_rate`, default
    DEFAULT_LEARNING_RATE), or a copy of an optimizer instance (every model of a
    search needs its own slots), at `learning_rate` if given."""
    if isinstance(optimizer, str):
        return make_optimizer(optimizer, learning_rate or DEFAULT_LEARNING_RATE)
    if isinstance(optimizer, (keras.optimizers.Optimizer, keras.optimizers.legacy.Optimizer)):
        config = optimizer.get_config()
        if learning_rate is not None:
            config["learning_rate"] = learning_rate
        rate = config.get("learning_rate")
        if isinstance(rate, (int, float)) and rate <= 0:
            raise ValueError(f"The optimizer's learning rate must be > 0, got {rate}.")
        return type(optimizer).from_config(config)
    raise TypeError(f"optimizer must be a name ({', '.join(OPTIMIZERS)}) or a tf_keras "
                    f"optimizer, got {type(optimizer).__name__}.")


def outputs_probabilities(model):
    """True when the model's last layer applies a softmax (its outputs are not logits)."""
    last = model.layers[-1]
    inner = getattr(last, "layer", last)  # a pruning wrapper's layer
    return (getattr(inner, "activation", None) is keras.activations.softmax
            or isinstance(inner, keras.layers.Softmax))


class Trainer:
    """Compiles, trains and evaluates the models of one search (see module doc)."""

    def __init__(self, data, journal, log, *, optimizer="adam", learning_rate=None,
                 loss=None, metrics=None, strategy=None, verbose=1, log_dir=None,
                 printer=print, callbacks=(), steps_per_execution=AUTO, jit_compile=AUTO,
                 planned_steps=None):
        self.data, self.journal, self.log = data, journal, log
        self.optimizer, self.learning_rate = optimizer, learning_rate
        self.loss, self.metrics = loss, metrics
        self.strategy = strategy
        self.verbose, self.log_dir = verbose, log_dir
        # Lines printed during a fit wait for Keras' progress output of the epoch.
        self.lines = summaries.Lines(printer)
        self.print = self.lines
        self.board = summaries.Board(log_dir) if log_dir else None
        self.extra_callbacks = list(callbacks)  # the user's, added to every fit
        fresh_optimizer(optimizer, learning_rate)  # fail early on a bad name
        self.execution = Execution.resolve(
            steps_per_execution, jit_compile, strategy=strategy,
            steps_per_epoch=data.steps_per_epoch, callbacks=self.extra_callbacks,
            planned_steps=planned_steps)
        self._fits = 0
        self._saver = None
        self.in_fit = False
        self._evaluations = {}  # (split, model state) -> {"loss", "accuracy"}
        self._said_execution = False

    def compile(self, model, learning_rate=None, for_training=True):
        """Compiles `model` with the search's loss, metrics and a fresh
        optimizer; for training, with a `data_loss` metric too (the loss
        without penalties: what tells a divergence from a growing penalty)."""
        check_model(model)
        with self.strategy.scope():  # metrics are variables: made in the model's scope
            loss, data_loss, accuracy = self.loss, None, "accuracy"
            if loss is None:
                from_logits = not outputs_probabilities(model)
                loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
                data_loss = keras.metrics.SparseCategoricalCrossentropy(
                    from_logits=from_logits, name="data_loss")
                # What "accuracy" resolves to under a sparse loss, made now: a
                # metric Keras builds from a name creates its variables inside
                # the first train step, and a tf.function that created
                # variables is traced twice (about 1 s a compile on CPU).
                accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
            elif for_training:
                data_loss = keras.metrics.MeanMetricWrapper(loss, name="data_loss")
            metrics = list(self.metrics) if self.metrics else [accuracy]
            if for_training:
                metrics.append(data_loss)
            model.compile(fresh_optimizer(self.optimizer, learning_rate or self.learning_rate),
                          loss, metrics=metrics, **self._execution_for(model).compile_kwargs())
            if for_training:  # its slots made now, not in the first (then twice) trace
                build_optimizer(model.optimizer, model.trainable_variables)
        return model

    def _execution_for(self, model):
        """The execution settings of `model`; a change from the search's
        (auto XLA off for a convolutional model on CPU) is printed once."""
        execution = self.execution.for_model(model)
        if execution.jit_compile != self.execution.jit_compile and not self._said_execution:
            self._said_execution = True
            self.print(f"Execution: XLA off ({execution.reasons[-1]}).")
        return execution

    def divergence(self, model, logs):
        """Why the epoch that gave `logs` diverged (None if it did not): a
        non-finite loss or weight, or a data loss DIVERGENCE_FACTOR times the
        first epoch's and a chance-level loss."""
        loss = float(logs.get("loss", 0.0))
        if not math.isfinite(loss):
            return f"the training loss became {loss}"
        data = logs.get("data_loss")
        if data is not None:
            data = float(data)
            if self.log.first_data_loss is None:
                self.log.first_data_loss = data
            classes = max(2, int(model.outputs[0].shape[-1] or 2))
            chance = math.log(classes)
            reference = min(self.log.first_data_loss, DIVERGENCE_FACTOR * chance)
            bound = DIVERGENCE_FACTOR * max(reference, chance)
            if not math.isfinite(data) or data > bound:
                return (f"the training loss (without penalties) rose to {data:.4g}, over "
                        f"{bound:.4g} ({DIVERGENCE_FACTOR:g}x the larger of the first epoch's "
                        f"{min(self.log.first_data_loss, DIVERGENCE_FACTOR * chance):.4g} (at "
                        f"most {DIVERGENCE_FACTOR:g}x chance) and a chance-level {chance:.3g})")
        for variable in model.trainable_variables:
            if not np.all(np.isfinite(variable.numpy())):
                return f"weight {variable.name} is not finite"
        return None

    def fit(self, model, epochs, callbacks=(), initial_epoch=0, validate=True):
        """model.fit on the training data, resumable (see `engine.journal`).

        A fit that a previous attempt finished is restored instead of trained;
        an interrupted one continues after its last saved epoch. A loss that
        stops being finite stops training and puts the model back to its last
        good snapshot (FloatingPointError).
        """
        index, self._fits = self._fits, self._fits + 1
        callbacks = list(callbacks) + self.extra_callbacks
        keras.callbacks.CallbackList(callbacks, model=model)  # set_model on each
        self.journal.check_replay(index, model, len(self.log.rounds))
        snapshot = self.journal.finished_fit(index) or self.journal.partial_fit(index)
        if snapshot is not None:  # read back now: an unreadable one falls back a snapshot
            snapshot = self.journal.restore_readable(index, snapshot, model, callbacks,
                                                     self.print)
            if snapshot is None:  # the fit starts over: so do the rounds it recorded
                self.journal.truncate_rounds(len(self.log.rounds))
        finished, partial = (snapshot, None) if snapshot is not None and \
            self.journal.finished_fit(index) is snapshot else (None, snapshot)
        if partial is not None and (partial["stop_training"] or partial["epoch"] + 1 >= epochs):
            finished = partial  # it had ended; only its end snapshot was missing
        if finished is not None:
            snapshot = finished
            self.log.set_state(snapshot["session"])
            if snapshot is partial:
                self.journal.save(index, model, callbacks, self.log.get_state(),
                                  partial["history"], partial["epoch"], done=True)
            self.print(f"fit {index + 1}: finished in an earlier attempt; restored.")
            return journal_lib.History(snapshot["history"])
        if partial is not None:
            initial_epoch = partial["epoch"] + 1
            self.log.set_state(partial["session"])
            self.journal.truncate_rounds(len(self.log.rounds))
            self.print(f"fit {index + 1}: resuming after epoch {initial_epoch}.")
        saver = journal_lib.SaveProgress(self.journal, index, callbacks, self, partial)
        checks = [WorkersAgree(self.strategy, callbacks)] \
            if distribute.is_multi_worker(self.strategy) else []
        # Validation numbers are remembered before any callback can change the
        # weights at the epoch's end (a rewind, a restore of the best epoch).
        first, last = [RememberValidation(self)], []
        order = data_lib.epoch_order(self.data.train)
        # After `saver`, which counts the epoch: the next epoch's number, the step count.
        if order is not None:  # epoch e's data order depends on e only: exact resume
            last.append(data_lib.DataOrder(order, lambda: self.log.epochs))
        if self.board is not None:
            last.append(summaries.WriteEpoch(self.board, lambda: self.log.steps))
        if self.verbose:  # ours, so that the held lines come after it
            last.append(keras.callbacks.ProgbarLogger(count_mode="steps"))
        last.append(summaries.LetOut(self.lines))
        self.in_fit, self._saver = True, saver
        self.lines.hold()
        try:
            model.fit(self.data.train, epochs=epochs, initial_epoch=initial_epoch,
                      validation_data=self.data.validation if validate else None,
                      callbacks=first + callbacks + [*checks, saver] + last,
                      verbose=self.verbose)
        finally:
            self.in_fit, self._saver = False, None
            self.lines.release()
        if saver.diverged:
            self._diverged(index, model, callbacks, saver.diverged)
        self.journal.save(index, model, callbacks, self.log.get_state(), saver.history,
                          saver.last_epoch if saver.last_epoch is not None else initial_epoch - 1,
                          done=True)
        self.check_workers_agree(model, f"fit {index + 1}")
        return journal_lib.History(saver.history)

    # SaveProgress reports each epoch here.
    def add_epoch(self, seconds):
        self.log.add_epoch(self.data.steps_per_epoch, seconds)

    def elapsed(self):
        """Training seconds of the search so far, the running epoch's included."""
        running = self._saver.running_seconds() if self._saver is not None else 0.0
        return self.log.seconds + running

    def get_state(self):
        return self.log.get_state()

    def check_workers_agree(self, model, when):
        """Multi-worker: raises unless every worker holds the same masks, sparsity
        and round records (the plateau trigger and rewinds decided alike)."""
        if not distribute.is_multi_worker(self.strategy):
            return
        digest = masks_lib.masks_digest(model)
        rounds = [(r["round"], r["sparsity"], r["epochs"]) for r in self.log.rounds]
        distribute.check_same(self.strategy, [digest, rounds, self.log.epochs, self.log.steps],
                              f"the masks and rounds after {when}")

    def _diverged(self, index, model, callbacks, reason):
        good = self.journal.partial_fit(index) or self.journal.last_good()
        if good is None:
            where = "no epoch had finished without diverging, so there is no good state"
        else:
            self.journal.restore(good, model, callbacks)  # written by this attempt
            where = (f"the model was put back to its last good state (end of epoch "
                     f"{good['epoch'] + 1}), kept in {self.journal.directory}")
        raise FloatingPointError(
            f"Training diverged: {reason}; training stopped and {where}. Lower the learning "
            "rate (or lambda_max) and start again with a new output directory.")

    def evaluate(self, model, split):
        """{"loss", "accuracy"} of `model` on a split; a model in a state already
        evaluated on that split (same weights, same penalty) is not evaluated
        again (Keras' validation at the end of an epoch counts)."""
        dataset = getattr(self.data, split)
        if dataset is None:
            return {"loss": None, "accuracy": None}
        key = (split, model_state(model))
        if key not in self._evaluations:
            values = model.evaluate(dataset, verbose=0, return_dict=True)
            self.remember(key, values)
        return dict(self._evaluations[key])

    def remember(self, key, values):
        accuracy = next((v for k, v in values.items() if "acc" in k), None)
        self._evaluations[key] = {"loss": float(values["loss"]),
                                  "accuracy": None if accuracy is None else float(accuracy)}
        while len(self._evaluations) > 256:
            self._evaluations.pop(next(iter(self._evaluations)))


def model_state(model):
    """A digest of what a model computes: the weights it infers with (a wrapped
    model and its stripped ticket give the same) and its added losses."""
    digest = hashlib.blake2b(digest_size=16)
    for layer in model.layers:
        inner = layer.layer if isinstance(layer, TfmotPruneLowMagnitude) else layer
        for weight in inner.weights:
            digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    penalty = sum(float(loss) for loss in model.losses)
    digest.update(np.float64(penalty).tobytes())
    return digest.hexdigest()


class RememberValidation(keras.callbacks.Callback):
    """Keeps Keras' end-of-epoch validation numbers with the model state they
    describe (it must run before the callbacks that may change the weights)."""

    def __init__(self, trainer):
        super().__init__()
        self.trainer = trainer

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if "val_loss" in logs:
            values = {k[4:]: v for k, v in logs.items() if k.startswith("val_")}
            self.trainer.remember(("validation", model_state(self.model)), values)


class WorkersAgree(keras.callbacks.Callback):
    """Multi-worker: after every epoch, checks that all workers decided alike.

    Compares the masks, whether training stops, and the plateau triggers'
    state (epochs waited, best value and epoch, fired or not) across workers
    (a collective op, so a barrier too); raises on every worker when they
    differ instead of letting the replicas drift apart.
    """

    def __init__(self, strategy, callbacks):
        super().__init__()
        self.strategy = strategy
        self.triggers = [cb for cb in callbacks if isinstance(cb, keras.callbacks.EarlyStopping)]

    def on_epoch_end(self, epoch, logs=None):
        state = [masks_lib.masks_digest(self.model), bool(self.model.stop_training)]
        for cb in self.triggers:
            best = getattr(cb, "best", None)
            state.append([getattr(cb, "wait", None), None if best is None else float(best),
                          getattr(cb, "best_epoch", None), getattr(cb, "armed", None),
                          getattr(cb, "fired_epoch", None)])
        distribute.check_same(self.strategy, state,
                              f"the masks and plateau decisions after epoch {epoch + 1}")
