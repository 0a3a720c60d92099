"""The training loop every method shares: compile, fit, evaluate, record rounds.

A `Session` owns one ticket search: the data, how models are compiled, the
step / epoch / wall-time accounting, and the per-round records that end up in
results.json. Methods only decide *what* to train and prune; they never write
their own loop.
"""

import dataclasses
import time

import numpy as np

from tf_unilth._compat import check_model, keras, tf
from tf_unilth import data as data_lib
from tf_unilth import masks as masks_lib
from tf_unilth import wrapper as wrapper_lib

OPTIMIZERS = ("adam", "sgd", "momentum", "rmsprop")


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


def _outputs_probabilities(model):
    return getattr(model.layers[-1], "activation", None) is keras.activations.softmax


@dataclasses.dataclass
class Data:
    """Train / validation / test datasets and the number of batches per epoch."""
    train: tf.data.Dataset
    validation: tf.data.Dataset = None
    test: tf.data.Dataset = None
    steps_per_epoch: int = None

    @classmethod
    def make(cls, train, validation=None, test=None, batch_size=128, seed=0):
        """From tf.data datasets (batched) or (x, y) numpy pairs."""
        if isinstance(train, data_lib.Splits):
            return cls(train.train, train.validation, train.test, train.steps_per_epoch())
        if isinstance(train, tuple):
            splits = data_lib.from_arrays(
                train, test if test is not None else train, validation=validation,
                validation_size=0, batch_size=batch_size, seed=seed)
            return cls(splits.train, splits.validation,
                       splits.test if test is not None else None, splits.steps_per_epoch())
        if not isinstance(train, tf.data.Dataset):
            raise TypeError("train_data must be a batched tf.data.Dataset, an (x, y) "
                            f"pair of arrays or tf_unilth.data.Splits; got {type(train)}.")
        to_ds = lambda d: (data_lib.from_arrays(d, d, validation_size=0, batch_size=batch_size,  # noqa: E731
                                               shuffle=False).test if isinstance(d, tuple) else d)
        steps = int(train.cardinality().numpy())
        if steps < 0:
            raise ValueError("train_data has unknown or infinite length; give a finite, "
                             "batched dataset (e.g. without .repeat()).")
        return cls(train, to_ds(validation) if validation is not None else None,
                   to_ds(test) if test is not None else None, steps)


class Session:
    """Compiles, trains and evaluates the models of one ticket search."""

    def __init__(self, data, optimizer="adam", learning_rate=6e-4, strategy=None,
                 verbose=1, log_dir=None, printer=print, callbacks=()):
        self.data = data
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.strategy = strategy or tf.distribute.get_strategy()
        self.verbose = verbose
        self.log_dir = log_dir
        self.print = printer
        self.extra_callbacks = list(callbacks)  # the user's, added to every fit
        self.rounds = []
        self.epochs = 0
        self.steps = 0
        self.seconds = 0.0
        make_optimizer(optimizer, learning_rate)  # fail early on a bad name

    def compile(self, model, learning_rate=None):
        check_model(model)
        with self.strategy.scope():
            model.compile(
                make_optimizer(self.optimizer, learning_rate or self.learning_rate),
                keras.losses.SparseCategoricalCrossentropy(
                    from_logits=not _outputs_probabilities(model)),
                metrics=["accuracy"])
        return model

    def fit(self, model, epochs, callbacks=(), initial_epoch=0, validate=True):
        """model.fit on the training data; adds the epochs and steps it ran."""
        callbacks = list(callbacks) + self.extra_callbacks
        if self.log_dir:
            callbacks.append(keras.callbacks.TensorBoard(self.log_dir, write_graph=False,
                                                         profile_batch=0))
        start = time.perf_counter()
        history = model.fit(self.data.train, epochs=epochs, initial_epoch=initial_epoch,
                            validation_data=self.data.validation if validate else None,
                            callbacks=callbacks, verbose=self.verbose)
        ran = len(history.epoch)
        self.epochs += ran
        self.steps += ran * self.data.steps_per_epoch
        self.seconds += time.perf_counter() - start
        _check_finite(history)
        return history

    def evaluate(self, model, split):
        dataset = getattr(self.data, split)
        if dataset is None:
            return {"loss": None, "accuracy": None}
        loss, accuracy = model.evaluate(dataset, verbose=0)
        return {"loss": float(loss), "accuracy": float(accuracy)}

    def record_round(self, model, round_index, epochs=None, steps=None, seconds=None,
                     **extra):
        """Evaluates the current model and appends (and prints) a round record.

        epochs / steps / seconds are totals from the random initialization to
        the end of this round (the cost of the ticket); they default to the
        session's totals so far."""
        epochs = self.epochs if epochs is None else epochs
        steps = self.steps if steps is None else steps
        seconds = self.seconds if seconds is None else seconds
        val, test = self.evaluate(model, "validation"), self.evaluate(model, "test")
        record = {"round": round_index, "sparsity": current_sparsity(model),
                  "test_accuracy": test["accuracy"], "test_loss": test["loss"],
                  "val_accuracy": val["accuracy"], "val_loss": val["loss"],
                  "epochs": int(epochs), "train_steps": int(steps),
                  "wall_seconds": float(seconds), **extra}
        self.rounds.append(record)
        self.print(format_round(record))
        return record


def format_round(r):
    fmt = lambda v: "  n/a " if v is None else f"{100 * v:6.2f}"  # noqa: E731
    return (f"round {r['round']:2d} | sparsity {100 * r['sparsity']:6.2f}% | "
            f"val acc {fmt(r['val_accuracy'])}% | test acc {fmt(r['test_accuracy'])}% | "
            f"{r['epochs']:3d} epochs {r['train_steps']:7d} steps | {r['wall_seconds']:7.1f} s")


def current_sparsity(model):
    if not wrapper_lib.wrappers(model):
        return 0.0
    return float(masks_lib.sparsity(model))


def _check_finite(history):
    losses = history.history.get("loss", [])
    if losses and not np.all(np.isfinite(losses)):
        raise FloatingPointError(
            f"Training loss became {losses[-1]} (not finite). Lower the learning rate "
            "(or lambda_max); the last good epoch's checkpoint is kept.")
