"""Registry of the networks of the lottery-ticket literature, as tf_keras models.

Every network is a functional `tf_keras` Model named after its registry key,
ending in a logits layer named ``"output"`` (no softmax): lottery-ticket pruning
prunes the output layer at half the rate of the others and finds it by name.

Built-in networks:

* ``lenet300_100`` -- LeCun et al. 1998 fully-connected net, as used by
  Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019 (MNIST).
* ``conv2``, ``conv4``, ``conv6`` -- the VGG-like CIFAR-10 nets of Frankle &
  Carbin 2019, Fig. 2.
* ``resmlp`` -- a residual MLP (ours, for the second model family of issue
  #16): Dense 256, two residual blocks of Dense 256 relu -> Dense 256 plus the
  identity, relu, then the logits.
* ``resnet20`` -- the CIFAR ResNet of He et al., "Deep Residual Learning",
  CVPR 2016 (OpenLTH's ``cifar_resnet_20``).
* ``vgg16`` -- the CIFAR VGG-16 of OpenLTH (``cifar_vgg_16``; Simonyan &
  Zisserman 2015 with batch norm), used by Frankle et al., "Linear Mode
  Connectivity and the Lottery Ticket Hypothesis", ICML 2020.

Any input shape and number of classes is accepted. Pooling rule: every 2x2 max
pool and every stride-2 convolution uses ``'same'`` padding, so a spatial size
``n`` becomes ``ceil(n / 2)``: identical to the papers' ``'valid'`` pools for
the even sizes of MNIST/CIFAR, and never below 1 pixel for small inputs (a
1-pixel map stays 1 pixel). ResNet-20 and VGG-16 end in global average pooling,
so their parameter counts do not depend on the spatial size.

Seeding: ``build(..., seed=s)`` gives every randomly initialised layer its own
initializer object seeded with ``(s * 1000 + k) % 2**31`` (``k`` = index of that
layer among the randomly initialised ones), so two builds with the same seed are
identical and the global TensorFlow RNG is left untouched. ``seed=None`` draws
a fresh random initialisation.

Your own networks: pass any tf_keras Sequential/functional model to the rest of
tf_unilth directly, or register a builder here::

    @tf_unilth.models.register("my_net")
    def my_net(input_shape, num_classes, initializer_seed):
        ...  # return a tf_keras Model whose logits layer is named "output"
"""

import numbers

from tf_unilth._compat import built_input, check_model, keras, rename_layer

__all__ = ["register", "names", "build", "count_params"]

OUTPUT_LAYER = "output"

_REGISTRY = {}

# OpenLTH is written in PyTorch: BatchNorm2d(momentum=0.1, eps=1e-5) is Keras
# BatchNormalization(momentum=0.9, epsilon=1e-5).
_BN_KWARGS = dict(momentum=0.9, epsilon=1e-5)


# --------------------------------------------------------------------- registry
def register(name):
    """Decorator registering `fn(input_shape, num_classes, initializer_seed)`
    (returning a tf_keras Model) under `name`, so `build(name, ...)` finds it."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"A model name must be a non-empty string, got {name!r}.")

    def decorator(fn):
        if not callable(fn):
            raise ValueError(f"register({name!r}) must decorate a function, got {fn!r}.")
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not fn:
            raise ValueError(
                f"A model named {name!r} is already registered; pick another name."
            )
        _REGISTRY[name] = fn
        return fn

    return decorator


def names():
    """Sorted tuple of the registered model names."""
    return tuple(sorted(_REGISTRY))


def build(name, input_shape, num_classes, seed=None):
    """Builds the registered network `name` as a tf_keras functional Model
    named `name`, for inputs of `input_shape` (without the batch axis) and
    `num_classes` logits. `seed` (int) makes the initialisation reproducible;
    None gives a random one."""
    if name not in _REGISTRY:
        raise ValueError(
            f"Unknown model {name!r}. Known models: {', '.join(names())}. You can "
            "also pass any tf_keras Sequential/functional model of your own "
            "instead, or register a builder with "
            '`@tf_unilth.models.register("name")`.'
        )
    input_shape = _check_input_shape(input_shape)
    num_classes = _check_num_classes(num_classes)
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
    ):
        raise ValueError(f"seed must be an int or None, got {seed!r}.")
    model = check_model(
        _REGISTRY[name](input_shape, num_classes, None if seed is None else int(seed)),
        what=f"model returned by the builder registered as {name!r}",
    )
    if OUTPUT_LAYER not in [layer.name for layer in model.layers]:
        raise ValueError(
            f"The builder registered as {name!r} returned a model without a "
            f"layer named {OUTPUT_LAYER!r}; name its logits layer "
            f"{OUTPUT_LAYER!r} (lottery-ticket pruning finds it by name)."
        )
    if model.name != name:
        rename_layer(model, name)
    return model


def count_params(model):
    """Number of trainable scalars of `model` (each variable counted once).

    This is the "number of parameters" of the papers (PyTorch's
    `sum(p.numel() for p in model.parameters())`): batch-norm moving
    statistics and tfmot pruning masks/thresholds are not counted, so a model
    has the same count before and after `prune_low_magnitude` wrapping.
    """
    model = check_model(model)
    seen, total = set(), 0
    for weight in model.trainable_weights:
        key = id(weight)
        if key not in seen:
            seen.add(key)
            total += int(weight.shape.num_elements())
    return total


# ------------------------------------------------------------------- validation
def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_input_shape(input_shape):
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) == 0:
        raise ValueError(
            "input_shape must be a non-empty tuple of positive ints without the "
            f"batch axis, e.g. (28, 28, 1) or (784,); got {input_shape!r}."
        )
    bad = [d for d in input_shape if not _is_int(d) or d < 1]
    if bad:
        raise ValueError(
            "input_shape must be a tuple of positive ints without the batch "
            f"axis, e.g. (28, 28, 1) or (784,); got {tuple(input_shape)!r} "
            f"(bad entries: {bad!r})."
        )
    return tuple(int(d) for d in input_shape)


def _check_num_classes(num_classes):
    if not _is_int(num_classes) or num_classes < 2:
        raise ValueError(
            f"num_classes must be an int >= 2 (the number of logits), got "
            f"{num_classes!r}."
        )
    return int(num_classes)


def _check_image_shape(name, input_shape):
    if len(input_shape) != 3:
        raise ValueError(
            f"{name} is a convolutional network and needs an image input_shape "
            f"(height, width, channels), e.g. (32, 32, 3) or (28, 28, 1); got "
            f"{input_shape!r}."
        )


# ----------------------------------------------------------------- initializers
class _Seeds:
    """Hands out one fresh initializer object per layer, seeded with
    `(seed * 1000 + k) % 2**31` for the k-th randomly initialised layer, or
    unseeded (random) when `seed` is None. Fresh objects also avoid tf_keras's
    "unseeded initializer reused" pitfall."""

    def __init__(self, seed):
        self.seed = seed
        self.index = 0

    def _next(self):
        if self.seed is None:
            return None
        derived = (self.seed * 1000 + self.index) % (2**31)
        self.index += 1
        return derived

    def glorot_normal(self):
        return keras.initializers.GlorotNormal(seed=self._next())

    def he_normal(self):
        return keras.initializers.HeNormal(seed=self._next())


def _zeros():
    return keras.initializers.Zeros()


def _pool(name):
    return keras.layers.MaxPooling2D(2, strides=2, padding="same", name=name)


# ---------------------------------------------------------------------- networks
@register("lenet300_100")
def lenet300_100(input_shape, num_classes, initializer_seed):
    """LeNet-300-100 (LeCun et al. 1998), Frankle & Carbin 2019's MNIST net:
    Flatten, Dense 300 relu, Dense 100 relu, Dense logits. Glorot normal,
    zero biases. 266,610 parameters for (28, 28, 1) and 10 classes."""
    seeds = _Seeds(initializer_seed)
    inputs = keras.Input(shape=input_shape, name="input")
    x = keras.layers.Flatten(name="flatten")(inputs)
    outputs = _fully_connected_head(x, (300, 100), num_classes, seeds)
    return keras.Model(inputs, outputs, name="lenet300_100")


def _fully_connected_head(x, widths, num_classes, seeds):
    """Dense relu layers fc1.. of `widths`, then the logits layer 'output'
    (Glorot normal, zero biases), as in Frankle & Carbin's networks."""
    for i, units in enumerate(widths, start=1):
        x = keras.layers.Dense(
            units, activation="relu", kernel_initializer=seeds.glorot_normal(),
            bias_initializer=_zeros(), name=f"fc{i}",
        )(x)
    return keras.layers.Dense(
        num_classes, kernel_initializer=seeds.glorot_normal(),
        bias_initializer=_zeros(), name=OUTPUT_LAYER,
    )(x)


def _frankle_carbin_conv(name, plan, input_shape, num_classes, initializer_seed):
    """Conv-2/4/6 of Frankle & Carbin 2019 (Fig. 2): 3x3 'same' conv + relu
    following `plan` ('M' = 2x2 max pool), then Dense 256, 256 (relu) and the
    logits. Glorot normal, zero biases."""
    _check_image_shape(name, input_shape)
    seeds = _Seeds(initializer_seed)
    inputs = keras.Input(shape=input_shape, name="input")
    x, n_conv, n_pool = inputs, 0, 0
    for spec in plan:
        if spec == "M":
            n_pool += 1
            x = _pool(f"pool{n_pool}")(x)
        else:
            n_conv += 1
            x = keras.layers.Conv2D(
                spec, 3, padding="same", activation="relu",
                kernel_initializer=seeds.glorot_normal(),
                bias_initializer=_zeros(), name=f"conv{n_conv}",
            )(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = _fully_connected_head(x, (256, 256), num_classes, seeds)
    return keras.Model(inputs, outputs, name=name)


@register("conv2")
def conv2(input_shape, num_classes, initializer_seed):
    """Conv-2 (Frankle & Carbin 2019): 64, 64, pool; FC 256, 256, logits.
    4,301,642 parameters on CIFAR-10."""
    return _frankle_carbin_conv(
        "conv2", (64, 64, "M"), input_shape, num_classes, initializer_seed
    )


@register("conv4")
def conv4(input_shape, num_classes, initializer_seed):
    """Conv-4 (Frankle & Carbin 2019): 64, 64, pool, 128, 128, pool; FC 256,
    256, logits. 2,425,930 parameters on CIFAR-10."""
    return _frankle_carbin_conv(
        "conv4", (64, 64, "M", 128, 128, "M"), input_shape, num_classes,
        initializer_seed,
    )


@register("conv6")
def conv6(input_shape, num_classes, initializer_seed):
    """Conv-6 (Frankle & Carbin 2019): 64, 64, pool, 128, 128, pool, 256, 256,
    pool; FC 256, 256, logits. 2,262,602 parameters on CIFAR-10."""
    return _frankle_carbin_conv(
        "conv6", (64, 64, "M", 128, 128, "M", 256, 256, "M"), input_shape,
        num_classes, initializer_seed,
    )


def _conv_bn(x, filters, kernel_size, strides, seeds, conv_name, bn_name):
    """Bias-free 'same' conv (He normal) + batch norm, as in OpenLTH's ResNets."""
    x = keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=False,
        kernel_initializer=seeds.he_normal(), name=conv_name,
    )(x)
    return keras.layers.BatchNormalization(name=bn_name, **_BN_KWARGS)(x)


@register("resnet20")
def resnet20(input_shape, num_classes, initializer_seed):
    """ResNet-20 for CIFAR (He et al. 2016; OpenLTH's cifar_resnet_20).

    conv3x3 16 + BN + relu, then 3 stages x 3 basic blocks of 16/32/64 filters
    (stride 2 in the first block of stages 2 and 3; shortcut = 1x1 conv + BN
    when the shape changes, identity otherwise), global average pooling and
    the logits. Convs have no bias; He normal init. 272,474 parameters on
    CIFAR-10. Layers are named `stem_*`, `stage{s}_block{b}_{conv1,bn1,relu1,
    conv2,bn2,shortcut_conv,shortcut_bn,add,relu2}`, `avgpool`, `output`.
    """
    _check_image_shape("resnet20", input_shape)
    seeds = _Seeds(initializer_seed)
    inputs = keras.Input(shape=input_shape, name="input")
    x = _conv_bn(inputs, 16, 3, 1, seeds, "stem_conv", "stem_bn")
    x = keras.layers.ReLU(name="stem_relu")(x)
    filters_in = 16
    for stage, filters in enumerate((16, 32, 64), start=1):
        for block in range(1, 4):
            prefix = f"stage{stage}_block{block}_"
            strides = 2 if (stage > 1 and block == 1) else 1
            y = _conv_bn(x, filters, 3, strides, seeds, prefix + "conv1", prefix + "bn1")
            y = keras.layers.ReLU(name=prefix + "relu1")(y)
            y = _conv_bn(y, filters, 3, 1, seeds, prefix + "conv2", prefix + "bn2")
            if strides != 1 or filters != filters_in:
                shortcut = _conv_bn(
                    x, filters, 1, strides, seeds,
                    prefix + "shortcut_conv", prefix + "shortcut_bn",
                )
            else:
                shortcut = x
            x = keras.layers.Add(name=prefix + "add")([y, shortcut])
            x = keras.layers.ReLU(name=prefix + "relu2")(x)
            filters_in = filters
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    outputs = keras.layers.Dense(
        num_classes, kernel_initializer=seeds.he_normal(),
        bias_initializer=_zeros(), name=OUTPUT_LAYER,
    )(x)
    return keras.Model(inputs, outputs, name="resnet20")


@register("vgg16")
def vgg16(input_shape, num_classes, initializer_seed):
    """VGG-16 for CIFAR (OpenLTH's cifar_vgg_16; Simonyan & Zisserman 2015).

    conv3x3 (with bias) + BN + relu with filters 64, 64, M, 128, 128, M, 256,
    256, 256, M, 512, 512, 512, M, 512, 512, 512 (M = 2x2 max pool), global
    average pooling (OpenLTH's final 2x2 average pool on CIFAR) and a single
    Dense logits layer. He normal init. 14,728,266 parameters on CIFAR-10.
    Layers are named `block{b}_conv{i}`, `block{b}_bn{i}`, `block{b}_relu{i}`,
    `block{b}_pool`, `avgpool`, `output`.
    """
    _check_image_shape("vgg16", input_shape)
    seeds = _Seeds(initializer_seed)
    plan = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    for block, filters_list in enumerate(plan, start=1):
        if block > 1:
            x = _pool(f"block{block - 1}_pool")(x)
        for i, filters in enumerate(filters_list, start=1):
            x = keras.layers.Conv2D(
                filters, 3, padding="same", kernel_initializer=seeds.he_normal(),
                bias_initializer=_zeros(), name=f"block{block}_conv{i}",
            )(x)
            x = keras.layers.BatchNormalization(
                name=f"block{block}_bn{i}", **_BN_KWARGS
            )(x)
            x = keras.layers.ReLU(name=f"block{block}_relu{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    outputs = keras.layers.Dense(
        num_classes, kernel_initializer=seeds.he_normal(),
        bias_initializer=_zeros(), name=OUTPUT_LAYER,
    )(x)
    return keras.Model(inputs, outputs, name="vgg16")


@register("resmlp")
def resmlp(input_shape, num_classes, initializer_seed):
    """A residual MLP (ours; issue #16's second model family): Flatten, Dense
    256 relu (`fc_in`), two residual blocks `block{b}` of `block{b}_fc1`
    (Dense 256 relu) -> `block{b}_fc2` (Dense 256) + the block's input
    (`block{b}_add`), relu (`block{b}_relu`), then the logits `output`. Glorot
    normal, zero biases. 466,698 parameters for (28, 28, 1) and 10 classes."""
    seeds = _Seeds(initializer_seed)
    width = 256
    inputs = keras.Input(shape=input_shape, name="input")
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = keras.layers.Dense(
        width, activation="relu", kernel_initializer=seeds.glorot_normal(),
        bias_initializer=_zeros(), name="fc_in",
    )(x)
    for block in (1, 2):
        prefix = f"block{block}_"
        y = keras.layers.Dense(
            width, activation="relu", kernel_initializer=seeds.glorot_normal(),
            bias_initializer=_zeros(), name=prefix + "fc1",
        )(x)
        y = keras.layers.Dense(
            width, kernel_initializer=seeds.glorot_normal(),
            bias_initializer=_zeros(), name=prefix + "fc2",
        )(y)
        x = keras.layers.Add(name=prefix + "add")([x, y])
        x = keras.layers.ReLU(name=prefix + "relu")(x)
    outputs = keras.layers.Dense(
        num_classes, kernel_initializer=seeds.glorot_normal(),
        bias_initializer=_zeros(), name=OUTPUT_LAYER,
    )(x)
    return keras.Model(inputs, outputs, name="resmlp")


# ------------------------------------------------------- subclassed models
def functional(model, input_shape=None, dtype=None):
    """A functional model `keras.Model(inputs, model(inputs))` around a
    subclassed tf_keras model (the same object: weights shared), so that
    tfmot's wrapping, which rebuilds a model's graph, has a graph to rebuild.
    The input shape is `input_shape` (without the batch axis) or the one the
    model was built with; Sequential/functional models are returned as they are."""
    check_model(model)
    if isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False):
        return model
    built, built_dtype = built_input(model)
    if input_shape is None:
        if built is None or isinstance(built, (list, dict)) or (
                isinstance(built, tuple) and built and isinstance(built[0], (list, tuple))):
            raise ValueError(
                f"Model {model.name!r} ({type(model).__name__}) is a subclassed tf_keras model "
                "with no known single input shape: call it once on a batch (model(x[:1])) "
                "or build it (model.build((None, ...))) before pruning it, or rebuild it "
                "with the functional API (keras.Model(inputs, outputs)).")
        input_shape = tuple(built)[1:]
    dtype = dtype or built_dtype or "float32"
    inputs = keras.Input(tuple(input_shape), dtype=dtype, name=f"{model.name}_input")
    try:
        outputs = model(inputs)
    except Exception as error:  # the user's call() on a symbolic input
        raise ValueError(
            f"Model {model.name!r} ({type(model).__name__}) is a subclassed tf_keras model "
            f"whose call() does not run on a symbolic input ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); rebuild it with the "
            "functional API (keras.Model(inputs, outputs)).") from error
    return keras.Model(inputs, outputs, name=f"{model.name}_functional")
