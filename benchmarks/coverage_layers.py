"""The custom classes of benchmarks/model_coverage.py, importing tf_keras only
(the ticket round trip loads them in a process without tf_unilth)."""

import tensorflow as tf
import tf_keras as keras

try:
    from tensorflow_model_optimization.sparsity.keras import PrunableLayer
except ImportError:  # the round-trip process may lack tfmot: the layer still loads
    PrunableLayer = object

L = keras.layers


@keras.utils.register_keras_serializable(package="coverage")
class Sub(keras.Model):
    """A subclassed model whose layers are attributes."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.fc = L.Dense(32, activation="relu", name="fc")
        self.out = L.Dense(3, name="out")

    def call(self, x):
        return self.out(self.fc(x))

    def get_config(self):
        return {"name": self.name}


@keras.utils.register_keras_serializable(package="coverage")
class PrunableDense(L.Layer, PrunableLayer):
    """A custom layer naming its prunable weight (tfmot's PrunableLayer)."""

    def __init__(self, units=16, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight("w", (input_shape[-1], self.units))
        self.b = self.add_weight("b", (self.units,), initializer="zeros")

    def call(self, x):
        return tf.nn.relu(tf.matmul(x, self.w) + self.b)

    def get_prunable_weights(self):
        return [self.w]

    def get_config(self):
        return {**super().get_config(), "units": self.units}
