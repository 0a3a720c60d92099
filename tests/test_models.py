"""Tests for tf_unilth.models: the lottery-ticket network registry."""

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot
import tf_keras
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import (
    PruneLowMagnitude,
)

from tf_unilth import models
from tf_unilth._compat import keras, tf

ALL = ("conv2", "conv4", "conv6", "lenet300_100", "resmlp", "resnet20", "vgg16")
MNIST, CIFAR = (28, 28, 1), (32, 32, 3)


# ----------------------------------------------------- independent param formulas
def dense(n_in, n_out):
    return n_in * n_out + n_out


def conv(c_in, c_out, k=3, bias=True):
    return k * k * c_in * c_out + (c_out if bias else 0)


def bn(c):  # trainable gamma + beta
    return 2 * c


def frankle_carbin_conv(plan, shape, classes):
    h, w, c = shape
    total = 0
    for spec in plan:
        if spec == "M":
            h, w = -(-h // 2), -(-w // 2)  # 'same' pool: ceil(n / 2)
        else:
            total += conv(c, spec)
            c = spec
    return total + dense(h * w * c, 256) + dense(256, 256) + dense(256, classes)


def resnet20_formula(channels, classes):
    total = conv(channels, 16, bias=False) + bn(16)
    f_in = 16
    for f in (16, 32, 64):
        for _ in range(3):
            total += conv(f_in, f, bias=False) + bn(f) + conv(f, f, bias=False) + bn(f)
            if f != f_in:
                total += conv(f_in, f, k=1, bias=False) + bn(f)
            f_in = f
    return total + dense(64, classes)


def resmlp_formula(n_in, classes, width=256):
    # fc_in, 2 blocks of two Dense(width, width), the logits.
    return dense(n_in, width) + 2 * 2 * dense(width, width) + dense(width, classes)


def vgg16_formula(channels, classes):
    total, c = 0, channels
    for f in (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512):
        total += conv(c, f) + bn(f)
        c = f
    return total + dense(512, classes)


PLANS = {
    "conv2": (64, 64, "M"),
    "conv4": (64, 64, "M", 128, 128, "M"),
    "conv6": (64, 64, "M", 128, 128, "M", 256, 256, "M"),
}

# Hard-coded exact counts (trainable parameters), computed by hand.
EXPECTED = {
    ("lenet300_100", MNIST, 10): 266_610,
    ("lenet300_100", CIFAR, 10): 953_010,
    ("lenet300_100", CIFAR, 100): 962_100,
    ("conv2", MNIST, 10): 3_317_450,
    ("conv2", CIFAR, 10): 4_301_642,
    ("conv2", CIFAR, 100): 4_324_772,
    ("conv4", MNIST, 10): 1_933_258,
    ("conv4", CIFAR, 10): 2_425_930,
    ("conv6", MNIST, 10): 2_261_450,
    ("conv6", CIFAR, 10): 2_262_602,
    ("resmlp", MNIST, 10): 466_698,
    ("resmlp", CIFAR, 10): 1_052_426,
    ("resmlp", CIFAR, 100): 1_075_556,
    ("resnet20", MNIST, 10): 272_186,
    ("resnet20", CIFAR, 10): 272_474,
    ("resnet20", CIFAR, 100): 278_324,
    ("vgg16", MNIST, 10): 14_727_114,
    ("vgg16", CIFAR, 10): 14_728_266,
    ("vgg16", CIFAR, 100): 14_774_436,
}

# Papers' approximate CIFAR-10 sizes, in millions, as printed (rounded).
APPROX_CIFAR10_M = {
    "conv2": "4.3",
    "conv4": "2.4",
    "conv6": "2.26",
    "resnet20": "0.27",
    "vgg16": "14.7",
}


def test_lenet_count_from_formula():
    assert dense(28 * 28 * 1, 300) + dense(300, 100) + dense(100, 10) == 266_610
    assert EXPECTED[("lenet300_100", MNIST, 10)] == 266_610


def test_hard_coded_counts_agree_with_formulas():
    for (name, shape, classes), n in EXPECTED.items():
        if name == "lenet300_100":
            f = dense(int(np.prod(shape)), 300) + dense(300, 100) + dense(100, classes)
        elif name in PLANS:
            f = frankle_carbin_conv(PLANS[name], shape, classes)
        elif name == "resmlp":
            f = resmlp_formula(int(np.prod(shape)), classes)
        elif name == "resnet20":
            f = resnet20_formula(shape[-1], classes)
        else:
            f = vgg16_formula(shape[-1], classes)
        assert f == n, (name, shape, classes)
    for name, approx in APPROX_CIFAR10_M.items():
        n = EXPECTED[(name, CIFAR, 10)]
        decimals = len(approx.split(".")[1])
        assert f"{n / 1e6:.{decimals}f}" == approx, (name, n, approx)


def test_names():
    assert models.names() == ALL
    assert isinstance(models.names(), tuple)


def test_every_model_has_two_shapes_and_one_100_class_case():
    for name in ALL:
        shapes = {(s, c) for (n, s, c) in EXPECTED if n == name}
        assert {(MNIST, 10), (CIFAR, 10)} <= shapes
    assert any(c == 100 for (_, _, c) in EXPECTED)


def _bn_channels(model):
    return sum(
        l.gamma.shape[0] for l in model.layers
        if isinstance(l, keras.layers.BatchNormalization)
    )


@pytest.mark.parametrize("name,shape,classes", sorted(EXPECTED))
def test_build_count_and_forward(name, shape, classes):
    model = models.build(name, shape, classes, seed=0)
    assert isinstance(model, tf_keras.Model)
    assert model.name == name
    assert models.count_params(model) == EXPECTED[(name, shape, classes)]
    # Keras' own count adds only the BN moving mean/variance.
    assert model.count_params() == EXPECTED[(name, shape, classes)] + 2 * _bn_channels(model)
    out = model.layers[-1]
    assert out.name == "output" and isinstance(out, keras.layers.Dense)
    assert out.units == classes and out.activation is keras.activations.linear
    x = np.random.default_rng(0).random((2,) + shape, dtype=np.float32)
    y = model(x, training=False).numpy()
    assert y.shape == (2, classes) and np.all(np.isfinite(y))


def test_lenet_flat_input():
    model = models.build("lenet300_100", (784,), 10, seed=0)
    assert models.count_params(model) == 266_610
    assert model(np.zeros((3, 784), np.float32)).shape == (3, 10)


@pytest.mark.parametrize("name", ["conv6", "resnet20", "vgg16"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 7, 2)])
def test_small_inputs_do_not_collapse(name, shape):
    model = models.build(name, shape, 3, seed=0)
    for layer in model.layers:
        if isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.Conv2D)):
            assert min(layer.output_shape[1:3]) >= 1, layer.name
    assert model(np.ones((2,) + shape, np.float32)).shape == (2, 3)


def test_pool_rule_is_ceil_half():
    model = models.build("conv6", (7, 7, 1), 10, seed=0)
    sizes = [model.get_layer(f"pool{i}").output_shape[1:3] for i in (1, 2, 3)]
    assert sizes == [(4, 4), (2, 2), (1, 1)]


def test_layer_names():
    lenet = models.build("lenet300_100", MNIST, 10, seed=0)
    assert [l.name for l in lenet.layers if isinstance(l, keras.layers.Dense)] == [
        "fc1", "fc2", "output"]
    conv6 = models.build("conv6", CIFAR, 10, seed=0)
    assert [l.name for l in conv6.layers
            if isinstance(l, (keras.layers.Conv2D, keras.layers.Dense))] == [
        "conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "fc1", "fc2", "output"]
    resnet = models.build("resnet20", CIFAR, 10, seed=0)
    convs = [l.name for l in resnet.layers if isinstance(l, keras.layers.Conv2D)]
    assert len(convs) == 1 + 18 + 2  # stem, 9 blocks x 2, 2 shortcuts
    assert convs[0] == "stem_conv"
    assert "stage2_block1_shortcut_conv" in convs and "stage3_block3_conv2" in convs
    assert not any(l.use_bias for l in resnet.layers if isinstance(l, keras.layers.Conv2D))
    assert resnet.get_layer("stage2_block1_conv1").strides == (2, 2)


def _random_kernels(model):
    return [l.kernel.numpy() for l in model.layers
            if isinstance(l, (keras.layers.Conv2D, keras.layers.Dense))]


@pytest.mark.parametrize("name", ALL)
def test_seeded_init_reproducible(name):
    shape = (8, 8, 3)  # small: the seeding logic does not depend on the size
    a = models.build(name, shape, 10, seed=1)
    b = models.build(name, shape, 10, seed=1)
    c = models.build(name, shape, 10, seed=2)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    for ka, kc in zip(_random_kernels(a), _random_kernels(c)):
        assert not np.array_equal(ka, kc)
    # Different layers of one build get different seeds (no repeated values).
    ka = _random_kernels(a)
    assert not np.array_equal(ka[-1].ravel()[:5], ka[-2].ravel()[:5])
    # Biases start at zero.
    for layer in a.layers:
        if getattr(layer, "use_bias", False) and hasattr(layer, "bias"):
            assert not np.any(layer.bias.numpy())


def test_unseeded_init_is_random():
    a = models.build("conv2", (8, 8, 3), 10)
    b = models.build("conv2", (8, 8, 3), 10)
    for ka, kb in zip(_random_kernels(a), _random_kernels(b)):
        assert not np.array_equal(ka, kb)


def test_initializer_scales():
    model = models.build("lenet300_100", MNIST, 10, seed=3)
    k = model.get_layer("fc1").kernel.numpy()
    assert abs(k.std() - np.sqrt(2.0 / (784 + 300))) < 0.1 * np.sqrt(2.0 / (784 + 300))
    resnet = models.build("resnet20", CIFAR, 10, seed=3)
    k = resnet.get_layer("stage3_block3_conv2").kernel.numpy()
    he = np.sqrt(2.0 / (3 * 3 * 64))
    assert abs(k.std() - he) < 0.1 * he


def test_seeded_build_leaves_global_rng_alone():
    tf.random.set_seed(123)
    expected = tf.random.uniform([5]).numpy()
    tf.random.set_seed(123)
    models.build("resnet20", CIFAR, 10, seed=7)
    np.testing.assert_array_equal(tf.random.uniform([5]).numpy(), expected)


def test_unknown_name():
    with pytest.raises(ValueError) as info:
        models.build("resnet18", CIFAR, 10)
    msg = str(info.value)
    assert "resnet18" in msg
    for name in ALL:
        assert name in msg
    assert "Sequential/functional" in msg
    assert '@tf_unilth.models.register("name")' in msg


@pytest.mark.parametrize("classes", [1, 0, -3, 2.5, True, "10", None])
def test_bad_num_classes(classes):
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        models.build("lenet300_100", MNIST, classes)


@pytest.mark.parametrize("shape", [
    (28, 28, 0), (-1,), (), [], "28", None, 784, (28.0, 28, 1), (28, True, 1)])
def test_bad_input_shape(shape):
    with pytest.raises(ValueError, match="input_shape must be"):
        models.build("lenet300_100", shape, 10)


@pytest.mark.parametrize("name", ["conv2", "resnet20", "vgg16"])
def test_conv_nets_need_image_shape(name):
    with pytest.raises(ValueError, match=r"\(height, width, channels\)"):
        models.build(name, (784,), 10)


def test_bad_seed():
    with pytest.raises(ValueError, match="seed must be an int or None"):
        models.build("lenet300_100", MNIST, 10, seed="1")


def test_list_shape_accepted():
    model = models.build("lenet300_100", [28, 28, 1], 10, seed=0)
    assert models.count_params(model) == 266_610


@pytest.fixture
def scratch_registry():
    before = dict(models._REGISTRY)
    yield
    models._REGISTRY.clear()
    models._REGISTRY.update(before)


def test_register_custom_model(scratch_registry):
    @models.register("tiny")
    def tiny(input_shape, num_classes, initializer_seed):
        inputs = keras.Input(shape=input_shape)
        x = keras.layers.Flatten()(inputs)
        out = keras.layers.Dense(
            num_classes, name="output",
            kernel_initializer=keras.initializers.GlorotNormal(seed=initializer_seed),
        )(x)
        return keras.Model(inputs, out, name="whatever")

    assert "tiny" in models.names()
    model = models.build("tiny", (4,), 3, seed=5)
    assert model.name == "tiny" and models.count_params(model) == 15
    np.testing.assert_array_equal(
        model.get_weights()[0], models.build("tiny", (4,), 3, seed=5).get_weights()[0])
    with pytest.raises(ValueError, match="already registered"):
        models.register("tiny")(lambda *a: None)
    with pytest.raises(ValueError, match="already registered"):
        models.register("conv2")(tiny)

    @models.register("no_output")
    def no_output(input_shape, num_classes, initializer_seed):
        return keras.Sequential([keras.Input(input_shape), keras.layers.Dense(num_classes)])

    with pytest.raises(ValueError, match="layer named 'output'"):
        models.build("no_output", (4,), 3)


def test_count_params_sequential_and_type_check():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="output")])
    assert models.count_params(model) == 15
    with pytest.raises(TypeError):
        models.count_params("not a model")


@pytest.mark.parametrize("name", ["lenet300_100", "conv2", "resnet20"])
def test_prunable_with_tfmot(name):
    model = models.build(name, MNIST, 10, seed=0)
    targets = [l.name for l in model.layers
               if isinstance(l, (keras.layers.Conv2D, keras.layers.Dense))]

    def wrap(layer):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            return tfmot.sparsity.keras.prune_low_magnitude(layer)
        return layer.__class__.from_config(layer.get_config())

    pruned = keras.models.clone_model(model, clone_function=wrap)
    assert isinstance(pruned, tf_keras.Model)
    wrapped = [l.layer.name for l in pruned.layers
               if isinstance(l, PruneLowMagnitude)]
    assert wrapped == targets and "output" in wrapped
    # Masks/thresholds are non-trainable: the parameter count is unchanged.
    assert models.count_params(pruned) == models.count_params(model)
    x = np.random.default_rng(0).random((2,) + MNIST, dtype=np.float32)
    assert pruned(x, training=False).shape == (2, 10)
    if name == "lenet300_100":  # one pruning training step end to end
        pruned.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        pruned.fit(x, np.array([0, 1]), epochs=1, verbose=0,
                   callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])


# ------------------------------------------------------------------ resmlp
def test_resmlp_layers_and_skips():
    model = models.build("resmlp", MNIST, 10, seed=0)
    assert [l.name for l in model.layers] == [
        "input", "flatten", "fc_in",
        "block1_fc1", "block1_fc2", "block1_add", "block1_relu",
        "block2_fc1", "block2_fc2", "block2_add", "block2_relu", "output"]
    assert model.get_layer("block1_fc1").activation is keras.activations.relu
    assert model.get_layer("block1_fc2").activation is keras.activations.linear
    # Each add sums the block's input (skip) and its second Dense.
    add = model.get_layer("block2_add")
    inbound = {layer.name for layer in add.inbound_nodes[0].inbound_layers}
    assert inbound == {"block1_relu", "block2_fc2"}
    # The skip is real: with the blocks' second kernels and biases at zero the
    # network is fc_in -> relu -> relu -> output.
    x = np.random.default_rng(1).random((3,) + MNIST, dtype=np.float32)
    for b in (1, 2):
        layer = model.get_layer(f"block{b}_fc2")
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    h = np.maximum(x.reshape(3, -1) @ model.get_layer("fc_in").kernel.numpy(), 0)
    expected = h @ model.get_layer("output").kernel.numpy()
    np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_resmlp_flat_input_and_count():
    model = models.build("resmlp", (784,), 10, seed=0)
    assert models.count_params(model) == 466_698
    assert model(np.zeros((2, 784), np.float32)).shape == (2, 10)


def test_resmlp_prunable_with_tf_unilth_wrapper():
    import tf_unilth
    from tf_unilth import masks, wrapper

    model = models.build("resmlp", MNIST, 10, seed=0)
    pruned = tf_unilth.prune(model)
    wrapped = [l.layer.name for l in wrapper.wrappers(pruned)]
    assert wrapped == ["fc_in", "block1_fc1", "block1_fc2", "block2_fc1", "block2_fc2",
                       "output"]
    assert models.count_params(pruned) == models.count_params(model)
    x = np.random.default_rng(0).random((2,) + MNIST, dtype=np.float32)
    np.testing.assert_allclose(pruned(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
    # A mask set through the library removes weights; the stripped ticket is a
    # plain tf_keras model with those weights exactly 0.
    selection = masks.magnitude_layerwise(pruned, 0.5)
    masks.set_masks(pruned, selection)
    ticket = tf_unilth.strip(pruned)
    assert not any(isinstance(l, PruneLowMagnitude) for l in ticket.layers)
    kernel = ticket.get_layer("block1_fc2").kernel.numpy()
    assert 0.45 < np.mean(kernel == 0) < 0.55
    assert ticket(x).shape == (2, 10)
