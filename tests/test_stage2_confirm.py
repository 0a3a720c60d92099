"""benchmarks/stage2_confirm.py's aggregation on synthetic run directories.

Every number below is worked out by hand from the synthetic results.json
files, so a wrong interpolation, pairing or target shows up as a failure.
"""

import json
import os

import numpy as np
import pytest

from helpers import load_benchmark


@pytest.fixture(scope="module")
def s2():
    return load_benchmark("stage2_confirm")


def _final(val, test, sparsity, steps, epochs, flags=None):
    return {"final": {"sparsity": sparsity, "val_accuracy": val, "test_accuracy": test},
            "total": {"train_steps": steps, "epochs": epochs, "wall_seconds": 1.0},
            "rounds": [{"sparsity": sparsity}], "flags": dict(flags or {}, seed=0)}


def _lth(densities, accs, steps_per_round):
    rounds = [{"round": i, "sparsity": 1 - d, "val_accuracy": a, "test_accuracy": a,
               "train_steps": steps_per_round * (i + 1)}
              for i, (d, a) in enumerate(zip(densities, accs))]
    return {"rounds": rounds, "final": {"sparsity": 1 - densities[-1], "val_accuracy": accs[-1],
                                        "test_accuracy": accs[-1]},
            "total": {"train_steps": steps_per_round * len(rounds), "epochs": len(rounds)}}


# LTH rounds bracketing both densities: 4% -> 3% and 2.5% -> 1.6% (the
# accuracies fall linearly in log density between them).
DENS = [0.04, 0.03, 0.025, 0.016]


def _imp_acc(epr, density):
    """The synthetic IMP accuracy at `density`, per epochs-a-round."""
    base = {1: 0.90, 2: 0.94, 10: 0.98}[epr]
    return base + 0.01 * np.log(density / 0.016)


def _write(root, name, results):
    os.makedirs(os.path.join(root, name), exist_ok=True)
    with open(os.path.join(root, name, "results.json"), "w") as f:
        json.dump(results, f)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("runs"))
    for seed in range(3):
        for row, epr, k in [("lth_e1", 1, 0), ("lth_e2", 2, 0), ("lth", 10, 0),
                            ("lth_rewind_e1", 1, 500), ("lth_rewind_e2", 2, 500),
                            ("lth_rewind", 10, 500)]:
            _write(root, f"{row}_seed{seed}",
                   _lth(DENS, [_imp_acc(epr, d) for d in DENS], 1000 * epr))
        for sp in ("0.965", "0.98"):
            s = float(sp)
            # UniLTH: steps between lth_e1's and lth_e2's at each density.
            _write(root, f"unilth_defaults_s{sp}_seed{seed}",
                   _final(0.970 + 0.001 * seed, 0.975, s, 2500, 25))
            # imp: +0.3 points val on seeds 0 and 1, -0.1 on seed 2: not a win.
            _write(root, f"unilth_imp_s{sp}_seed{seed}",
                   _final(0.970 + 0.001 * seed + [0.003, 0.003, -0.001][seed], 0.976, s,
                          2500, 25))
            _write(root, f"unidlth_defaults_s{sp}_seed{seed}", _final(0.95, 0.951, s, 5000, 50))
            # erk: +0.5 +0.6 +0.7 points val: a win.
            _write(root, f"unidlth_erk_s{sp}_seed{seed}",
                   _final(0.955 + 0.001 * seed, 0.96, s, 4900, 49, {"allocation": "erk"}))
            _write(root, f"dlth_s{sp}_seed{seed}", _final(0.95, 0.955, s, 27510, 30))
            _write(root, f"random_s{sp}_seed{seed}", _final(0.94, 0.945, s, 18340, 20))
            _write(root, f"random_e50_s{sp}_seed{seed}", _final(0.946, 0.948, s, 5000, 50))
            _write(root, f"random_e49_erk_s{sp}_seed{seed}", _final(0.95, 0.956, s, 4900, 49))
    return root


def test_names(s2):
    assert s2.parse("unidlth_erk_rae_s0.965_seed2") == ("unidlth_erk_rae", "0.965", 2)
    assert s2.parse("lth_rewind_e1_seed1") == ("lth_rewind_e1", None, 1)
    assert s2.parse("notarun") is None
    erk = _final(0.9, 0.9, 0.98, 1, 48, {"allocation": "erk"})
    name, flags = s2.random_equal_spec(erk, "0.98", 1)
    assert name == "random_e48_erk_s0.98_seed1"
    assert "--epochs=48" in flags and "--allocation=erk" in flags and "--seed=1" in flags
    assert s2.random_spec("0.965", 2)[0] == "random_s0.965_seed2"  # the 20-epoch control


def test_lth_read_in_log_density(s2, work):
    cells = s2.cells(s2.load(work))
    p = cells[("lth_e2", "0.965")][0]
    # Between the 4% and 3% rounds (1 and 2 x 2000 steps).
    w = (np.log(0.04) - np.log(0.035)) / (np.log(0.04) - np.log(0.03))
    np.testing.assert_allclose(p["train_steps"], 2000 + w * 2000)
    np.testing.assert_allclose(p["test_accuracy"], _imp_acc(2, 0.035), atol=1e-12)
    # The final ticket, not rounds[-1], for the others.
    assert cells[("unilth_defaults", "0.98")][2]["val_accuracy"] == pytest.approx(0.972)


def test_random_equal_matched_by_epochs_and_allocation(s2, work):
    cells = s2.cells(s2.load(work))
    assert cells[("random_equal[unidlth_defaults]", "0.98")][1]["run"] == "random_e50_s0.98_seed1"
    assert cells[("random_equal[unidlth_erk]", "0.98")][1]["run"] == "random_e49_erk_s0.98_seed1"


def test_imp_at_equal_steps(s2, work):
    cells = s2.cells(s2.load(work))
    imp = s2.imp_equal(cells, "unilth_defaults", "0.965", s2.IMP_K0)[0]
    s1 = cells[("lth_e1", "0.965")][0]["train_steps"]
    s2_ = cells[("lth_e2", "0.965")][0]["train_steps"]
    w = (np.log(2500) - np.log(s1)) / (np.log(s2_) - np.log(s1))
    a1, a2 = _imp_acc(1, 0.035), _imp_acc(2, 0.035)
    np.testing.assert_allclose(imp["test_accuracy"], a1 + w * (a2 - a1))
    assert imp["clamped"] is None
    # Below the cheapest IMP row: that row's accuracy, and said so.
    low = s2.imp_at_steps([(1000, {"val_accuracy": 0.5, "test_accuracy": 0.6}),
                           (2000, {"val_accuracy": 0.7, "test_accuracy": 0.8})], 10)
    assert low["test_accuracy"] == 0.6 and low["clamped"] == "below"


def test_imp_at_steps_needs_bracketing_rows(s2):
    cells = {("u", "0.965"): {0: {"train_steps": 5000}},
             ("lth_e1", "0.965"): {0: {"train_steps": 1000, "val_accuracy": 0.1,
                                       "test_accuracy": 0.1}},
             ("lth_e2", "0.965"): {0: {"train_steps": 2000, "val_accuracy": 0.2,
                                       "test_accuracy": 0.2}}}
    # Above lth_e2 with the 10-epoch row missing: no value, never a clamp to e2.
    assert s2.imp_equal(cells, "u", "0.965", s2.IMP_K0) == {}
    cells[("lth", "0.965")] = {0: {"train_steps": 10000, "val_accuracy": 0.3,
                                   "test_accuracy": 0.3}}
    got = s2.imp_equal(cells, "u", "0.965", s2.IMP_K0)[0]
    w = np.log(5000 / 2000) / np.log(10000 / 2000)
    np.testing.assert_allclose(got["val_accuracy"], 0.2 + 0.1 * w)


def test_paired_differences_and_verdicts(s2, work):
    pairs = s2.comparisons(s2.cells(s2.load(work)))
    imp = pairs["0.965"]["unilth_imp - unilth_defaults"]
    np.testing.assert_allclose(imp["val_accuracy"]["per_seed"], [0.3, 0.3, -0.1], atol=1e-9)
    assert imp["verdict_val"] == "within noise" and not imp["val_accuracy"]["all_positive"]
    erk = pairs["0.98"]["unidlth_erk - unidlth_defaults"]
    np.testing.assert_allclose(erk["val_accuracy"]["per_seed"], [0.5, 0.6, 0.7], atol=1e-9)
    np.testing.assert_allclose(erk["val_accuracy"]["std"], 0.1, atol=1e-9)
    assert erk["verdict_val"] == "win"
    rnd = pairs["0.98"]["unidlth_erk - random_equal"]
    np.testing.assert_allclose(rnd["test_accuracy"]["mean"], 0.4, atol=1e-9)
    # Fewer than 3 seeds is never a decision.
    two = s2.paired({0: {"val_accuracy": .9, "test_accuracy": .9},
                     1: {"val_accuracy": .9, "test_accuracy": .9}},
                    {0: {"val_accuracy": .8, "test_accuracy": .8},
                     1: {"val_accuracy": .8, "test_accuracy": .8}})
    assert s2.verdict(two) == "incomplete"


def test_targets(s2, work):
    cm = s2.cells(s2.load(work))
    tg = s2.targets(s2.comparisons(cm), s2.row_summaries(cm))
    uni = tg["unilth_defaults"]
    # UniLTH 97.5% against LTH (10 epochs a round) at 3.5%: 98 + log(3.5/1.6) points.
    np.testing.assert_allclose(uni["0.965"]["minus_lth"],
                               97.5 - 100 * _imp_acc(10, 0.035), atol=1e-9)
    assert uni["met"] is False and uni["parts"][0] is False
    np.testing.assert_allclose(uni["0.98"]["steps_ratio_to_lth"],
                               2500 / cm[("lth", "0.98")][0]["train_steps"])
    erk = tg["unidlth_erk"]
    np.testing.assert_allclose(erk["0.965"]["minus_random_equal"], 0.4, atol=1e-9)
    np.testing.assert_allclose(erk["0.965"]["minus_dlth"], 0.5, atol=1e-9)
    assert erk["met_at_3.5_and_2"] is True
    assert tg["unidlth_defaults"]["met_at_3.5_and_2"] is False  # 95.1 < DLTH's 95.5
    assert tg["unidlth_erk_rae"]["met_at_3.5_and_2"] is None    # no runs: undecided


def test_aggregate_writes_json_and_plot(s2, work, tmp_path):
    report = s2.main(["--aggregate_only", f"--work_dir={work}", f"--output_dir={tmp_path}"])
    del report
    with open(tmp_path / "stage2_confirm.json") as f:
        out = json.load(f)
    names = {r["name"] for r in out["runs"]}
    assert "unidlth_erk_s0.98_seed2" in names and len(names) == 6 * 3 + 8 * 2 * 3
    assert "unidlth_erk_rae_s0.965_seed0" in out["runs_missing"]
    assert len(out["runs_missing"]) == len(set(out["runs_missing"]))
    assert (tmp_path / "pareto_steps.png").stat().st_size > 10000


def test_the_fast_path_quality_check_reads_old_and_new_at_the_same_densities(s2):
    # Old grid: LTH round records through 10% and 3.5%; UniLTH points at 0.1.
    old_lth = [{"sparsity": 1 - d, "test_accuracy": a, "val_accuracy": a, "train_steps": 1}
               for d, a in
               [(0.2, 0.980), (0.1, 0.982), (0.05, 0.981), (0.025, 0.975)]]
    old = {"round_records": {f"lth_seed{s}": old_lth for s in range(3)},
           "points": [{"method": "unilth", "seed": s, "density": 0.1,
                       "test_accuracy": 0.980 + 0.001 * s} for s in range(3)]}
    new_lth = _lth([0.2, 0.1, 0.05, 0.025], [0.98, 0.983, 0.98, 0.97], 100)
    runs = {f"lth_seed{s}": new_lth for s in range(3)}
    runs.update({f"unilth_defaults_s0.9_seed{s}": _final(0.97, 0.990, 0.9, 10, 1)
                 for s in range(2)})
    q = s2.fast_path_quality(runs, old)
    lth = q["lth@0.1"]  # 10% is a round: no interpolation on either side
    assert lth["old"]["per_seed"] == pytest.approx([0.982] * 3)
    assert lth["new"]["per_seed"] == pytest.approx([0.983] * 3)
    assert lth["old"]["std"] == pytest.approx(0.0, abs=1e-12)
    assert lth["within"] is False and lth["not_below"] is True
    # 3.5%: between the 5% and 2.5% rounds, linear in log density.
    w = np.log(0.035 / 0.05) / np.log(0.025 / 0.05)
    assert q["lth@0.035"]["old"]["mean"] == pytest.approx(0.981 + w * (0.975 - 0.981))
    uni = q["unilth@0.1"]  # old 98.0/98.1/98.2 (std 0.1), new 99.0 on two seeds
    assert uni["new"]["n"] == 2 and uni["band"] == pytest.approx([0.979, 0.983])
    assert uni["within"] is False and uni["new_minus_old_points"] == pytest.approx(0.9)
    assert "band" not in q["unilth@0.035"]  # no run at all: nothing judged
