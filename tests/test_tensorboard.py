"""What a search shows in TensorBoard, read back as TensorBoard reads it."""

import glob

import pytest

import tf_unilth
from tf_unilth._compat import tf

from helpers import toy_data, toy_model

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="tensorboard is the [tensorboard] extra")


def _scalars(log_dir):
    files = glob.glob(f"{log_dir}/**/events.out.tfevents.*", recursive=True)
    assert files, f"no event file under {log_dir}"
    found = {}
    for path in files:
        acc = event_accumulator.EventAccumulator(path, size_guidance={"tensors": 0})
        acc.Reload()
        for tag in acc.Tags()["tensors"]:
            found.setdefault(tag, []).extend(
                (e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag))
    return found


def test_a_unilth_search_shows_sparsity_lambda_rounds_and_events_on_a_monotone_axis(tmp_path):
    x, y = toy_data(n=240)
    result = tf_unilth.find_ticket(
        toy_model(), "unilth", (x[:180], y[:180]), (x[180:], y[180:]), target_sparsity=0.8,
        epochs=14, rounds=2, round_epochs=2, patience=2, batch_size=16, verbose=0,
        printer=lambda *_: None, log_dir=str(tmp_path / "logs"))
    scalars = _scalars(tmp_path / "logs")
    for tag in ("sparsity/total", "lambda", "round/index", "round/sparsity",
                "round/val_accuracy", "epoch/loss", "epoch/val_accuracy"):
        assert tag in scalars, (tag, sorted(scalars))
    assert any(t.startswith("sparsity/fc1") for t in scalars), sorted(scalars)
    assert any(t.startswith("events/") for t in scalars), sorted(scalars)
    # One point an epoch, the step axis never going back across the rewind.
    steps = [s for s, _ in scalars["epoch/loss"]]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert len(steps) == result.total["epochs"]
    # The last total sparsity is the ticket's; the rounds are the records'.
    assert scalars["sparsity/total"][-1][1] == pytest.approx(result.sparsity, abs=1e-6)
    assert [v for _, v in scalars["round/index"]] == [r["round"] for r in result.rounds]
    lambdas = [v for _, v in scalars["lambda"]]
    assert max(lambdas) > 0
