"""The numpy sparsity core on plain arrays: masks, plans, criteria, allocations, selection."""

import ast
import pathlib

import numpy as np
import pytest

from tf_unilth.sparsity import Mask, allocation, criteria, plans, selection
from tf_unilth.sparsity.selection import Selector

SHAPES = {"fc1/0": (20, 32), "fc2/0": (32, 32), "output/0": (32, 3)}


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}


def test_the_core_imports_numpy_and_the_standard_library_only():
    folder = pathlib.Path(__file__).resolve().parents[1] / "tf_unilth" / "sparsity"
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                roots = [node.module.split(".")[0]]
            else:
                continue
            for root in roots:
                assert root in {"numpy", "tf_unilth", "collections", "hashlib", "inspect",
                                "math", "numbers", "dataclasses"}, (path.name, root)
            if roots == ["tf_unilth"]:
                assert node.module.startswith("tf_unilth.sparsity"), (path.name, node.module)


def test_mask_is_a_value_with_sparsity_digest_and_files(tmp_path):
    mask = Mask.ones(SHAPES)
    assert mask.count == 20 * 32 + 32 * 32 + 96 and mask.sparsity == 0.0
    removal = Mask({k: np.arange(np.prod(s)).reshape(s) % 4 == 0 for k, s in SHAPES.items()})
    pruned = mask.remove(removal)
    assert pruned.sparsity == pytest.approx(0.25, abs=0.01) and mask.sparsity == 0.0
    with pytest.raises(ValueError):
        pruned["fc1/0"][0, 0] = True  # immutable
    assert pruned.report()["layers"]["output/0"]["count"] == 96
    assert pruned.digest() != mask.digest() and pruned == Mask(dict(pruned))
    assert mask.removed_by(pruned) == removal
    path = str(tmp_path / "m.npz")
    pruned.save(path)
    again = Mask.load(path)
    assert again == pruned and list(again) == list(pruned) and again.digest() == pruned.digest()
    with pytest.raises(KeyError, match="Unknown mask keys"):
        mask.remove({"nope/0": np.zeros((1,), bool)})
    assert Mask.key("fc1", 0) == "fc1/0" and Mask.layer_name("block1/conv/0") == "block1/conv"


def test_fidelity_and_empty_layers():
    selected = Mask({"a/0": [True, True, False, False]})
    assert selected.fidelity({"a/0": [True, False, True, False]}) == 0.5
    assert Mask({"a/0": [False] * 4}).fidelity({"a/0": [True] * 4}) == 1.0
    assert Mask({"a/0": [False, False], "b/0": [True, False]}).empty_layers() == ["a/0"]


def test_density_plans():
    np.testing.assert_allclose(plans.geometric_densities(0.9, 3),
                               [0.1 ** (1 / 3), 0.1 ** (2 / 3), 0.1])
    np.testing.assert_allclose(plans.fixed_rate_densities(0.2, 3), [0.8, 0.64, 0.512])
    assert plans.rounds_to_reach(0.9, 0.2) == 11
    assert plans.rate_between(0.5, 0.25) == 0.5
    for bad in (1.0, -0.1, float("nan"), "0.5", True):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            plans.check_sparsity(bad)


def test_magnitude_and_fixed_random_scores():
    w = _weights()
    mags = criteria.get("magnitude").score(w)
    assert all(np.array_equal(mags[k], np.abs(w[k])) for k in w)
    a = criteria.get("random", seed=1).score(w)
    b = criteria.get("random", seed=1).score(_weights(5))  # scores ignore the values
    c = criteria.get("random", seed=2).score(w)
    assert all(np.array_equal(a[k], b[k]) for k in w)
    assert any(not np.array_equal(a[k], c[k]) for k in w)
    with pytest.raises(ValueError, match="Unknown criterion 'snip'.*register_criterion"):
        criteria.get("snip")


def test_block_scores_pool_whole_blocks():
    w = _weights()
    pooled = criteria.Magnitude().block_score(w, (4, 1))
    block = np.abs(w["fc1/0"][:4, 0])
    assert pooled["fc1/0"][:4, 0] == pytest.approx([np.sqrt(np.sum(block ** 2))] * 4)
    random = criteria.FixedRandom(3)
    mean = random.block_score(w, (4, 1))["fc1/0"][:4, 0]
    assert mean == pytest.approx([random.score(w)["fc1/0"][:4, 0].mean()] * 4)


def test_registering_a_criterion_makes_it_available_by_name():
    @criteria.register_criterion("test_negative_magnitude")
    class Negative(criteria.Criterion):
        def score(self, weights, gradients=None):
            return {k: -np.abs(v) for k, v in weights.items()}

    w = _weights()
    removal = Selector("test_negative_magnitude").removal(
        w, Mask.ones(SHAPES), {k: 0.5 for k in SHAPES})
    for k in w:  # the largest magnitudes go
        assert np.abs(w[k][removal[k]]).min() >= np.abs(w[k][~removal[k]]).max()
    with pytest.raises(ValueError, match="already registered"):
        criteria.register_criterion("magnitude")(Negative)


def test_uniform_allocation_reaches_the_density_with_the_output_at_half_rate():
    alive = Mask.ones(SHAPES)
    w = _weights()
    for density in (0.6, 0.3, 0.1):
        rates = allocation.get("uniform").rates(alive, density, "output")
        assert rates["output/0"] == pytest.approx(rates["fc1/0"] / 2)
        mags = {k: np.abs(v) for k, v in w.items()}
        alive = alive.remove(selection.remove_lowest(mags, alive, rates))
        assert alive.density == pytest.approx(density, abs=0.003)
    with pytest.raises(ValueError, match="grow density"):
        allocation.Uniform().rates(alive, 0.5, "output")
    assert allocation.Uniform().fixed_rates(alive, 0.2, "output") == {
        "fc1/0": 0.2, "fc2/0": 0.2, "output/0": 0.1}


def test_global_and_erk_allocations():
    alive = Mask.ones(SHAPES)
    assert allocation.get("global").rates(alive, 0.25) == pytest.approx(0.75)
    dens = allocation.ERK.densities(SHAPES, 0.2)
    sizes = {k: int(np.prod(s)) for k, s in SHAPES.items()}
    assert sum(dens[k] * sizes[k] for k in dens) / sum(sizes.values()) == pytest.approx(0.2)
    assert dens["fc2/0"] < dens["fc1/0"] < dens["output/0"] <= 1.0
    rates = allocation.get("erk").round_rates(alive, None, 0.2, 1 / 2)
    for k in SHAPES:  # halfway on each layer's geometric path
        assert 1 - rates[k] == pytest.approx(dens[k] ** 0.5)
    with pytest.raises(ValueError, match="no fixed-rate form"):
        allocation.get("erk").fixed_rates(alive, 0.2)
    with pytest.raises(ValueError, match="Unknown allocation"):
        allocation.get("even")


def test_remove_lowest_layerwise_and_global():
    w = _weights()
    mags = {k: np.abs(v) for k, v in w.items()}
    alive = Mask.ones(SHAPES)
    removal = selection.remove_lowest(mags, alive, {"fc1/0": 0.2, "fc2/0": 0.2, "output/0": 0.1})
    for k in SHAPES:
        rate = 0.1 if k == "output/0" else 0.2
        assert removal[k].sum() == round(removal[k].size * rate)
        assert mags[k][removal[k]].max() <= mags[k][~removal[k]].min()
    alive = alive.remove(removal)
    again = selection.remove_lowest(mags, alive, {k: 0.2 for k in SHAPES})
    assert not any(np.any(again[k] & ~alive[k]) for k in SHAPES), "chose a removed weight"
    one = selection.remove_lowest(mags, Mask.ones(SHAPES), 0.5)
    chosen = np.concatenate([mags[k][one[k]] for k in SHAPES])
    kept = np.concatenate([mags[k][~one[k]] for k in SHAPES])
    assert chosen.max() <= kept.min() and chosen.size == round((chosen.size + kept.size) / 2)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        selection.remove_lowest(mags, alive, {k: 1.2 for k in SHAPES})


def test_block_removals_keep_blocks_whole_and_named_selections():
    w = _weights()
    alive = Mask.ones(SHAPES)
    selector = Selector.named("random", block_size=(4, 1), seed=3)
    for _ in range(3):
        rates = {k: 0.3 for k in SHAPES}
        alive = alive.remove(selector.removal(w, alive, rates))
    for k, m in alive.items():
        blocks = m.reshape(m.shape[0] // 4, 4, m.shape[1])
        assert np.all(blocks.min(axis=1) == blocks.max(axis=1)), k
    assert Selector.named("block").block_size == (4, 1)
    assert isinstance(Selector.named("magnitude_global").allocation, allocation.Global)
    with pytest.raises(ValueError, match="no block form"):
        Selector("magnitude", "global", block_size=(4, 1))
    with pytest.raises(ValueError, match="Unknown selection"):
        Selector.named("smallest")
