"""Stability analysis: instability along the linear path, weight distance, stability_test."""

import json

import numpy as np
import pytest

import tf_unilth
from tf_unilth import analysis, masks, wrapper
from tf_unilth._compat import keras, tf

from helpers import compile_model, toy_data, toy_model


@pytest.fixture(scope="module")
def data():
    x, y = toy_data(n=768, seed=0)  # one labelling map: train and test from it
    return (x[:512], y[:512]), (x[512:], y[512:])


def _trained(seed, data, epochs=6):
    (x, y), _ = data
    model = compile_model(toy_model(seed=seed))
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, shuffle=True)
    return model


@pytest.fixture(scope="module")
def two_dense(data):
    return _trained(1, data), _trained(2, data)


def _ticket(seed=0, rate=0.6):
    """A wrapped toy model with half-ish of its weights removed by magnitude."""
    model = wrapper.prune(toy_model(seed=seed))
    masks.remove(model, masks.magnitude_layerwise(model, rate))
    return model


def test_instability_of_a_model_with_itself_is_zero(two_dense, data):
    model, _ = two_dense
    result = analysis.instability(model, model, data[1], points=5)
    assert result.barrier == 0.0
    assert len(result.errors) == 5 and len(set(np.round(result.errors, 6))) == 1
    assert result.stable
    json.dumps(result.to_dict())


def test_two_independently_trained_dense_models_have_a_barrier(two_dense, data):
    a, b = two_dense
    result = analysis.instability(a, b, data[1], points=11)
    assert result.errors[0] < 0.2 and result.errors[-1] < 0.2  # both trained
    assert result.barrier > 0.02  # different inits: not linearly connected (~0.11 here)
    assert result.alphas[0] == 0.0 and result.alphas[-1] == 1.0


def test_interpolation_keeps_removed_weights_at_zero():
    a, b = _ticket(seed=0), _ticket(seed=0)
    # Same mask, different surviving values (b drifts on its survivors only).
    for r in masks.pruned_weights(b):
        r.weight.assign(r.weight * r.mask + 0.3 * r.mask)
    expected = masks.get_masks(a)
    for alpha in (0.0, 0.37, 1.0):
        mid = analysis.interpolate(a, b, alpha)
        assert not wrapper.wrappers(mid)
        for layer_name in ("fc1", "fc2", "output"):
            kernel = mid.get_layer(layer_name).kernel.numpy()
            keep = expected[f"{layer_name}/0"]
            assert np.all(kernel[~keep] == 0.0)
            assert np.all(kernel[keep] != 0.0)
    # The originals are untouched.
    assert masks.get_masks(a)["fc1/0"].sum() == expected["fc1/0"].sum()


def test_stripped_tickets_use_nonzero_weights_or_an_explicit_mask(data):
    ticket = _ticket(seed=0)
    stripped = tf_unilth.strip(_ticket(seed=0))
    mask = masks.get_masks(ticket)
    assert analysis.weight_distance(ticket, stripped).l2 == pytest.approx(0.0, abs=1e-6)
    assert analysis.weight_distance(stripped, stripped, mask=mask).l2 == 0.0
    dense = toy_model(seed=0)
    with pytest.raises(ValueError, match=r"nonzero weights in layer 'fc1'"):
        analysis.weight_distance(dense, dense, mask=mask)


def test_distance_is_symmetric_and_zero_for_identical_models(two_dense):
    a, b = two_dense
    assert analysis.weight_distance(a, a).l2 == 0.0
    ab, ba = analysis.weight_distance(a, b), analysis.weight_distance(b, a)
    assert ab.l2 > 0 and ab.l2 == pytest.approx(ba.l2)
    assert ab.relative == pytest.approx(ba.relative)
    assert ab.relative == pytest.approx(ab.l2 / (0.5 * (ab.norm_a + ab.norm_b)))
    assert ab.count == 20 * 32 + 32 * 32 + 32 * 3  # kernels only, no biases
    assert set(ab.layers) == {"fc1/0", "fc2/0", "output/0"}


def test_mask_mismatch_is_a_clear_error_naming_the_layer(data):
    a, b = _ticket(seed=0), _ticket(seed=0)
    record = [r for r in masks.pruned_weights(b) if r.layer_name == "fc2"][0]
    keep = record.mask.numpy().copy()
    keep.reshape(-1)[np.flatnonzero(keep)[:3]] = 0
    record.mask.assign(keep)
    with pytest.raises(ValueError, match=r"Masks differ in layer 'fc2'.*3 of 1024"):
        analysis.instability(a, b, data[1], points=3)
    with pytest.raises(ValueError, match=r"Masks differ in layer 'fc2'"):
        analysis.weight_distance(a, b)
    with pytest.raises(ValueError, match=r"Layer 'fc1' \(fc1/0\): weight shapes differ"):
        analysis.weight_distance(a, toy_model(seed=0, hidden=16))


def test_stability_test_end_to_end_on_a_tiny_model(data):
    (x, y), test = data
    theta_k = toy_model(seed=3)  # dense weights at the rewind point
    ticket = _ticket(seed=3)
    mask = masks.get_masks(ticket)
    result = analysis.stability_test(theta_k, mask, rewind_point=4, train_data=(x, y),
                                     test_data=test, total_steps=24, seeds=(1, 2),
                                     batch_size=32, learning_rate=1e-2, points=5,
                                     keep_models=True)
    assert result.rewind_point == 4 and result.train_steps == 20
    assert result.sparsity == pytest.approx(masks.sparsity(ticket))
    assert len(result.instability.errors) == 5
    assert result.distance.l2 > 0  # different data orders, different weights
    assert all(0.0 <= acc <= 1.0 for acc in result.test_accuracy)
    for copy in result.models:  # the mask held through training
        for key, keep in masks.get_masks(copy).items():
            np.testing.assert_array_equal(keep, mask[key])
        for r in masks.pruned_weights(copy):
            assert np.all(r.weight.numpy()[~mask[r.key]] == 0.0)
    encoded = json.loads(json.dumps(result.to_dict()))
    assert "models" not in encoded and encoded["instability"]["barrier"] >= 0.0
    # theta_k itself was not modified.
    assert np.all(theta_k.get_layer("fc1").kernel.numpy() != 0.0)
    short = analysis.stability_test(theta_k, dict(mask), 0, (x, y), test, train_steps=8,
                                    seeds=(5, 6), batch_size=32, points=3)
    assert short.train_steps == 8 and short.seeds == [5, 6]
    with pytest.raises(ValueError, match="two different shuffle seeds"):
        analysis.stability_test(theta_k, mask, 0, (x, y), test, train_steps=8, seeds=(5, 5))
    with pytest.raises(ValueError, match="exactly one of train_steps"):
        analysis.stability_test(theta_k, mask, 0, (x, y), test)


def test_a_copy_whose_loss_becomes_nan_raises_instead_of_returning(data):
    (x, y), test = data
    broken = x.copy()
    broken[::7] = np.nan  # every batch holds one
    # Linear layers carry the NaN to the loss (a CPU relu may turn NaN into 0).
    inputs = keras.Input((20,))
    linear = keras.Model(inputs, keras.layers.Dense(3, name="output")(
        keras.layers.Dense(16, name="fc1")(inputs)))
    with pytest.raises(FloatingPointError, match="loss became nan"):
        analysis.stability_test(linear, None, 0, (broken, y), test, train_steps=8,
                                batch_size=32, points=3)


def test_a_dataset_trains_the_copies_like_the_same_arrays(data):
    # Read once into arrays: the copies' orders depend on their seeds only. A
    # batch with drop_remainder has a static batch dimension; it is still a batch.
    (x, y), test = data
    theta_k, mask = toy_model(seed=3), masks.get_masks(_ticket(seed=3))
    args = dict(train_steps=20, seeds=(1, 2), batch_size=32, learning_rate=1e-2, points=3)
    arrays = analysis.stability_test(theta_k, mask, 0, (x, y), test, **args)
    batched = tf.data.Dataset.from_tensor_slices((x, y)).batch(64, drop_remainder=True)
    datasets = analysis.stability_test(
        theta_k, mask, 0, batched, tf.data.Dataset.from_tensor_slices(test).batch(100), **args)
    assert datasets.distance.l2 == pytest.approx(arrays.distance.l2, rel=1e-6)
    assert datasets.instability.errors == pytest.approx(arrays.instability.errors, abs=1e-9)
    assert arrays.distance.l2 > 0


def test_each_pass_of_a_copy_is_reshuffled_by_its_seed():
    x, y = np.arange(64, dtype=np.float32)[:, None], np.arange(64)

    def passes(seed):  # the order a copy with this seed trains on, 3 passes of 1 batch
        order = tf_unilth.data.shuffled(x, y, 64, seed, steps=3)  # what train_copy uses
        return [batch.tolist() for _, batch in order.as_numpy_iterator()]

    first = passes(1)
    assert sorted(first[0]) == list(range(64))
    assert first[0] != first[1] and first[1] != first[2]
    assert passes(1) == first and passes(2) != first


def test_arrays_are_evaluated_as_given(two_dense):
    # uint8 arrays are not rescaled: the same values as floats give the same numbers.
    model, _ = two_dense
    x, y = toy_data(n=256, seed=1)
    images = np.clip(40 * x + 128, 0, 255).astype(np.uint8)
    as_uint8 = analysis.instability(model, model, (images, y), points=2)
    as_float = analysis.instability(model, model, (images.astype(np.float32), y), points=2)
    assert as_uint8.losses == as_float.losses and as_uint8.errors == as_float.errors


def test_copies_train_under_the_given_strategy(data):
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "conftest configures two logical CPUs"
    strategy = tf.distribute.MirroredStrategy(devices)
    (x, y), test = data
    mask = masks.get_masks(_ticket(seed=3))
    result = analysis.stability_test(toy_model(seed=3), mask, 0, (x, y), test, train_steps=8,
                                     batch_size=32, points=3, keep_models=True,
                                     strategy=strategy)
    assert result.distance.l2 > 0
    for copy in result.models:
        assert all(strategy.extended.variable_created_in_scope(v) for v in copy.variables)
        for r in masks.pruned_weights(copy):  # the mask held on both replicas
            for replica in r.mask.values:
                np.testing.assert_array_equal(replica.numpy() > 0.5, mask[r.key])
    with pytest.raises(ValueError, match="divisible by the 2 replicas"):
        analysis.stability_test(toy_model(seed=3), mask, 0, (x, y), test, train_steps=8,
                                batch_size=33, strategy=strategy)


def test_parameters_round_trip_between_wrapped_and_plain_models():
    ticket = _ticket(seed=4)
    params = analysis.get_parameters(ticket)
    assert set(params) == {"fc1/kernel", "fc1/bias", "fc2/kernel", "fc2/bias",
                           "output/kernel", "output/bias"}
    plain = analysis.set_parameters(toy_model(seed=9), params)
    assert analysis.weight_distance(ticket, plain, mask=masks.get_masks(ticket)).l2 == 0.0
    with pytest.raises(ValueError, match="missing"):
        analysis.set_parameters(toy_model(seed=9), {"fc1/kernel": params["fc1/kernel"]})


def _nested(seed=0, regularizer=None):
    """Input -> fc1 -> Sequential "block" [inner1, inner2] -> output."""
    init = lambda k: keras.initializers.GlorotNormal(seed=seed * 10 + k)  # noqa: E731
    inputs = keras.Input((20,))
    x = keras.layers.Dense(16, activation="relu", name="fc1", kernel_initializer=init(1))(inputs)
    block = keras.Sequential([
        keras.layers.Dense(12, activation="relu", name="inner1", kernel_initializer=init(2),
                           kernel_regularizer=regularizer),
        keras.layers.Dense(8, activation="relu", name="inner2", kernel_initializer=init(3)),
    ], name="block")
    outputs = keras.layers.Dense(3, name="output", kernel_initializer=init(4))(block(x))
    return keras.Model(inputs, outputs)


NESTED_KEYS = {"fc1/0", "block/inner1/0", "block/inner2/0", "output/0"}


def test_a_nested_model_is_analysed_through_its_inner_layers():
    a, b = _nested(seed=0, regularizer="l2"), _nested(seed=1, regularizer="l2")
    distance = analysis.weight_distance(a, b)
    assert set(distance.layers) == NESTED_KEYS
    assert distance.count == 20 * 16 + 16 * 12 + 12 * 8 + 8 * 3  # kernels only
    inner = lambda m, name: m.get_layer("block").get_layer(name).kernel.numpy()  # noqa: E731
    assert distance.layers["block/inner2/0"] == pytest.approx(
        np.linalg.norm(inner(a, "inner2") - inner(b, "inner2")), rel=1e-5)
    mid = analysis.interpolate(a, b, 0.25)
    assert [layer.name for layer in mid.get_layer("block").layers] == ["inner1", "inner2"]
    assert mid.get_layer("block") is not a.get_layer("block")  # a fresh clone
    np.testing.assert_allclose(inner(mid, "inner2"),
                               0.75 * inner(a, "inner2") + 0.25 * inner(b, "inner2"), rtol=1e-6)
    assert mid.losses == []  # the inner layer's regularizer is left out too
    assert len(a.losses) == 1  # the original keeps it
    params = analysis.get_parameters(a)
    assert set(params) == {f"{layer}/{weight}" for layer in ("fc1", "block/inner1",
                                                              "block/inner2", "output")
                           for weight in ("kernel", "bias")}
    np.testing.assert_array_equal(params["block/inner1/kernel"], inner(a, "inner1"))
    assert analysis.set_parameters(b, params) is b
    assert analysis.weight_distance(a, b).l2 == 0.0
    np.testing.assert_array_equal(b.get_layer("block").get_layer("inner2").bias.numpy(),
                                  params["block/inner2/bias"])
    with pytest.raises(ValueError, match=r"missing \['block/inner2/bias'\]"):
        analysis.set_parameters(b, {k: v for k, v in params.items()
                                    if k != "block/inner2/bias"})


def test_wrapped_nested_tickets_keep_their_removed_inner_weights_at_zero(data):
    a, b = wrapper.prune(_nested(seed=0)), wrapper.prune(_nested(seed=0))
    for model in (a, b):
        masks.remove(model, masks.magnitude_layerwise(model, 0.5))
    for r in masks.pruned_weights(b):
        r.weight.assign(r.weight * r.mask + 0.3 * r.mask)
    mask = masks.get_masks(a)
    assert set(mask) == NESTED_KEYS
    mid = analysis.interpolate(a, b, 0.5)
    assert not wrapper.wrappers(mid)
    for name in ("inner1", "inner2"):
        kernel = mid.get_layer("block").get_layer(name).kernel.numpy()
        keep = mask[f"block/{name}/0"]
        assert np.all(kernel[~keep] == 0.0) and np.all(kernel[keep] != 0.0)
    assert analysis.weight_distance(a, b).count == sum(int(k.sum()) for k in mask.values())
    assert analysis.instability(a, a, data[1], points=3).barrier == 0.0
    # A layer kept dense (exclude=, here inside the block) has no mask to compare.
    partial = wrapper.prune(_nested(seed=0), exclude=["block/inner1"])
    assert set(analysis.weight_distance(partial, partial).layers) == NESTED_KEYS - {
        "block/inner1/0"}
    record = [r for r in masks.pruned_weights(b) if r.key == "block/inner2/0"][0]
    keep = record.mask.numpy().copy()
    keep.reshape(-1)[np.flatnonzero(keep)[:3]] = 0
    record.mask.assign(keep)
    with pytest.raises(ValueError, match=r"Masks differ in layer 'block/inner2'.*3 of 96"):
        analysis.weight_distance(a, b)


def test_stability_test_on_a_nested_model(data):
    (x, y), test = data
    mask = masks.get_masks(_ticket_of(_nested(seed=3)))
    result = analysis.stability_test(_nested(seed=3), mask, 0, (x, y), test, train_steps=4,
                                     batch_size=32, learning_rate=1e-2, points=3,
                                     keep_models=True)
    assert result.distance.l2 > 0 and set(result.distance.layers) == NESTED_KEYS
    for copy in result.models:
        for key, keep in masks.get_masks(copy).items():
            np.testing.assert_array_equal(keep, mask[key])


def _ticket_of(model, rate=0.6):
    model = wrapper.prune(model)
    masks.remove(model, masks.magnitude_layerwise(model, rate))
    return model


def test_a_bidirectional_layer_keeps_both_directions_parameters():
    """Forward and backward weights share their short names ("bi/kernel"):
    every one of them is kept, under its variable's path, and round trips."""
    L = keras.layers
    i = keras.Input((5, 3))
    x = L.Bidirectional(L.GRU(4), name="bi")(i)
    model = keras.Model(i, L.Dense(2, name="out")(x))
    params = analysis.get_parameters(model)
    own = [v for layer in model.layers for v in layer.weights]
    assert len(params) == len(own) == 8
    assert "bi/forward_gru/gru_cell/kernel" in params and "bi/backward_gru/gru_cell/kernel" in params
    other = keras.models.clone_model(model)
    analysis.set_parameters(other, params)
    for a, b in zip(own, [v for layer in other.layers for v in layer.weights]):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
