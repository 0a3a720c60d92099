"""benchmarks/second_family.py's pure parts: the learning-rate / budget choice,
the budgets, the run names and the aggregation, on synthetic records."""

import numpy as np
import pytest

from helpers import load_benchmark


@pytest.fixture(scope="module")
def sf():
    return load_benchmark("second_family")


LOG = """Execution: 100 step(s) per call, XLA on.
Epoch 1/3
167/167 - 31s - loss: 0.3469 - accuracy: 0.8929 - val_loss: 0.1162 - val_accuracy: 0.9666 - 31s/epoch
Epoch 2/3
167/167 - 26s - loss: 0.0904 - accuracy: 0.9731 - val_loss: 0.1046 - val_accuracy: 0.9678 - 26s/epoch
Epoch 3/3
167/167 - 26s - loss: 0.0500 - accuracy: 0.9800 - val_loss: 0.1000 - val_accuracy: 0.9701 - 26s/epoch
round  0 | sparsity   0.00% | val acc  97.01% | test acc  97.50% |   3 epochs
"""


def test_epoch_val_accuracies(sf):
    assert sf.epoch_val_accuracies(LOG) == [0.9666, 0.9678, 0.9701]
    assert sf.epoch_val_accuracies("no epochs here\nround 0 | val acc 97%") == []


def test_choose_best_rate_and_first_epoch_within_tolerance(sf):
    curves = {"0.0003": [0.90, 0.95, 0.960, 0.961],
              "0.001": [0.93, 0.970, 0.9705, 0.9695],
              "0.003": [0.94, 0.96, 0.965, 0.964]}
    assert sf.choose(curves, 0.001) == ("0.001", 2, 0.9705)
    assert sf.choose(curves, 0.0) == ("0.001", 3, 0.9705)
    # A tie between rates goes to the smaller one (by value, not by string).
    tie = {"0.003": [0.95], "0.0003": [0.95], "0.001": [0.90]}
    assert sf.choose(tie, 0.0)[0] == "0.0003"
    with pytest.raises(ValueError):
        sf.choose({"0.001": []}, 0.001)


def test_budgets_keep_the_lenet_ratios(sf):
    # LeNet grid: dense 30, random 20, LTH 10 a round, DLTH 30 (20 fine-tuning), Uni 60.
    assert sf.budgets(30) == {"dense": 30, "random": 20, "lth_epochs_per_round": 10,
                              "dlth": 30, "dlth_finetune": 20, "uni": 60}
    b = sf.budgets(4)
    assert b == {"dense": 4, "random": 3, "lth_epochs_per_round": 1, "dlth": 4,
                 "dlth_finetune": 3, "uni": 8}
    assert sf.budgets(1)["dlth"] - sf.budgets(1)["dlth_finetune"] >= 1  # a reg. phase


def test_uni_flags(sf):
    assert sf.uni_flags(16) == [] and sf.uni_flags(60) == []
    assert sf.uni_flags(8) == ["--round_epochs=1", "--min_finetune_epochs=2"]
    assert sf.uni_flags(15) == ["--round_epochs=1", "--min_finetune_epochs=5"]
    with pytest.raises(ValueError):
        sf.uni_flags(6)


def test_grid_specs_names_parse_and_order(sf):
    specs = sf.grid_specs("resmlp", 0.001, 12)
    names = [n for n, _ in specs]
    assert len(names) == len(set(names)) == 3 * (2 + 4 * 2)
    for name, flags in specs:
        method, sparsity, seed = sf.avs.parse_name(name)
        assert f"--seed={seed}" in flags and "--train_limit=5000" in flags
        assert "--validation_size=1000" in flags and "--learning_rate=0.001" in flags
        if sparsity is not None:
            assert f"--target_sparsity={sparsity:g}" in flags
    lth = dict(specs)["lth_seed1"]
    assert "--target_sparsity=0.98" in lth and "--epochs_per_round=4" in lth
    assert "--epochs=24" in dict(specs)["unidlth_s0.9_seed2"]
    order = [n for n, _ in sf.ordered(specs, sf.PRIORITY)]
    assert order[:3] == ["dense_seed0", "dense_seed1", "dense_seed2"]
    assert order.index("lth_seed2") < order.index("dlth_s0.9_seed0")
    assert set(order) == set(names)


def _single(acc, density, seed_steps=100, val=None, warnings=()):
    return {"final": {"sparsity": 1 - density, "test_accuracy": acc,
                      "val_accuracy": acc if val is None else val},
            "total": {"train_steps": seed_steps, "wall_seconds": 1.0, "epochs": 1},
            "warnings": [{"flag": w, "message": w} for w in warnings]}


def _lth(accs, densities):
    return {"rounds": [{"round": i, "sparsity": 1 - d, "test_accuracy": a, "val_accuracy": a,
                        "train_steps": 10 * (i + 1), "wall_seconds": 1.0}
                       for i, (a, d) in enumerate(zip(accs, densities))], "warnings": []}


def test_cells_table_and_warnings(sf):
    runs = {
        "dense_seed0": _single(0.95, 1.0), "dense_seed1": _single(0.97, 1.0),
        "random_s0.9_seed0": _single(0.90, 0.1, val=0.80),
        "random_s0.9_seed1": _single(0.94, 0.1, val=0.84, warnings=["chance_round"]),
        # LTH at densities 0.2 and 0.05: 0.1 lies halfway in log density.
        "lth_seed0": _lth([0.96, 0.92, 0.88], [1.0, 0.2, 0.05]),
        "lth_seed1": _lth([0.96, 0.94, 0.90], [1.0, 0.2, 0.05]),
    }
    pts = sf.avs.points(runs)
    cells = sf.cells_of(pts, [0.1, 0.02])
    d = cells[("dense", "dense")]
    assert d["test_mean"] == pytest.approx(0.96) and d["test_spread"] == pytest.approx(0.02)
    r = cells[("random", 0.1)]
    assert r["test_mean"] == pytest.approx(0.92) and r["val_mean"] == pytest.approx(0.82)
    assert r["test_std"] == pytest.approx(0.02) and r["seeds"] == [0, 1]
    lth = cells[("lth", 0.1)]
    # Per seed halfway between the rounds: 0.90 and 0.92; mean 0.91.
    assert lth["test_per_seed"] == pytest.approx([0.90, 0.92])
    assert lth["test_mean"] == pytest.approx(0.91)
    assert ("lth", 0.02) not in cells  # beyond the trajectory: not extrapolated
    assert ("unilth", 0.1) not in cells
    table = sf.table_markdown(cells, [0.1, 0.02])
    lines = table.splitlines()
    assert all(line.count("|") == 6 for line in lines)  # method + 2 x (val, test)
    assert "| dense (100%) | 96.00 | 96.00 ± 1.00 (2.00, 2) | 96.00 | 96.00 ± 1.00 (2.00, 2) |" \
        in lines
    assert "| random | 82.00 | 92.00 ± 2.00 (4.00, 2) | not run | not run |" in lines
    assert "| lth | 91.00 | 91.00 ± 1.00 (2.00, 2) | not run | not run |" in lines
    assert "| unilth | not run | not run | not run | not run |" in lines
    assert sf.warnings_of(runs) == {"random_s0.9_seed1": ["chance_round"]}
    specs = sf.grid_specs("conv2", 0.001, 4, methods=("dense", "random"), seeds=(0, 1))
    assert sf.missing_runs(specs, runs) == ["random_s0.98_seed0", "random_s0.98_seed1"]
    assert np.isfinite(lth["train_steps_mean"])
