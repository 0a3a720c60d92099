"""Masks: monotone under aggressive training, optimizer state cleared, selections."""

import numpy as np
import pytest

from tf_unilth._compat import keras
from tf_unilth import callbacks, masks

from helpers import Recorder, StartSchedulesAt, compile_model, pruned_toy, toy_data


@pytest.mark.parametrize("optimizer", [
    lambda: keras.optimizers.Adam(1.0),
    lambda: keras.optimizers.SGD(2.0, momentum=0.9),
    lambda: keras.optimizers.RMSprop(1.0, momentum=0.9),
    lambda: keras.optimizers.legacy.Adam(1.0),
])
def test_masks_are_monotone_and_removed_weights_stay_exactly_zero(optimizer):
    x, y = toy_data(n=128)
    model = compile_model(pruned_toy(densities=(0.6, 0.3, 0.1), steps_per_round=3),
                          optimizer=optimizer())
    rec = Recorder()
    model.fit(x, y, batch_size=16, epochs=3, verbose=0,
              callbacks=[callbacks.UpdatePruningStep(), StartSchedulesAt(0), rec])
    assert masks.sparsity(model) == pytest.approx(0.9, abs=0.01)
    previous = None
    for batch in rec.batches:
        for (w, m) in batch:
            assert np.all(w[m == 0] == 0.0), "a removed weight moved"
        if previous is not None:
            for (_, m_prev), (_, m) in zip(previous, batch):
                assert np.all(m <= m_prev), "a mask grew back"
        previous = batch
    # Optimizer state of removed weights is zero too.
    for r in masks.pruned_weights(model):
        slots = masks.optimizer_slots(model.optimizer, r.weight)
        assert slots, "no slot found for " + r.key
        for slot in slots:
            assert np.all(slot.numpy()[r.mask.numpy() == 0] == 0.0)


def test_removed_weights_get_zero_gradient():
    import tensorflow as tf
    x, y = toy_data(n=32)
    model = compile_model(pruned_toy())
    masks.remove(model, masks.magnitude_layerwise(model, 0.5))
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(
            y, model(x, training=False), from_logits=True)
    records = masks.pruned_weights(model)
    grads = tape.gradient(loss, [r.weight for r in records])
    for r, g in zip(records, grads):
        g = g.numpy()
        assert np.all(g[r.mask.numpy() == 0] == 0.0)
        assert np.any(g[r.mask.numpy() == 1] != 0.0)


def test_layerwise_selection_rates_and_overrides():
    model = pruned_toy()
    sel = masks.magnitude_layerwise(model, 0.2, rate_overrides={"output": 0.1})
    mags = masks.magnitude_scores(model)
    for key, chosen in sel.items():
        rate = 0.1 if key.startswith("output") else 0.2
        assert chosen.sum() == round(chosen.size * rate)
        # Every chosen weight is no larger than every kept one.
        assert mags[key][chosen].max() <= mags[key][~chosen].min()
    masks.remove(model, sel)
    again = masks.magnitude_layerwise(model, 0.2)
    alive = masks.get_masks(model)
    for key, chosen in again.items():
        assert not np.any(chosen & ~alive[key]), "selected an already removed weight"
        assert chosen.sum() == round(alive[key].sum() * 0.2)


def test_global_selection_uses_one_threshold():
    model = pruned_toy()
    sel = masks.magnitude_global(model, 0.5)
    mags = masks.magnitude_scores(model)
    chosen = np.concatenate([mags[k][sel[k]] for k in sel])
    kept = np.concatenate([mags[k][~sel[k]] for k in sel])
    assert chosen.max() <= kept.min()
    assert chosen.size == round((chosen.size + kept.size) * 0.5)
    per_layer = {k: v.mean() for k, v in sel.items()}
    assert max(per_layer.values()) - min(per_layer.values()) > 0.01  # not uniform


def test_random_selection_is_seeded():
    model = pruned_toy()
    a = masks.random(model, 0.5, seed=1)
    b = masks.random(model, 0.5, seed=1)
    c = masks.random(model, 0.5, seed=2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_set_masks_never_regrows_and_reports_refusals():
    model = pruned_toy()
    masks.remove(model, masks.magnitude_layerwise(model, 0.5))
    before = masks.get_masks(model)
    refused = masks.set_masks(model, {k: np.ones_like(v) for k, v in before.items()})
    assert refused == sum(int((~v).sum()) for v in before.values())
    after = masks.get_masks(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_sparsity_report_and_block_scores():
    model = pruned_toy()
    masks.remove(model, masks.select(model, "block", 0.5, block_size=(4, 1)))
    report = masks.sparsity_report(model)
    assert report["sparsity"] == pytest.approx(0.5, abs=0.02)
    assert set(report["layers"]) == {"fc1/0", "fc2/0", "output/0"}
    m = masks.get_masks(model)["fc1/0"]  # (20, 32): blocks of 4 input rows
    blocks = m.reshape(5, 4, 32)
    assert np.all(blocks.min(axis=1) == blocks.max(axis=1)), "blocks split"


def test_unknown_selection_and_bad_rate():
    model = pruned_toy()
    with pytest.raises(ValueError, match="Unknown selection"):
        masks.select(model, "smallest", 0.2)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        masks.magnitude_layerwise(model, 1.2)
    with pytest.raises(ValueError, match="unknown layers"):
        masks.magnitude_layerwise(model, 0.2, rate_overrides={"nope": 0.1})


@pytest.mark.parametrize("method", ["magnitude_layerwise", "random"])
def test_block_selections_remove_whole_blocks_round_after_round(method):
    model = pruned_toy()  # kernels (20, 32), (32, 32), (32, 3): rows divisible by 4
    scores = masks.random_scores(model, 3) if method == "random" else None
    for _ in range(3):
        masks.remove(model, masks.select(model, method, 0.3, scores=scores, block_size=(4, 1)))
    for key, m in masks.get_masks(model).items():
        blocks = m.reshape(m.shape[0] // 4, 4, m.shape[1])
        assert np.all(blocks.min(axis=1) == blocks.max(axis=1)), key
    assert masks.sparsity(model) == pytest.approx(1 - 0.7 ** 3, abs=0.02)
    with pytest.raises(ValueError, match="no block form"):
        masks.select(model, "magnitude_global", 0.3, block_size=(4, 1))


def test_layer_rates_reach_the_density_with_the_output_layer_at_half_rate():
    model = pruned_toy()
    for density in (0.6, 0.3, 0.1):  # round after round, as UniLTH does
        rate, overrides = masks.layer_rates(model, density)
        assert overrides == {"output": pytest.approx(rate / 2)}
        masks.remove(model, masks.select(model, "random", rate, seed=1,
                                         rate_overrides=overrides))
        assert 1 - masks.sparsity(model) == pytest.approx(density, abs=0.003)
    report = masks.sparsity_report(model)["layers"]
    assert report["output/0"]["sparsity"] < report["fc1/0"]["sparsity"]
    with pytest.raises(ValueError, match="grow density"):
        masks.layer_rates(model, 0.5)


def test_erk_allocation_keeps_small_layers_denser_and_hits_the_density():
    model = pruned_toy()
    dens = masks.erk_densities(model, 0.2)
    sizes = {r.key: r.weight.numpy().size for r in masks.pruned_weights(model)}
    total = sum(sizes.values())
    assert sum(dens[k] * sizes[k] for k in dens) / total == pytest.approx(0.2)
    assert dens["fc2/0"] < dens["fc1/0"] < dens["output/0"] <= 1.0
    rate, overrides = masks.allocation_rates(model, dens)
    masks.remove(model, masks.select(model, "random", rate, seed=0, rate_overrides=overrides))
    assert 1 - masks.sparsity(model) == pytest.approx(0.2, abs=0.005)
