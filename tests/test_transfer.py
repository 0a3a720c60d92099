"""Beyond LeNet: floors that keep every layer alive, an explicit output layer,
budgets that mean one thing, collapse said and flagged, reproducible runs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tf_unilth
from tf_unilth._compat import keras
from tf_unilth import masks, results, search
from tf_unilth.sparsity import Mask, allocation

from helpers import toy_data, toy_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = dict(verbose=0, printer=lambda *_: None)


def _init(k):
    return keras.initializers.GlorotNormal(seed=k)


def conv160():
    """A Conv1D net whose first layer has 160 weights."""
    inp = keras.Input((32, 1))
    x = keras.layers.Conv1D(16, 10, activation="relu", name="conv1",
                            kernel_initializer=_init(1))(inp)
    x = keras.layers.Conv1D(16, 3, activation="relu", name="conv2",
                            kernel_initializer=_init(2))(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inp, keras.layers.Dense(3, name="output", kernel_initializer=_init(3))(x))


def head_heavy():
    """Two small convs and an output layer holding 71% of the prunable weights."""
    inp = keras.Input((16, 1))
    x = keras.layers.Conv1D(8, 3, padding="same", activation="relu", name="conv1",
                            kernel_initializer=_init(1))(inp)
    x = keras.layers.Conv1D(16, 3, padding="same", activation="relu", name="conv2",
                            kernel_initializer=_init(2))(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inp, keras.layers.Dense(4, name="output", kernel_initializer=_init(3))(x))


def _data(dim, classes, n=192):
    x, y = toy_data(n=n, dim=dim, classes=classes)
    x = x[..., None]
    return (x[:128], y[:128]), (x[128:160], y[128:160]), (x[160:], y[160:])


METHODS = {
    "random": dict(epochs=1),
    "lth": dict(epochs_per_round=1, prune_rate=0.15),
    "dlth": dict(epochs=3, finetune_epochs=1),
    "unilth": dict(epochs=6, rounds=2, round_epochs=1, patience=1, min_finetune_epochs=1),
    "unidlth": dict(epochs=6, rounds=2, round_epochs=1, patience=1, min_finetune_epochs=1),
}


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("build,dim,classes,target", [(conv160, 32, 3, 0.97),
                                                      (head_heavy, 16, 4, 0.9)])
def test_every_layer_stays_alive_and_the_target_holds(method, build, dim, classes, target):
    train, val, test = _data(dim, classes)
    result = tf_unilth.find_ticket(build(), method, train, val, target_sparsity=target,
                                   test_data=test, batch_size=32, **QUIET, **METHODS[method])
    kept = masks.get_masks(result.pruned_model)
    assert not kept.empty_layers(), kept.report()
    assert all(n >= min(8, kept[k].size) for k, n in kept.alive_counts().items())
    assert result.sparsity == pytest.approx(target, abs=0.005)
    assert not [w for w in result.warnings if w["flag"] == "layer_emptied"]


def test_an_unreachable_target_is_a_clear_error_before_training():
    train, val, test = _data(32, 3)
    fits = []

    class Count(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            fits.append(1)

    # 1,000 weights at 99.5% keep 5; the three layers' floors keep 24.
    with pytest.raises(allocation.AllocationError,
                       match=r"conv1 \(160 weights, keeps >= 8\).*--exclude.*--floor_count"):
        tf_unilth.find_ticket(conv160(), "random", train, val, target_sparsity=0.995,
                              epochs=1, callbacks=[Count()], **QUIET)
    assert fits == []


def test_floors_redistribute_what_a_capped_layer_cannot_give():
    shapes = {"conv1/0": (10, 1, 16), "conv2/0": (3, 16, 16), "output/0": (16, 3)}
    alive = Mask.ones(shapes)
    # Without a floor, the output layer at half rate leaves conv1 one weight at 97%.
    bare = allocation.Uniform(0.5, allocation.NO_FLOOR).rates(alive, 0.03, ["output"])
    assert 160 * (1 - bare["conv1/0"]) < 1
    rates = allocation.Uniform(0.5).rates(alive, 0.03, ["output"])
    keep = {k: a.size * (1 - rates[k]) for k, a in alive.items()}
    assert min(keep.values()) >= 8 - 1e-6
    assert sum(keep.values()) == pytest.approx(0.03 * alive.count)
    erk = allocation.ERK.densities(shapes, 0.03, allocation.Floor())
    assert min(erk[k] * alive[k].size for k in shapes) >= 8 - 1e-6
    assert sum(erk[k] * alive[k].size for k in shapes) == pytest.approx(0.03 * alive.count)


def test_the_output_layer_is_the_one_producing_the_output():
    inp = keras.Input((20,))
    x = keras.layers.Dense(32, activation="relu", name="late_named_first")(inp)
    logits = keras.layers.Dense(3, name="logits")(x)
    side = keras.layers.Dense(5, name="unused_tail")(x)  # last in layer order, not an output
    model = keras.Model(inp, keras.layers.Softmax()(logits))
    del side
    assert masks.output_layers(model) == ("logits",)
    assert masks.output_layers(tf_unilth.prune(toy_model())) == ("output",)
    assert masks.output_layers(toy_model(), "fc2") == ("fc2",)
    with pytest.raises(ValueError, match="output_layer names \\['nope'\\]"):
        masks.output_layers(toy_model(), "nope")


def test_a_round_with_a_uniform_prediction_is_a_collapse_above_chance_accuracy():
    # Zero weights and a learning rate of 1e-9: every input gets about the same
    # logits, a loss of ln 3; the training labels (all 0) tip them to class 0,
    # 45% of the validation labels (above chance + 2%).
    zero = keras.initializers.Zeros()
    inp = keras.Input((20,))
    x = keras.layers.Dense(16, activation="relu", kernel_initializer=zero, name="fc1")(inp)
    model = keras.Model(inp, keras.layers.Dense(3, kernel_initializer=zero, name="out")(x))
    x_val, _ = toy_data(n=100, seed=1)
    y_val = np.array([0] * 45 + [1] * 30 + [2] * 25)
    said = []
    x_train, _ = toy_data(n=64)
    result = tf_unilth.find_ticket(model, "random", (x_train, np.zeros(64, "int64")),
                                   (x_val, y_val),
                                   target_sparsity=0.5, epochs=1, learning_rate=1e-9,
                                   batch_size=32, verbose=0, printer=said.append)
    assert result.rounds[-1]["val_accuracy"] == pytest.approx(0.45)
    assert {w["flag"] for w in result.warnings} == {"chance_loss"}
    assert any("that of a uniform prediction over 3 classes" in s for s in said)


def test_degenerate_runs_are_said_flagged_and_strict_stops(tmp_path):
    x, y = toy_data(n=160)
    # Every validation input appears with each of the 3 labels: chance, exactly.
    val = (np.repeat(x[:20], 3, axis=0), np.tile(np.arange(3), 20))
    said = []
    result = tf_unilth.find_ticket(
        toy_model(), "unilth", (x, y), val, target_sparsity=0.5, epochs=5, rounds=1,
        round_epochs=1, patience=50, min_finetune_epochs=1, batch_size=32, verbose=0,
        printer=said.append)
    flags = {w["flag"] for w in result.warnings}
    assert {"trigger_forced", "chance_accuracy"} <= flags
    assert any(s.startswith("WARNING: unilth: the plateau trigger did not fire") for s in said)
    run = results.RunDir(str(tmp_path))
    run.write_results(method="unilth", dataset="toy", model_name="toy", seed=0,
                      target_sparsity=0.5, result=result, flag_values={})
    written = json.loads((tmp_path / "results.json").read_text())
    assert {w["flag"] for w in written["warnings"]} == flags
    with pytest.raises(search.DegenerateTicket, match="plateau trigger did not fire"):
        tf_unilth.find_ticket(toy_model(), "unilth", (x, y), val, target_sparsity=0.5,
                              epochs=5, rounds=1, round_epochs=1, patience=50,
                              min_finetune_epochs=1, batch_size=32, strict=True, **QUIET)


def test_an_emptied_layer_is_flagged():
    inp = keras.Input((20,))
    x = keras.layers.Dense(32, activation="relu", name="fc1", kernel_initializer=_init(1))(inp)
    x = keras.layers.Dense(1, activation="relu", name="bottleneck",
                           kernel_initializer=_init(2))(x)  # 32 weights
    model = keras.Model(inp, keras.layers.Dense(3, name="output", kernel_initializer=_init(3))(x))
    x_, y_ = toy_data(n=96)
    result = tf_unilth.find_ticket(  # no floor, and rounds past what the layer has
        model, "lth", (x_, y_), (x_[:32], y_[:32]), target_sparsity=0.99, prune_rate=0.6,
        epochs_per_round=1, floor_count=0, floor_fraction=0.0, batch_size=32, **QUIET)
    assert "layer_emptied" in {w["flag"] for w in result.warnings}


def test_budgets_mean_the_whole_run():
    x, y = toy_data(n=160)
    data = dict(train_data=(x[:128], y[:128]), validation_data=(x[128:], y[128:]),
                batch_size=32, **QUIET)
    lth = tf_unilth.find_ticket(toy_model(), "lth", target_sparsity=0.5, epochs=12,
                                prune_rate=0.3, **data)
    rounds = len(lth.rounds)
    assert lth.method_info["plan"]["epochs_per_round"] == 12 // rounds
    assert lth.total["epochs"] == (12 // rounds) * rounds <= 12
    with pytest.raises(ValueError, match="cannot hold .* trainings"):
        tf_unilth.find_ticket(toy_model(), "lth", target_sparsity=0.9, epochs=3, **data)
    dlth = tf_unilth.find_ticket(toy_model(), "dlth", target_sparsity=0.5, epochs=6,
                                 finetune_epochs=2, **data)
    assert dlth.total["epochs"] == 6  # not 6 + 1
    with pytest.raises(ValueError, match="leaves no regularization epoch"):
        tf_unilth.find_ticket(toy_model(), "dlth", target_sparsity=0.5, epochs=20,
                              finetune_epochs=20, **data)  # (the default is a share: 13)
    with pytest.raises(ValueError, match="cannot hold stage 1"):
        tf_unilth.find_ticket(toy_model(), "unilth", target_sparsity=0.5, epochs=12, **data)


def test_dlths_lambda_reaches_its_maximum_in_its_regularization_phase():
    x, y = toy_data(n=35 * 128)  # 35 steps an epoch at find_ticket's batch of 128
    result = tf_unilth.find_ticket(toy_model(), "dlth", (x, y), (x[:256], y[:256]),
                                   target_sparsity=0.5, **QUIET)
    plan = result.method_info["plan"]
    assert plan["reg_epochs"] == 10 and plan["lambda_steps_to_max"] <= 10 * 35
    assert result.rounds[0]["lambda_reached"] == pytest.approx(1.0)


def test_deterministic_runs_give_the_same_numbers_in_two_processes(mnist_data_dir, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

    def run(name):
        out = tmp_path / name
        cmd = [sys.executable, os.path.join(ROOT, "examples", "find_ticket.py"), "--method=lth",
               "--target_sparsity=0.5", "--epochs_per_round=1", "--prune_rate=0.4",
               "--train_limit=1200", "--validation_size=300", "--test_limit=300",
               "--deterministic", "--verbose=0", f"--data_dir={mnist_data_dir}",
               f"--output_dir={out}"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        found = json.loads((out / "results.json").read_text())
        return [{k: v for k, v in r.items() if k != "wall_seconds"} for r in found["rounds"]], \
            found["final"], found["distribution"]["masks_digest"]

    assert run("a") == run("b")
