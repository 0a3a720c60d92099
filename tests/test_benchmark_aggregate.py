"""The accuracy-vs-sparsity aggregation: table, matching, cost ratios, targets.

Synthetic results.json records stand in for finished runs, so the numbers the
README shows can be checked by hand.
"""

import importlib.util
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "accuracy_vs_sparsity", os.path.join(ROOT, "benchmarks", "accuracy_vs_sparsity.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _single(acc, density, steps):
    return {"final": {"sparsity": 1 - density, "test_accuracy": acc, "val_accuracy": acc},
            "total": {"train_steps": steps, "wall_seconds": steps / 1000}}


def _lth(accs):
    rounds = [{"round": i, "sparsity": 1 - 0.8 ** i, "test_accuracy": a, "val_accuracy": a,
               "train_steps": 1000 * (i + 1), "wall_seconds": i + 1}
              for i, a in enumerate(accs)]
    return {"rounds": rounds}


@pytest.fixture(scope="module")
def runs():
    r = {}
    for seed, dense in enumerate([0.980, 0.982, 0.981]):  # mean 0.981
        r[f"dense_seed{seed}"] = _single(dense, 1.0, 30000)
        # LTH: 0.8^i densities, matching (>= 0.981) down to round 15 (3.5%).
        r[f"lth_seed{seed}"] = _lth([0.982] * 16 + [0.975] * 4)
        for d, uni, udl, dl, rnd in [(0.2, 0.983, 0.980, 0.979, 0.978),
                                     (0.02, 0.9815, 0.970, 0.969, 0.955)]:
            r[f"unilth_s{1 - d:g}_seed{seed}"] = _single(uni, d, 30000)
            r[f"unidlth_s{1 - d:g}_seed{seed}"] = _single(udl + 0.001 * seed, d, 35000)
            r[f"dlth_s{1 - d:g}_seed{seed}"] = _single(dl, d, 27000)
            r[f"random_s{1 - d:g}_seed{seed}"] = _single(rnd, d, 18000)
    return r


def test_points_and_summary(bench, runs):
    rows = bench.summarize(bench.points(runs))
    unidlth = next(r for r in rows if r["method"] == "unidlth" and r["density"] == 0.02)
    assert unidlth["seeds"] == 3
    np.testing.assert_allclose(unidlth["test_accuracy_mean"], 0.971)
    np.testing.assert_allclose(unidlth["test_accuracy_std"], np.std([0.970, 0.971, 0.972]))
    lth = [r for r in rows if r["method"] == "lth"]
    assert len(lth) == 20 and all(r["seeds"] == 3 for r in lth)


def test_matching_and_lth_cost_interpolation(bench, runs):
    rows = bench.summarize(bench.points(runs))
    match, dense = bench.matching(rows)
    np.testing.assert_allclose(dense, 0.981)
    assert match["lth"]["density"] == round(0.8 ** 15, 4)  # last matching round
    assert match["unilth"]["density"] == 0.02
    assert "random" not in match and "unidlth" not in match
    # 0.8^i exactly: steps at round i are 1000 (i + 1); halfway in log density
    # between rounds 3 and 4 is 4,500 steps.
    np.testing.assert_allclose(bench.lth_steps_to(rows, 0.8 ** 3.5), 4500, rtol=1e-3)
    assert bench.lth_steps_to(rows, 0.001) is None  # beyond the trajectory


def test_targets_decided_from_rows(bench, runs):
    rows = bench.summarize(bench.points(runs))
    match, dense = bench.matching(rows)
    ratios = bench.cost_ratios(rows)
    tg = bench.targets(rows, match, dense, ratios)
    # LTH reaches 2% density after log(0.02)/log(0.8) = 17.5 rounds: ~18,500 steps.
    t = tg["unilth_matching_at_2pct_within_quarter_lth_steps"]
    assert t["met"] is False  # matching, but 30,000 steps is more than a quarter
    np.testing.assert_allclose(t["cost_ratio_at_2pct"], 30000 / bench.lth_steps_to(rows, 0.02))
    assert tg["unidlth_at_or_above_dlth_everywhere"]["met"] is True
    v = tg["unidlth_1pt_above_random_at_3_5pct_and_sparser"]
    assert v["met"] is True and v["margins"][0.02] == pytest.approx(0.016)
    text = bench.markdown(rows, match, dense, ratios, tg, runs)
    assert "| unidlth | 98.10 ± 0.08 | – | – | 97.10 ± 0.08 |" in text
    assert "Dense network (100% density): 98.10 ± 0.08." in text
    assert "**not met**" in text and "**met**" in text


def test_targets_undecided_without_runs(bench):
    tg = bench.targets([], {}, None, [])
    assert all(v.get("met") is None for k, v in tg.items() if "met" in v)


def test_readme_section_rewritten_between_markers(bench, tmp_path):
    path = tmp_path / "README.md"
    path.write_text(f"# head\n{bench.README_BEGIN}\nold table\n{bench.README_END}\ntail\n")
    assert bench.write_into_readme(str(path), "new table\n")
    assert path.read_text() == (f"# head\n{bench.README_BEGIN}\nnew table\n"
                                f"{bench.README_END}\ntail\n")
    other = tmp_path / "OTHER.md"
    other.write_text("no markers\n")
    assert not bench.write_into_readme(str(other), "x") and other.read_text() == "no markers\n"
