"""The registry's paper networks built with Keras 3 (same layers, names and
seeded initializers as `tf_unilth.models`): lenet300_100, conv2, conv4, conv6.
`copy_weights(tf_keras_model, keras3_model)` gives a Keras 3 twin the same
initial weights (layer by layer, by name), for equivalence runs."""

from tf_unilth.keras3._compat import keras

OUTPUT_LAYER = "output"


class _Seeds:
    """As tf_unilth.models._Seeds: the k-th initialised layer gets (seed*1000+k) % 2**31."""

    def __init__(self, seed):
        self.seed, self.index = seed, 0

    def glorot_normal(self):
        if self.seed is None:
            return keras.initializers.GlorotNormal()
        derived = (self.seed * 1000 + self.index) % (2 ** 31)
        self.index += 1
        return keras.initializers.GlorotNormal(seed=derived)


def _head(x, widths, num_classes, seeds):
    for i, units in enumerate(widths, start=1):
        x = keras.layers.Dense(units, activation="relu", kernel_initializer=seeds.glorot_normal(),
                               bias_initializer="zeros", name=f"fc{i}")(x)
    return keras.layers.Dense(num_classes, kernel_initializer=seeds.glorot_normal(),
                              bias_initializer="zeros", name=OUTPUT_LAYER)(x)


def lenet300_100(input_shape=(28, 28, 1), num_classes=10, seed=None):
    seeds = _Seeds(seed)
    inputs = keras.Input(shape=input_shape, name="input")
    x = keras.layers.Flatten(name="flatten")(inputs)
    return keras.Model(inputs, _head(x, (300, 100), num_classes, seeds), name="lenet300_100")


def _conv(name, plan, input_shape, num_classes, seed):
    seeds = _Seeds(seed)
    inputs = keras.Input(shape=input_shape, name="input")
    x, n_conv, n_pool = inputs, 0, 0
    for spec in plan:
        if spec == "M":
            n_pool += 1
            x = keras.layers.MaxPooling2D(2, strides=2, padding="same", name=f"pool{n_pool}")(x)
        else:
            n_conv += 1
            x = keras.layers.Conv2D(spec, 3, padding="same", activation="relu",
                                    kernel_initializer=seeds.glorot_normal(),
                                    bias_initializer="zeros", name=f"conv{n_conv}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, _head(x, (256, 256), num_classes, seeds), name=name)


def conv2(input_shape=(32, 32, 3), num_classes=10, seed=None):
    return _conv("conv2", (64, 64, "M"), input_shape, num_classes, seed)


def conv4(input_shape=(32, 32, 3), num_classes=10, seed=None):
    return _conv("conv4", (64, 64, "M", 128, 128, "M"), input_shape, num_classes, seed)


def conv6(input_shape=(32, 32, 3), num_classes=10, seed=None):
    return _conv("conv6", (64, 64, "M", 128, 128, "M", 256, 256, "M"), input_shape,
                 num_classes, seed)


BUILDERS = {"lenet300_100": lenet300_100, "conv2": conv2, "conv4": conv4, "conv6": conv6}


def build(name, input_shape, num_classes, seed=None):
    if name not in BUILDERS:
        raise ValueError(f"No Keras 3 builder for model {name!r}; known: {sorted(BUILDERS)} "
                         "(or pass your own Keras 3 model).")
    return BUILDERS[name](tuple(input_shape), int(num_classes), seed)


def copy_weights(source, target):
    """Copies each layer's weights from `source` (any Keras) to the layer of
    `target` with the same name; returns `target`."""
    for layer in target.layers:
        values = source.get_layer(layer.name).get_weights()
        if values:
            layer.set_weights(values)
    return target
