"""Every model a user brings (issue #26): RNNs, attention, wrappers, nested and
subclassed models, custom PrunableLayers, layers kept dense, mixed precision.

Kept cheap: tiny models on random data; the wrap/mask/strip logic is checked
directly, and `find_ticket` runs once per family (a different method each)."""

import numpy as np
import pytest

from tf_unilth._compat import keras, tf, tfmot
from tf_unilth import find_ticket, masks, models, prunable, wrapper

L = keras.layers
RNG = np.random.default_rng(0)


def _text_input():
    return keras.Input((6,), dtype="int32")


def lstm():
    i = _text_input()
    x = L.LSTM(6, name="lstm")(L.Embedding(30, 6, name="embedding")(i))
    return keras.Model(i, L.Dense(3, name="output")(x))


def gru_simple_rnn():
    i = _text_input()
    x = L.Embedding(30, 6, name="embedding")(i)
    x = L.GRU(6, return_sequences=True, name="gru")(x)
    x = L.SimpleRNN(6, name="simple_rnn")(x)
    return keras.Model(i, L.Dense(3, name="output")(x))


def bidirectional():
    i = _text_input()
    x = L.Bidirectional(L.GRU(5, name="gru"), name="bi")(L.Embedding(30, 6, name="embedding")(i))
    return keras.Model(i, L.Dense(3, name="output")(x))


def time_distributed():
    i = keras.Input((4, 8))
    x = L.TimeDistributed(L.Dense(6, name="dense"), name="td")(i)
    x = L.LayerNormalization(name="ln")(L.Flatten()(x))
    return keras.Model(i, L.Dense(3, name="output")(x))


def transformer():
    """A small Transformer encoder block (attention + feed-forward, layer norms)."""
    i = keras.Input((6, 8))
    a = L.MultiHeadAttention(2, 4, name="mha")(i, i)
    x = L.LayerNormalization(name="ln1")(L.Add()([i, a]))
    f = L.Dense(8, name="ff2")(L.Dense(16, activation="relu", name="ff1")(x))
    x = L.LayerNormalization(name="ln2")(L.Add()([x, f]))
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(i, L.Dense(3, name="output")(x))


def einsum():
    i = keras.Input((8,))
    x = L.EinsumDense("ab,bc->ac", output_shape=12, bias_axes="c", name="einsum")(i)
    return keras.Model(i, L.Dense(3, name="output")(x))


def nested():
    """A Sequential block inside a functional model, and a functional block
    inside that (two levels), with a BatchNormalization kept dense."""
    ii = keras.Input((12,))
    inner = keras.Model(ii, L.Dense(12, activation="relu", name="inner_fc")(ii), name="inner")
    block = keras.Sequential([keras.Input((8,)), L.Dense(12, activation="relu", name="fc"),
                              L.BatchNormalization(name="bn"), inner], name="block")
    i = keras.Input((8,))
    return keras.Model(i, L.Dense(3, name="output")(block(i)))


class Sub(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.fc = L.Dense(16, activation="relu", name="fc")
        self.out = L.Dense(3, name="out")

    def call(self, x):
        return self.out(self.fc(x))


def subclassed():
    model = Sub(name="sub")
    model(np.zeros((1, 8), "float32"))
    return model


class PrunableDense(L.Layer, tfmot.sparsity.keras.PrunableLayer):
    """A custom layer naming its own prunable weight (tfmot's PrunableLayer)."""

    def build(self, input_shape):
        self.w = self.add_weight("w", (input_shape[-1], 10))
        self.b = self.add_weight("b", (10,), initializer="zeros")

    def call(self, x):
        return tf.matmul(x, self.w) + self.b

    def get_prunable_weights(self):
        return [self.w]


def custom_prunable():
    i = keras.Input((8,))
    return keras.Model(i, L.Dense(3, name="output")(PrunableDense(name="custom")(i)))


def mobilenet():
    """A Keras-applications model (weights=None, 32x32): depthwise convs (kept
    dense, as tfmot does), BatchNormalization, Conv2D, the classifier."""
    return keras.applications.MobileNetV2((32, 32, 3), alpha=0.35, weights=None, classes=3,
                                          classifier_activation=None)


FAMILIES = {
    "lstm": (lstm, {"embedding/0", "lstm/0", "lstm/1", "output/0"}),
    "gru_simple_rnn": (gru_simple_rnn, {"embedding/0", "gru/0", "gru/1", "simple_rnn/0",
                                        "simple_rnn/1", "output/0"}),
    "bidirectional": (bidirectional, {"embedding/0", "bi/forward_gru/0", "bi/forward_gru/1",
                                      "bi/backward_gru/0", "bi/backward_gru/1", "output/0"}),
    "time_distributed": (time_distributed, {"td/dense/0", "output/0"}),
    "transformer": (transformer, {"mha/0", "mha/1", "mha/2", "mha/3", "ff1/0", "ff2/0",
                                  "output/0"}),
    "einsum": (einsum, {"einsum/0", "output/0"}),
    "nested": (nested, {"block/fc/0", "block/inner/inner_fc/0", "output/0"}),
    "subclassed": (subclassed, {"sub/fc/0", "sub/out/0"}),
    "custom_prunable": (custom_prunable, {"custom/0", "output/0"}),
}


def data_for(model, n=32):
    spec = model.inputs[0] if model.inputs else None
    shape = tuple(spec.shape[1:]) if spec is not None else (8,)
    if spec is not None and spec.dtype.is_integer:
        x = RNG.integers(0, 30, size=(n,) + shape).astype("int32")
    else:
        x = RNG.normal(size=(n,) + shape).astype("float32")
    return x, RNG.integers(0, 3, size=n)


def half_mask(pruned, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.random(v.shape) < 0.5 for k, v in masks.get_masks(pruned).items()}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_prunable_weight_is_masked_where_the_layer_reads_it(family):
    build, keys = FAMILIES[family]
    model = models.functional(build())
    x, _ = data_for(model, 8)
    pruned = wrapper.prune(model)
    assert set(wrapper.mask_keys(pruned)) == keys
    for layer in wrapper.wrappers(pruned):
        # every weight is reached through the attribute its owner reads, none
        # falls back to tfmot's masking by assignment
        assert layer._assign_masked == [], layer.name
    masks.set_masks(pruned, half_mask(pruned))
    masked_out = pruned(x, training=False).numpy()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(pruned(x, training=False) ** 2)
    grads = tape.gradient(loss, [r.weight for r in masks.pruned_weights(pruned)])
    for r, g in zip(masks.pruned_weights(pruned), grads):
        # the layer read the weight through the wrapper (a weight it read
        # directly would get its full gradient, removed entries included)
        removed = r.mask.numpy() == 0
        g = tf.convert_to_tensor(g).numpy()
        assert removed.any() and np.all(r.weight.numpy()[removed] == 0), r.key
        assert np.all(g[removed] == 0) and np.any(g[~removed] != 0), r.key
    ticket = wrapper.strip(pruned)
    assert [l.name for l in ticket.layers] == [l.name for l in model.layers]  # nesting kept
    assert not wrapper.wrappers(ticket)
    np.testing.assert_allclose(ticket(x, training=False).numpy(), masked_out, atol=1e-5)
    assert masks.zeros_mask(ticket) == masks.get_masks(pruned)  # removed weights exactly 0


def test_layers_with_weights_but_nothing_to_prune_are_kept_dense_and_listed():
    i = keras.Input((8,))
    norm = L.Normalization(name="norm")
    norm.adapt(RNG.normal(size=(16, 8)).astype("float32"))
    x = L.PReLU(name="prelu")(L.DepthwiseConv1D(3, name="dw")(L.Reshape((8, 1))(norm(i))))
    x = L.Dense(4, name="fc")(L.BatchNormalization(name="bn")(L.Flatten()(x)))
    model = keras.Model(i, L.Dense(3, name="output")(x))
    found = prunable.plan(model)
    assert [k for k in found.keys()] == ["fc/0", "output/0"]
    assert [p for p, _, _ in found.kept] == ["norm", "dw", "prelu", "bn"]
    line = prunable.describe_kept(found.kept)
    assert line.startswith("Kept dense (4 layers") and "norm (Normalization" in line


def test_mobilenet_at_32x32_wraps_with_depthwise_and_batchnorm_kept_dense():
    model = mobilenet()
    found = prunable.plan(model)
    kept = {cls for _, cls, _ in found.kept}
    assert kept == {"BatchNormalization", "DepthwiseConv2D"}
    pruned = wrapper.prune(model)
    assert len(wrapper.wrappers(pruned)) == len(found.wrapped())
    assert masks.output_layers(pruned) == ("predictions",)


class Opaque(L.Layer):
    """A custom layer with a kernel it does not say how to prune."""

    def build(self, input_shape):
        self.kernel = self.add_weight("kernel", (input_shape[-1], 4))

    def call(self, x):
        return tf.matmul(x, self.kernel)


def test_an_unknown_kernel_is_one_clear_line_before_training():
    i = keras.Input((8,))
    model = keras.Model(i, L.Dense(3, name="output")(Opaque(name="opaque")(i)))
    x, y = data_for(model)
    trained = []
    with pytest.raises(prunable.NotPrunable) as error:
        find_ticket(model, "lth", (x, y), (x, y), target_sparsity=0.5, epochs=1, rounds=1,
                    verbose=0, printer=lambda *a: None,
                    before_training=lambda: trained.append(1))
    message = str(error.value)
    assert "\n" not in message and not trained
    assert "'opaque' (Opaque)" in message and "PrunableLayer" in message
    assert "exclude=['opaque']" in message
    # the fix it names works
    assert prunable.plan(model, exclude=["opaque"]).keys() == ["output/0"]


def test_exclude_reaches_inside_nested_models_and_wrappers():
    model = nested()
    assert set(prunable.plan(model, ["block/fc"]).keys()) == {"block/inner/inner_fc/0",
                                                              "output/0"}
    assert prunable.plan(model, ["block"]).keys() == ["output/0"]
    pruned = wrapper.prune(model, exclude=["block/inner/inner_fc"])
    assert wrapper.mask_keys(pruned) == ["block/fc/0", "output/0"]
    assert set(prunable.plan(bidirectional(), ["bi/backward_gru"]).keys()) == {
        "embedding/0", "bi/forward_gru/0", "bi/forward_gru/1", "output/0"}
    with pytest.raises(ValueError, match="exclude names layers not in the model.*block/dense"):
        prunable.plan(model, ["nope"])


def test_output_rate_applies_to_the_output_layer_inside_a_nested_model():
    i = keras.Input((8,))
    head = keras.Sequential([keras.Input((8,)), L.Dense(8, name="h1"), L.Dense(3, name="h2")],
                            name="head")
    model = keras.Model(i, L.Softmax()(head(L.Dense(8, name="fc")(i))))
    assert masks.output_layers(model) == ("head/h2",)
    assert masks.output_layers(wrapper.prune(model)) == ("head/h2",)
    assert masks.output_layers(model, "head") == ("head/h1", "head/h2")


def test_an_unbuilt_subclassed_model_says_what_to_do():
    with pytest.raises(ValueError, match="call it once on a batch"):
        wrapper.prune(Sub(name="unbuilt"))


def test_mixed_float16_trains_with_removed_weights_at_zero():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        i = _text_input()
        x = L.LSTM(6, name="lstm")(L.Embedding(30, 6, name="embedding")(i))
        x = L.Dense(8, name="fc")(x)
        model = keras.Model(i, L.Activation("linear", dtype="float32")(
            L.Dense(3, name="output")(x)))
        x, y = data_for(model)
        result = find_ticket(model, "lth", (x, y), (x, y), target_sparsity=0.5, epochs=2,
                             rounds=1, batch_size=16, verbose=0, printer=lambda *a: None,
                             jit_compile=JIT)
        assert result.model.get_layer("fc").kernel.dtype == tf.float32
        assert result.sparsity > 0.15
        assert masks.zeros_mask(result.model).sparsity == pytest.approx(result.sparsity)
    finally:
        keras.mixed_precision.set_global_policy("float32")


# One find_ticket per family, each with another method (all five over the
# families); the ticket: removed weights exactly 0, loads back as tf_keras.
RUNS = [("lstm", "unilth", 0.5), ("bidirectional", "random", 0.5),
        ("transformer", "dlth", 0.9), ("nested", "lth", 0.9),
        ("subclassed", "unidlth", 0.5), ("custom_prunable", "lth", 0.9)]
METHOD_ARGS = {"lth": dict(epochs=2, rounds=1), "random": dict(epochs=1),
               "dlth": dict(epochs=3, finetune_epochs=1),
               "unilth": dict(epochs=4, rounds=1, round_epochs=1, patience=1,
                              min_finetune_epochs=1),
               "unidlth": dict(epochs=4, rounds=1, round_epochs=1, patience=1,
                               min_finetune_epochs=1)}


JIT = False  # XLA compiles an RNN's loop for longer than these runs train


@pytest.mark.parametrize("family,method,target", RUNS)
def test_find_ticket_on_every_family(family, method, target, tmp_path):
    model = FAMILIES[family][0]()
    x, y = data_for(models.functional(model))
    lines = []
    result = find_ticket(model, method, (x, y), (x, y), target_sparsity=target,
                         batch_size=16, verbose=0, printer=lines.append, floor_count=2,
                         jit_compile=JIT, **METHOD_ARGS[method])
    ticket = result.model
    assert not wrapper.wrappers(ticket)
    if method in ("random", "dlth"):
        assert result.sparsity == pytest.approx(target, abs=0.02)
    else:
        assert result.sparsity > 0.1
    assert masks.zeros_mask(ticket).sparsity == pytest.approx(result.sparsity)
    path = str(tmp_path / "ticket.keras")
    ticket.save(path)
    custom = {"Sub": Sub, "PrunableDense": PrunableDense}
    loaded = keras.models.load_model(path, custom_objects=custom, compile=False)
    np.testing.assert_allclose(loaded(x[:4], training=False).numpy(),
                               ticket(x[:4], training=False).numpy(), atol=1e-5)
    assert masks.zeros_mask(loaded) == masks.zeros_mask(ticket)


def test_the_coverage_benchmark_smoke_runs(tmp_path):
    """benchmarks/model_coverage.py's quick path on one model: every column filled."""
    from helpers import load_benchmark
    bench = load_benchmark("model_coverage")
    out = tmp_path / "coverage.json"
    summary = bench.run(quick=True, output=str(out), repeats=1, printer=lambda *a: None,
                        names=["nested"])
    (row,) = summary["rows"]
    assert row["tfmot"]["wraps"] and row["wraps"]["ok"]
    (ticket,) = row["tickets"]
    assert ticket["sparsity"] == pytest.approx(0.5, abs=0.01) and ticket["removed_exactly_zero"]
    assert ticket["round_trip"] == {"ok": True, "error": None}
    assert ticket["tflite"]["ok"]
    assert set(row["step_seconds"]) == {"dense", "tfmot", "tf_unilth"}
    assert out.exists()
