"""The Keras 3 `Search`: the same protocol as `tf_unilth.search.Search`
(wrap, compile, fit, evaluate, removal, record_round, info, warn, event,
checkpoint_dir, data), for Keras 3 models on any backend, with numpy data.

What differs from the tfmot search is in docs/KERAS3.md: no resume from a
state directory yet (refused before anything runs), TensorBoard at epoch
level only, pruning events at step boundaries Python sees.
"""

import dataclasses
import math
import os
import tempfile
import time

import numpy as np

from tf_unilth.engine import records as records_lib
from tf_unilth.keras3 import kit as kit_lib
from tf_unilth.keras3._compat import keras, sync

OPTIMIZERS = ("adam", "sgd", "momentum", "rmsprop")
DEFAULT_LEARNING_RATE = 6e-4  # the tf_keras path's (engine.trainer)
CHANCE_MARGIN = 0.02
CHANCE_LOSS_FRACTION = 0.02
AUTO = "auto"
MAX_STEPS_PER_EXECUTION = 100


class DegenerateTicket(RuntimeError):
    """A strict search stopped at a degenerate state."""


def _pair(data, what):
    x, y = data
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"The {what} inputs ({len(x)}) and labels ({len(y)}) differ in length.")
    if x.dtype == np.uint8:
        x = x.astype("float32") / 255.0
    elif x.dtype != np.float32:
        x = x.astype("float32")
    return x, y.reshape(-1).astype("int32") if y.ndim == 2 and y.shape[1] == 1 else y


def _arrays_of(dataset):
    """(x, y) behind a dataset made by tf_unilth.data (None otherwise)."""
    found = getattr(dataset, "tf_unilth_arrays", None)
    return None if found is None else (np.asarray(found[0]), np.asarray(found[1]))


@dataclasses.dataclass
class Data:
    """Train / validation / test (x, y) arrays, the batch size, batches per epoch."""
    train: tuple
    validation: tuple = None
    test: tuple = None
    batch_size: int = 128
    steps_per_epoch: int = None

    @classmethod
    def make(cls, train, validation=None, test=None, batch_size=128, model=None):
        """From (x, y) numpy pairs, or `tf_unilth.data.Splits` (its arrays, its batch size)."""
        if hasattr(train, "train") and hasattr(train, "info"):  # tf_unilth.data.Splits
            splits = train
            arrays = _arrays_of(splits.train)
            if arrays is None:
                raise TypeError("The Keras 3 path takes tf_unilth.data splits made from arrays "
                                "or (x, y) numpy pairs.")
            from tf_unilth._compat import static_batch_size  # noqa: E501  pylint: disable=import-outside-toplevel
            batch_size = static_batch_size(splits.train) or batch_size
            train = arrays
            validation = _arrays_of(splits.validation) if splits.validation is not None else None
            test = _arrays_of(splits.test) if splits.test is not None else None
        if not isinstance(train, tuple):
            raise TypeError("On the Keras 3 path train_data must be an (x, y) pair of numpy "
                            f"arrays or tf_unilth.data.Splits; got {type(train).__name__}.")
        train = _pair(train, "train")
        validation = None if validation is None else _pair(validation, "validation")
        test = None if test is None else _pair(test, "test")
        if model is not None:
            rank = len(model.inputs[0].shape) - 1
            fix = lambda d: d if d is None or d[0].ndim - 1 == rank else (  # noqa: E731
                d[0][..., None], d[1])
            train, validation, test = fix(train), fix(validation), fix(test)
        return cls(train, validation, test, int(batch_size),
                   math.ceil(len(train[0]) / int(batch_size)))


def check_data(data, model, default_loss=True):
    """A clear error before anything trains when the data cannot feed `model`."""
    want = tuple(model.inputs[0].shape[1:])
    classes = int(model.outputs[0].shape[-1] or 0)
    for split in ("train", "validation", "test"):
        pair = getattr(data, split)
        if pair is None:
            continue
        x, y = pair
        if tuple(x.shape[1:]) != want and not all(
                w is None or w == g for w, g in zip(want, x.shape[1:])):
            raise ValueError(f"The {split} dataset's inputs have shape {tuple(x.shape[1:])} per "
                             f"example; the model takes {want}. Reshape the data or build the "
                             "model for it.")
        if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
            raise ValueError(f"The {split} data has NaN or infinite inputs; clean them before "
                             "training.")
        if default_loss and classes > 1 and y.size and (y.min() < 0 or y.max() >= classes):
            raise ValueError(
                f"The {split} labels run from {int(y.min())} to {int(y.max())}, but the model "
                f"has {classes} outputs (labels 0..{classes - 1} for its sparse categorical "
                "loss). Give the model one output per class, or pass your own loss (loss=...).")


def make_optimizer(optimizer, learning_rate):
    if isinstance(optimizer, str):
        rate = learning_rate or DEFAULT_LEARNING_RATE
        if optimizer == "adam":
            return keras.optimizers.Adam(rate)
        if optimizer == "sgd":
            return keras.optimizers.SGD(rate)
        if optimizer == "momentum":
            return keras.optimizers.SGD(rate, momentum=0.9, nesterov=True)
        if optimizer == "rmsprop":
            return keras.optimizers.RMSprop(rate)
        raise ValueError(f"Unknown optimizer {optimizer!r}; known: {list(OPTIMIZERS)}.")
    if isinstance(optimizer, keras.optimizers.Optimizer):
        config = optimizer.get_config()
        if learning_rate is not None:
            config["learning_rate"] = learning_rate
        return type(optimizer).from_config(config)
    raise TypeError(f"optimizer must be a name ({', '.join(OPTIMIZERS)}) or a Keras 3 "
                    f"optimizer, got {type(optimizer).__name__}.")


def outputs_probabilities(model):
    last = model.layers[-1]
    return (getattr(last, "activation", None) is keras.activations.softmax
            or isinstance(last, keras.layers.Softmax))


class _Accounting(keras.callbacks.Callback):
    """Counts epochs, steps and seconds; stops and puts back the last good
    state when the loss stops being finite or blows up."""

    def __init__(self, search):
        super().__init__()
        self.search = search

    def on_epoch_begin(self, epoch, logs=None):
        self.search._epoch_started = time.perf_counter()
        self._start_step = kit_lib.current_step(self.model) if kit_lib.wrappers(self.model) \
            else None

    def on_epoch_end(self, epoch, logs=None):
        search = self.search
        seconds = time.perf_counter() - search._epoch_started
        search._epoch_started = None
        steps = search.data.steps_per_epoch
        search.log.add_epoch(steps, seconds)
        # The data loss: val_loss (the penalty is a training loss only), else the loss.
        loss = float((logs or {}).get("val_loss", (logs or {}).get("loss", 0.0)))
        if not math.isfinite(float((logs or {}).get("loss", 0.0))):
            loss = float("nan")
        first = search.log.first_data_loss
        classes = int(self.model.outputs[0].shape[-1] or 0)
        chance = math.log(classes) if classes > 1 else 1.0
        if first is None and math.isfinite(loss):
            search.log.first_data_loss = min(loss, 10.0 * chance)
        diverged = not math.isfinite(loss) or (
            first is not None and loss > 10.0 * first and loss > 10.0 * chance)
        if diverged:
            search.warn(f"epoch {epoch + 1}: the loss {loss:.4g} is not finite or blew up; "
                        "training stopped, the last good state put back", "diverged")
            if search._good is not None:
                _put_back(self.model, search._good)
            self.model.stop_training = True
        else:
            search._good = _snapshot(self.model)


def _snapshot(model):
    sync(model)
    optimizer = getattr(model, "optimizer", None)
    opt = [v.numpy() for v in optimizer.variables] if optimizer is not None and \
        optimizer.built else None
    return [v.numpy() for v in model.variables], opt


def _put_back(model, snap):
    sync(model)
    for v, value in zip(model.variables, snap[0]):
        v.assign(value)
    if snap[1] is not None:
        for v, value in zip(model.optimizer.variables, snap[1]):
            v.assign(value)


class Search:
    """One ticket search on Keras 3 (see module doc)."""

    kit = kit_lib

    def __init__(self, data, *, optimizer="adam", learning_rate=None, loss=None, metrics=None,
                 exclude=(), verbose=1, log_dir=None, printer=print, callbacks=(),
                 state_dir=None, steps_per_execution=AUTO, jit_compile=AUTO, strict=False,
                 strategy=None, distribution=None):
        if state_dir is not None:
            raise NotImplementedError(
                "state_dir (resume after a kill) is not on the Keras 3 path yet: the search "
                "would not be resumable, so it is refused before anything runs "
                "(docs/KERAS3.md). Run without --state_dir / state_dir=, or on tf_keras.")
        if strategy is not None:
            raise ValueError("tf.distribute strategies are tf_keras'; on Keras 3 pass "
                             "distribution= (a keras.distribution, e.g. DataParallel).")
        self.data = data
        self.strategy = None
        self.distribution = distribution
        self.exclude = tuple(exclude)
        self.print = printer
        self.optimizer, self.learning_rate = optimizer, learning_rate
        self.loss, self.metrics = loss, metrics
        self.verbose = verbose
        self.user_callbacks = list(callbacks)
        self.steps_per_execution = steps_per_execution
        self.jit_compile = jit_compile
        self.strict = strict
        self.log = records_lib.RoundLog()
        self.summary, self.warnings = {}, []
        self._temporary = tempfile.TemporaryDirectory(prefix="tf_unilth_k3_")
        self._epoch_started = None
        self._good = None
        self.in_fit = False
        self.board = None
        if log_dir is not None:
            self.board = keras.callbacks.TensorBoard(log_dir, update_freq="epoch")
        self.print(f"Execution: Keras {keras.__version__} on {keras.backend.backend()}, "
                   f"{self._spe()} steps per call, jit_compile={jit_compile}.")

    def _spe(self):
        if self.steps_per_execution == AUTO:
            return max(1, min(MAX_STEPS_PER_EXECUTION, self.data.steps_per_epoch))
        return int(self.steps_per_execution)

    # -- models -------------------------------------------------------------
    def wrap(self, model, schedule_fn=None):
        return kit_lib.prune(model, schedule_fn, exclude=self.exclude)

    def compile(self, model, learning_rate=None, for_training=True):
        optimizer = make_optimizer(self.optimizer, learning_rate or self.learning_rate)
        loss = self.loss or keras.losses.SparseCategoricalCrossentropy(
            from_logits=not outputs_probabilities(model))
        model.compile(optimizer=optimizer, loss=loss, metrics=list(self.metrics or ["accuracy"]),
                      steps_per_execution=self._spe() if for_training else 1,
                      jit_compile=self.jit_compile)
        return model

    # -- training -----------------------------------------------------------
    def fit(self, model, epochs, callbacks=(), initial_epoch=0, validate=True):
        x, y = self.data.train
        cbs = [_Accounting(self), *callbacks, *self.user_callbacks]
        if self.board is not None:
            cbs.append(self.board)
        self.in_fit = True
        try:
            return model.fit(x, y, batch_size=self.data.batch_size, epochs=epochs,
                             initial_epoch=initial_epoch, shuffle=True, callbacks=cbs,
                             validation_data=self.data.validation if validate else None,
                             verbose=self.verbose if self.verbose != 1 else 2)
        finally:
            self.in_fit = False

    def evaluate(self, model, split):
        pair = getattr(self.data, split)
        if pair is None:
            return {"loss": None, "accuracy": None}
        out = model.evaluate(pair[0], pair[1], batch_size=max(self.data.batch_size, 256),
                             verbose=0, return_dict=True)
        return {"loss": float(out["loss"]), "accuracy": float(out.get(
            "accuracy", out.get("compile_metrics", {}).get("accuracy", float("nan"))))}

    def removal(self, model, selector, rates):
        batch = self.batch() if selector.needs_gradients else None
        return kit_lib.choose(model, selector, rates, batch)

    def batch(self):
        x, y = self.data.train
        return x[:self.data.batch_size], y[:self.data.batch_size]

    def checkpoint_dir(self, name):
        path = os.path.join(self._temporary.name, name)
        os.makedirs(path, exist_ok=True)
        return path

    # -- records ------------------------------------------------------------
    @property
    def rounds(self):
        return self.log.rounds

    @property
    def epochs(self):
        return self.log.epochs

    @property
    def steps(self):
        return self.log.steps

    @property
    def seconds(self):
        running = 0.0 if self._epoch_started is None else time.perf_counter() - \
            self._epoch_started
        return self.log.seconds + running

    def record_round(self, model, round_index, epochs=None, steps=None, seconds=None,
                     **extra):
        sparsity = kit_lib.sparsity(model) if kit_lib.wrappers(model) else 0.0
        record = self.log.make(round_index, float(sparsity), self.evaluate(model, "validation"),
                               self.evaluate(model, "test"), epochs, steps, seconds, **extra)
        self.log.rounds.append(record)
        self._check_collapse(model, record)
        self.print(records_lib.format_round(record))
        return record

    def info(self, **values):
        self.summary.update(values)
        return self.summary

    def event(self, name, value=1.0):
        """An event of the method (kept in the summary's events; no step-level
        TensorBoard scalar on Keras 3)."""
        self.summary.setdefault("events", []).append({"name": name, "value": value,
                                                      "step": self.log.steps})

    def warn(self, message, flag):
        self.warnings.append({"flag": flag, "message": message})
        self.print(f"WARNING: {message}")
        if self.strict:
            raise DegenerateTicket(f"{message} (strict: the search stops here)")

    def _check_collapse(self, model, record):
        if kit_lib.wrappers(model):
            for key in kit_lib.get_masks(model).empty_layers():
                self.warn(f"round {record['round']}: layer {key} has no surviving weight "
                          "(it outputs a constant)", "layer_emptied")
        classes = int(model.outputs[0].shape[-1] or 0)
        accuracy = record["val_accuracy"]
        if classes > 1 and accuracy is not None and accuracy <= 1.0 / classes + CHANCE_MARGIN:
            self.warn(f"round {record['round']}: validation accuracy {accuracy:.2%} is at "
                      f"chance for {classes} classes (the network collapsed)", "chance_accuracy")
        elif classes > 1 and accuracy is not None and accuracy < 0.5 and self.loss is None \
                and record.get("val_loss") is not None and abs(
                    record["val_loss"] - math.log(classes)) <= CHANCE_LOSS_FRACTION * math.log(
                        classes):
            self.warn(f"round {record['round']}: validation loss {record['val_loss']:.4g} is "
                      f"that of a uniform prediction over {classes} classes: the network "
                      "collapsed", "chance_loss")

    def cleanup(self):
        self._temporary.cleanup()
