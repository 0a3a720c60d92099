"""The accuracy-vs-sparsity aggregation: table, matching, cost ratios, targets.

Synthetic results.json records stand in for finished runs, so the numbers the
README shows can be checked by hand.
"""

import json

import numpy as np
import pytest

from helpers import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("accuracy_vs_sparsity")


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


# --------------------------------------------------------------------------
# The controls and the targets of "UniLTH and UniDLTH must earn their place"

def _rounds_to(density):
    """LTH's (fractional) round count to `density` on the 0.8^i trajectory."""
    return np.log(density) / np.log(0.8)


def _lth_steps(epochs_per_round, density):
    return 1000 * epochs_per_round * (1 + _rounds_to(density))


def _traj(acc, epochs_per_round, seed=0):
    rounds = [{"round": i, "sparsity": 1 - 0.8 ** i, "test_accuracy": acc + 0.001 * seed,
               "val_accuracy": acc, "train_steps": 1000 * epochs_per_round * (i + 1),
               "wall_seconds": i + 1} for i in range(20)]
    return {"rounds": rounds}


def _with_epochs(run, epochs):
    run["total"]["epochs"] = epochs
    return run


@pytest.fixture(scope="module")
def controls():
    """LTH flat at 98.2% (IMP at 1 / 2 epochs a round: 97.0% / 97.6%), so every
    interpolated number below can be worked out by hand."""
    r = {}
    for seed in range(3):
        r[f"dense_seed{seed}"] = _single(0.981, 1.0, 30000)
        r[f"lth_seed{seed}"] = _traj(0.981, 10, seed)  # mean 0.982 over seeds 0-2
        r[f"lth_e1_seed{seed}"] = _traj(0.969, 1, seed)  # mean 0.970
        r[f"lth_e2_seed{seed}"] = _traj(0.975, 2, seed)  # mean 0.976
        r[f"lth_rewind_e1_seed{seed}"] = _traj(0.971, 1, seed)
        r[f"lth_rewind_e2_seed{seed}"] = _traj(0.977, 2, seed)
        # UniLTH: at 3.5%, sqrt(2) x IMP-e1's steps (halfway to IMP-e2 in log steps);
        # at 2%, 1.4 x IMP-e2's steps (between IMP-e2 and LTH).
        r[f"unilth_s0.965_seed{seed}"] = _single(0.9812, 0.035,
                                                 np.sqrt(2) * _lth_steps(1, 0.035))
        r[f"unilth_s0.98_seed{seed}"] = _single(0.975, 0.02, 1.4 * _lth_steps(2, 0.02))
        # unilth_retrain_k: cheaper than IMP at 1 epoch a round (its value, clamped).
        for s, d in (("0.965", 0.035), ("0.98", 0.02)):
            r[f"unilth_retrain_k_s{s}_seed{seed}"] = _single(0.990, d, 0.5 * _lth_steps(1, d))
        for s, d, udl, dl, eq in (("0.8", 0.2, 0.978, 0.977, 0.975),
                                  ("0.965", 0.035, 0.965, 0.960, 0.960),
                                  ("0.98", 0.02, 0.952, 0.951, 0.950)):
            r[f"unidlth_s{s}_seed{seed}"] = _with_epochs(_single(udl, d, 917 * 40), 40)
            r[f"dlth_s{s}_seed{seed}"] = _single(dl, d, 27510)
            r[f"random_equal_s{s}_seed{seed}"] = _with_epochs(_single(eq, d, 917 * 40), 40)
    return r


def test_run_names_and_specs(bench, tmp_path):
    assert bench.parse_name("lth_rewind_e2_seed1") == ("lth_rewind_e2", None, 1)
    assert bench.parse_name("unilth_retrain_k_s0.965_seed2") == ("unilth_retrain_k", 0.965, 2)
    assert bench.parse_name("random_equal_s0.98_seed0") == ("random_equal", 0.98, 0)
    specs = bench.run_specs(["lth_e1", "random_equal", "unidlth", "unilth_retrain_k"],
                            ["0.965"], ["0"], extra={"unidlth": ["--allocation=erk"],
                                                     "all": ["--train_limit=900"]},
                            data_dir="/d", lth_final_sparsity=0.985)
    names = [n for n, _ in specs]
    assert names == ["lth_e1_seed0", "unidlth_s0.965_seed0", "unilth_retrain_k_s0.965_seed0",
                     "random_equal_s0.965_seed0"]  # random_equal after what it reads
    flags = dict(specs)
    assert "--epochs_per_round=1" in flags["lth_e1_seed0"]
    assert "--rewind_step=0" in flags["lth_e1_seed0"]
    assert flags["unidlth_s0.965_seed0"][-2:] == ["--allocation=erk", "--train_limit=900"]
    assert "--epochs=60" in flags["unilth_retrain_k_s0.965_seed0"]
    eq = flags["random_equal_s0.965_seed0"]
    assert bench.depends_on(eq) == "unidlth_s0.965_seed0" and "--method=random" in eq
    assert bench.resolve(eq, str(tmp_path)) is None  # UniDLTH not finished
    (tmp_path / "unidlth_s0.965_seed0").mkdir()
    (tmp_path / "unidlth_s0.965_seed0" / "results.json").write_text(
        '{"total": {"epochs": 37, "train_steps": 33929}, "flags": {"allocation": "erk", '
        '"block_size": null, "epochs": 60}}')
    defaults = {"allocation": "uniform", "block_size": None, "output_rate_scale": 0.5}
    resolved = bench.resolve(eq, str(tmp_path), defaults)
    assert "--epochs=37" in resolved and "--allocation=erk" in resolved  # the same mask flags
    assert resolved[-1] == "--train_limit=900" and not any("block_size" in f for f in resolved)
    # A run on its default allocation records it only among its hyperparameters:
    # the control still draws an ERK mask, and a mask flag at the random
    # method's own default is left out.
    (tmp_path / "unidlth_s0.965_seed0" / "results.json").write_text(
        '{"total": {"epochs": 41}, "flags": {"allocation": null}, "hyperparameters": '
        '{"allocation": "erk", "output_rate_scale": 0.5, "block_size": null}}')
    resolved = bench.resolve(eq, str(tmp_path), defaults)
    assert "--epochs=41" in resolved and "--allocation=erk" in resolved
    assert not any("output_rate_scale" in f for f in resolved)


def test_changed_defaults_are_the_library_defaults(bench):
    from tf_unilth import methods
    for method, (_, given) in bench.CHANGED_DEFAULTS.items():
        defaults = {f.name: f.default for f in methods.get(method).hyperparameters()}
        for flag in given:
            name, _, value = flag[2:].partition("=")
            assert defaults[name] == (value if value else True), (method, flag)
    assert bench.random_mask_defaults()["allocation"] == "uniform"


def test_a_run_of_the_same_command_is_reused(bench, tmp_path, monkeypatch):
    other = tmp_path / "stage2"
    new, old = "c" * 40, "0" * 40  # libraries with / without the changed defaults
    monkeypatch.setattr(bench, "has_commit", lambda commit, since: commit == new)
    runs = [("erk_rae", old, ["--data_dir=/a", "--method=unidlth", "--seed=0",
                              "--allocation=erk", "--remove_at_end"]),
            ("v1_then_default", old, ["--data_dir=/a", "--method=unidlth", "--seed=1"]),
            ("v1_named", new, ["--method=unidlth", "--seed=2", "--allocation=uniform",
                               "--noremove_at_end"]),
            ("unfinished", new, ["--method=dlth", "--seed=0"])]
    for name, commit, flags in runs:
        (other / name).mkdir(parents=True)
        (other / name / "launch.json").write_text(json.dumps(
            {"flags": flags, "library_commit": commit}))
        if name != "unfinished":
            (other / name / "results.json").write_text("{}")
    where = [str(other)]
    # Today's defaults named or not, paths aside: the same run.
    assert bench.find_reusable(["--data_dir=/b", "--method=unidlth", "--seed=0"], where) == \
        str(other / "erk_rae")
    # The same flags from a library whose defaults were the old ones: not the same run.
    assert bench.find_reusable(["--method=unidlth", "--seed=1"], where) is None
    assert bench.find_reusable(["--method=unidlth", "--seed=1", "--allocation=uniform",
                                "--noremove_at_end"], where) is None
    assert bench.find_reusable(["--method=unidlth", "--seed=2", "--allocation=uniform",
                                "--noremove_at_end"], where) == str(other / "v1_named")
    assert bench.find_reusable(["--method=dlth", "--seed=0"], where) is None  # unfinished
    assert bench.find_reusable(["--method=unidlth", "--seed=0"], [str(tmp_path / "no")]) is None


def test_interpolation_at_a_density(bench, controls):
    pts = bench.points(controls)
    rows = bench.summarize(pts)
    lth = bench.row_at(rows, "lth", 0.035)
    assert lth["interpolated"]
    np.testing.assert_allclose(lth["test_accuracy_mean"], 0.982)
    np.testing.assert_allclose(lth["train_steps_mean"], _lth_steps(10, 0.035))
    per_seed = bench.seeds_at(pts, "lth_e2", 0.02)
    assert [v["seed"] for v in per_seed] == [0, 1, 2]
    np.testing.assert_allclose([v["test_accuracy"] for v in per_seed], [0.975, 0.976, 0.977])
    np.testing.assert_allclose(per_seed[0]["train_steps"], _lth_steps(2, 0.02))
    assert bench.row_at(rows, "unilth", 0.035)["interpolated"] is False
    assert bench.row_at(rows, "unilth", 0.1) is None


def test_imp_at_the_same_steps(bench, controls):
    rows = bench.summarize(bench.points(controls))
    half = bench.imp_at_steps(rows, 0.035, np.sqrt(2) * _lth_steps(1, 0.035))
    assert half["between"] == ["lth_e1", "lth_e2"] and half["clamped"] is None
    np.testing.assert_allclose(half["test_accuracy"], 0.973)  # halfway in log steps
    beyond = bench.imp_at_steps(rows, 0.02, 1.4 * _lth_steps(2, 0.02))
    assert beyond["between"] == ["lth_e2", "lth"]
    np.testing.assert_allclose(beyond["test_accuracy"], 0.976 + 0.006 * np.log(1.4) / np.log(5))
    cheap = bench.imp_at_steps(rows, 0.02, 100)
    assert cheap["clamped"] == "below" and cheap["test_accuracy"] == pytest.approx(0.970)
    no_short = [r for r in rows if r["method"] != "lth_e2"]
    assert bench.imp_at_steps(no_short, 0.02, 20000) is None


def test_issue_targets(bench, controls):
    rows = bench.summarize(bench.points(controls))
    match, dense = bench.matching(rows)
    tg = bench.targets(rows, match, dense, bench.cost_ratios(rows))
    u = tg["unilth_earns_its_place"]
    at35, at2 = u["by_density"][0.035], u["by_density"][0.02]
    np.testing.assert_allclose(at35["minus_lth"], 0.9812 - 0.982)
    np.testing.assert_allclose(at35["minus_imp"], 0.9812 - 0.973)
    np.testing.assert_allclose(at35["steps_ratio"], np.sqrt(2) / 10)
    np.testing.assert_allclose(at2["steps_ratio"], 0.28)
    # No 10-epoch k = 500 row here: beyond IMP-e2 (k = 500), its value.
    assert at2["imp_rewind_at_steps"]["clamped"] == "above"
    np.testing.assert_allclose(at2["minus_imp_rewind"], 0.975 - 0.978)
    assert u["parts"] == {"within_0.10_of_lth_at_3.5pct": True,
                          "0.20_above_imp_at_same_steps": False,  # -0.23 points at 2%
                          "steps_within_0.30x_lth": True}
    assert u["met"] is False
    k = tg["unilth_retrain_k_same_test"]
    assert k["met"] is True and k["by_density"][0.02]["imp_at_steps"]["clamped"] == "below"
    d = tg["unidlth_earns_its_place"]
    assert d["parts"] == {"at_or_above_dlth_everywhere": True, "0.30_above_random_equal": False}
    np.testing.assert_allclose(d["vs_random_equal"][0.035]["minus_random_equal"], 0.005)
    np.testing.assert_allclose(d["vs_random_equal"][0.02]["minus_random_equal"], 0.002)
    assert [c["density"] for c in d["vs_dlth"]] == [0.2, 0.035, 0.02]
    pts = bench.points(controls)
    text = bench.markdown(rows, match, dense, bench.cost_ratios(rows), tg, controls, pts=pts)
    assert "- (1) UniLTH: **not met**." in text
    assert "3.5%: 98.12 at 22,661 steps (0.14x LTH's 160,235); LTH 98.20 (-0.08 points)" in text
    assert "IMP at the same steps 97.30 (between lth_e1 and lth_e2; +0.82 points" in text
    assert "- (2) UniDLTH: **not met**. At or above DLTH at every density: **met**" in text
    assert "3.5%: 96.50 vs 96.00, +0.50" in text
    assert "| lth_e2 | 97.60 ± 0.08 | 32,047 | 97.60 ± 0.08 | 37,063 |" in text
    assert "| random_equal | 96.00 ± 0.00 | 36,680 | 95.00 ± 0.00 | 36,680 |" in text
    assert "IMP's short-round controls" in text


def test_issue_targets_undecided_without_controls(bench, runs):
    rows = bench.summarize(bench.points(runs))
    match, dense = bench.matching(rows)
    tg = bench.targets(rows, match, dense, bench.cost_ratios(rows))
    for key in ("unilth_earns_its_place", "unilth_retrain_k_same_test",
                "unidlth_earns_its_place"):
        assert tg[key]["met"] is None
    text = bench.markdown(rows, match, dense, bench.cost_ratios(rows), tg, runs)
    assert "- (1) UniLTH: not decided yet (runs missing)." in text


def test_plots_written(bench, controls, tmp_path):
    pts = bench.points(controls)
    rows = bench.summarize(pts)
    bench.plot(rows, str(tmp_path / "acc.png"), str(tmp_path / "cost.png"))
    bench.plot_pareto(pts, rows, str(tmp_path / "pareto.png"))
    for name in ("acc.png", "cost.png", "pareto.png"):
        assert (tmp_path / name).stat().st_size > 10000


def test_the_keras3_grid_runner_plans_the_grids_cells_and_their_epochs(tmp_path):
    """grid_keras3.py (the Conv-2 / Fashion-MNIST grid on the GPU machine) runs
    the very cells of accuracy_vs_sparsity, and its deadline check counts a
    cell's epochs as the methods train them."""
    runner = load_benchmark("grid_keras3")
    grid = load_benchmark("accuracy_vs_sparsity")
    defaults = (grid.FLAGS[f].default for f in ("methods", "sparsities", "seeds"))
    specs = dict(grid.run_specs(*defaults, extra={}, data_dir="npz", lth_final_sparsity=0.985))
    assert len(specs) == 93 and "random_equal_s0.965_seed2" in specs
    lth = specs["lth_seed0"]  # to 1.5% density at 20% a round: 19 levels + the dense one
    assert runner._epochs(lth) == 20 * 10  # pylint: disable=protected-access
    assert runner._epochs(specs["lth_e1_seed0"]) == 20  # pylint: disable=protected-access
    assert runner._epochs(specs["unilth_s0.98_seed1"]) == 60  # pylint: disable=protected-access
    assert runner._epochs(specs["dense_seed0"]) == 30  # pylint: disable=protected-access
    moved = runner._with_lr(specs["dense_seed0"], 3e-4)  # pylint: disable=protected-access
    assert [a for a in moved if a.startswith("--learning_rate")] == ["--learning_rate=0.0003"]
    fv = runner._flag_values(lth)  # pylint: disable=protected-access
    assert (fv.method, fv.rewind_step, fv.epochs_per_round, fv.target_sparsity) == (
        "lth", 0, 10, 0.985)
