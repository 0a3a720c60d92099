"""docs/EXTENDING.md's code, run exactly as written: a new method in one file
(through find_ticket and the command line), a new criterion in one class."""

import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import tf_unilth
from tf_unilth import masks, methods, sparsity

from helpers import toy_data, toy_model

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "EXTENDING.md"


def _block(heading):
    """The first ```python block under `## heading` in docs/EXTENDING.md."""
    text = DOC.read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _write(tmp_path_factory, heading, name):
    path = tmp_path_factory.mktemp("docs") / f"{name}.py"
    path.write_text(_block(heading))
    return path


def _import(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def method_file(tmp_path_factory):
    path = _write(tmp_path_factory, "Write your own method", "my_method")
    _import(path)
    return path


@pytest.fixture(scope="module")
def criterion_file(tmp_path_factory):
    path = _write(tmp_path_factory, "Write your own criterion", "my_criterion")
    _import(path)
    return path


def _small(n=240):
    x, y = toy_data(n=n)
    return (x[:160], y[:160]), (x[160:200], y[160:200]), (x[200:], y[200:])


def test_the_documented_method_is_short_and_runs_through_find_ticket(method_file):
    code = [line for line in method_file.read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]
    assert len(code) < 30
    assert "unilth_retrain" in methods.names()
    fields = {f.name: f for f in methods.get("unilth_retrain").hyperparameters()}
    assert fields["retrain_epochs"].default == 10 and "patience" in fields  # UniLTH's too
    train, val, test = _small()
    result = tf_unilth.find_ticket(
        toy_model(), "unilth_retrain", train, val, target_sparsity=0.7, test_data=test,
        epochs=8, rounds=2, round_epochs=1, patience=1, retrain_epochs=2, batch_size=16,
        learning_rate=5e-3, verbose=0, printer=lambda *_: None)
    rounds = [r["round"] for r in result.rounds]
    assert rounds == [1, 2, 3] and result.rounds[-1]["retrained_from"] == "theta_0"
    assert result.sparsity == pytest.approx(0.7, abs=0.01)
    # Its cost is counted: the retraining's 2 epochs come after the UniLTH fit.
    assert result.rounds[-1]["epochs"] == result.total["epochs"] >= result.rounds[-2]["epochs"] + 2
    assert tf_unilth.ticket_sparsity(result.model) == pytest.approx(result.sparsity, abs=1e-6)
    with pytest.raises(TypeError, match="no hyperparameter.*'retrain_epoch'.*retrain_epochs"):
        tf_unilth.find_ticket(toy_model(), "unilth_retrain", train, val, retrain_epoch=1)


def test_the_documented_method_runs_from_the_command_line(method_file, mnist_data_dir,
                                                          tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, str(ROOT / "examples" / "find_ticket.py"), f"--plugin={method_file}",
           "--method=unilth_retrain", "--target_sparsity=0.75", "--epochs=6", "--rounds=1",
           "--round_epochs=1", "--patience=1", "--min_finetune_epochs=1", "--retrain_epochs=1", "--train_limit=1200",
           "--validation_size=300", "--test_limit=300", "--verbose=0",
           f"--data_dir={mnist_data_dir}", f"--output_dir={out}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "unilth_retrain"
    assert results["rounds"][-1]["retrained_from"] == "theta_0"
    assert results["flags"]["retrain_epochs"] == 1
    # Every hyperparameter as it ran, the defaults included (the flags leave them unset).
    hp = results["hyperparameters"]
    assert hp["retrain_epochs"] == 1 and hp["rounds"] == 1 and hp["gamma"] == 2.0
    assert results["flags"]["gamma"] is None
    helpfull = subprocess.run(cmd[:3] + ["--helpfull"], env=env, capture_output=True,
                              text=True, timeout=120)
    assert "--retrain_epochs" in helpfull.stdout and "unilth_retrain 10" in helpfull.stdout


def test_the_documented_criterion_is_registered_and_drives_lth(criterion_file):
    assert "saliency" in sparsity.criteria.names()
    train, val, test = _small()
    seen = {}

    class Spy(sparsity.criteria.get("saliency").__class__):
        def score(self, weights, gradients=None):
            seen["gradients"] = gradients
            return super().score(weights, gradients)

    result = tf_unilth.find_ticket(
        toy_model(), "lth", train, val, target_sparsity=0.5, test_data=test, epochs_per_round=1,
        prune_rate=0.5, criterion="saliency", batch_size=16, verbose=0,
        printer=lambda *_: None)
    assert result.rounds[1]["sparsity"] < 0.5 <= result.sparsity  # whole rounds to the target
    # The same run's first pruning step, redone by hand: the removed weights
    # are those of lowest |w * grad| on the first training batch.
    model = tf_unilth.prune(toy_model())
    data = tf_unilth.search.Data.make(train, val, test, batch_size=16)
    model.compile("adam", tf_unilth.keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    selector = sparsity.Selector(Spy(), "uniform")
    rates = selector.allocation.fixed_rates(masks.get_masks(model), 0.5, "output")
    removal = masks.choose(model, selector, rates, next(iter(data.train)))
    grads, weights = seen["gradients"], masks.get_weights(model)
    for key in removal:
        score = np.abs(weights[key] * grads[key])
        assert score[removal[key]].max() <= score[~removal[key]].min()
    with pytest.raises(ValueError, match="needs gradients"):
        masks.choose(model, selector, rates)
