"""Small models and data shared by the tests (fast on 2 CPU cores)."""

import os
import sys

import numpy as np

from tf_unilth._compat import keras
from tf_unilth import callbacks, schedules, wrapper


def toy_data(n=256, dim=20, classes=3, seed=0):
    """A learnable toy problem: labels from a fixed random linear map."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype("float32")
    w = rng.normal(size=(dim, classes))
    return x, np.argmax(x @ w, axis=1).astype("int64")


def toy_model(dim=20, classes=3, hidden=32, seed=0):
    init = lambda k: keras.initializers.GlorotNormal(seed=seed * 10 + k)  # noqa: E731
    inp = keras.Input((dim,))
    x = keras.layers.Dense(hidden, activation="relu", name="fc1", kernel_initializer=init(1))(inp)
    x = keras.layers.Dense(hidden, activation="relu", name="fc2", kernel_initializer=init(2))(x)
    out = keras.layers.Dense(classes, name="output", kernel_initializer=init(3))(x)
    return keras.Model(inp, out)


def compile_model(model, lr=1e-2, optimizer=None):
    model.compile(optimizer or keras.optimizers.Adam(lr),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def pruned_toy(densities=(0.5, 0.25), steps_per_round=4, seed=0, **kw):
    return wrapper.prune(toy_model(seed=seed, **kw), lambda layer: schedules.TriggeredSchedule.rounds(
        list(densities), steps_per_round=steps_per_round))


class Recorder(keras.callbacks.Callback):
    """Records masks and prunable weights after every training batch."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append([(w.numpy().copy(), m.numpy().copy())
                             for layer in wrapper.wrappers(self.model)
                             for w, m, _ in layer.pruning_vars])


class StartSchedulesAt(keras.callbacks.Callback):
    """Starts every wrapper's schedule at the end of a given epoch."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            step = callbacks.current_step(self.model)
            for layer in wrapper.wrappers(self.model):
                layer.pruning_schedule.start(step)


def load_benchmark(name):
    """benchmarks/<name>.py as a module, once per process (as `import name`
    would: a benchmark that defines absl flags cannot be executed twice)."""
    benchmarks = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "benchmarks")
    if benchmarks not in sys.path:
        sys.path.insert(0, benchmarks)
    return __import__(name)
