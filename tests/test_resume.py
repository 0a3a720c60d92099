"""Resuming a search: interrupted fits continue, finished work is not redone,
and a diverged loss puts the model back to its last good snapshot."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tf_unilth
from tf_unilth._compat import keras
from tf_unilth import masks

from helpers import toy_data, toy_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Interrupted(Exception):
    pass


class InterruptAt(keras.callbacks.Callback):
    """Raises in the middle of the `epochs`-th epoch of the whole search (a
    crash mid-epoch: that epoch's snapshot is never written)."""

    def __init__(self, epochs):
        super().__init__()
        self.left = epochs

    def on_epoch_begin(self, epoch, logs=None):
        self.left -= 1

    def on_train_batch_end(self, batch, logs=None):
        if self.left == 0 and batch == 3:
            raise Interrupted()


def _without_time(records):
    return [{k: v for k, v in r.items() if k != "wall_seconds"} for r in records]


def _search(method, state_dir, callbacks=(), **kw):
    x, y = toy_data(n=240)
    return tf_unilth.find_ticket(
        toy_model(), method, (x[:160], y[:160]), (x[160:200], y[160:200]),
        test_data=(x[200:], y[200:]), batch_size=16, learning_rate=5e-3, verbose=0,
        printer=lambda *_: None, state_dir=state_dir, callbacks=callbacks, **kw)


UNILTH = dict(target_sparsity=0.8, epochs=14, rounds=2, round_epochs=2, patience=2)
LTH = dict(target_sparsity=0.6, epochs_per_round=3, prune_rate=0.4, rewind_step=5)


@pytest.mark.parametrize("method,kw,crash_after", [
    ("unilth", UNILTH, 6),   # in stage 2 (the trigger fires by then on this problem)
    ("lth", LTH, 4),         # inside round 1, after round 0's record
    ("dense", dict(epochs=5), 3),
])
def test_an_interrupted_search_resumes_and_matches_an_uninterrupted_one(
        method, kw, crash_after, tmp_path):
    reference = _search(method, str(tmp_path / "ref"), **kw)
    state = str(tmp_path / "state")
    with pytest.raises(Interrupted):
        _search(method, state, callbacks=[InterruptAt(crash_after)], **kw)
    progress = json.load(open(os.path.join(state, "progress.json")))
    assert progress["fits"], "a snapshot was written before the crash"
    resumed = _search(method, state, **kw)
    # Same rounds (each exactly once), same sparsity, same epoch accounting.
    assert [r["round"] for r in resumed.rounds] == [r["round"] for r in reference.rounds]
    assert [r["epochs"] for r in resumed.rounds] == [r["epochs"] for r in reference.rounds]
    assert resumed.sparsity == pytest.approx(reference.sparsity, abs=1e-6)
    assert resumed.total["epochs"] == reference.total["epochs"]
    if method == "unilth":
        assert resumed.method_info["trigger_epoch"] == reference.method_info["trigger_epoch"]
    # Rounds finished before the crash are returned as recorded then, not redone.
    before = [r for r in progress["rounds"]]
    assert resumed.rounds[:len(before)] == before
    # The resumed run is the uninterrupted one: same data order, same numbers.
    assert _without_time(resumed.rounds) == _without_time(reference.rounds)
    assert resumed.final == reference.final
    assert masks.masks_digest(resumed.pruned_model or resumed.model) == \
        masks.masks_digest(reference.pruned_model or reference.model)
    assert resumed.final["test_accuracy"] > 0.6


def test_a_finished_search_started_again_trains_nothing(tmp_path):
    state = str(tmp_path / "state")
    first = _search("lth", state, **LTH)
    ran = []

    class Count(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            ran.append(batch)

    again = _search("lth", state, callbacks=[Count()], **LTH)
    assert ran == []
    assert again.rounds == first.rounds
    assert again.sparsity == first.sparsity


def test_nan_loss_stops_and_restores_the_last_good_epoch(tmp_path):
    x, y = toy_data(n=160)
    model = toy_model()
    good = {}

    class Poison(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):  # as if epoch 3's steps diverged
            if epoch == 2:
                good["weights"] = [w.copy() for w in self.model.get_weights()]
                self.model.get_layer("output").kernel.assign(
                    np.full(self.model.get_layer("output").kernel.shape, np.nan, np.float32))

    with pytest.raises(FloatingPointError, match="last good state.*epoch 2"):
        tf_unilth.find_ticket(model, "dense", (x, y), (x[:32], y[:32]), epochs=5,
                              batch_size=16, verbose=0, printer=lambda *_: None,
                              state_dir=str(tmp_path), callbacks=[Poison()])
    # Epoch 3 diverged: the weights of epoch 2 are back, all finite.
    for restored, kept in zip(model.get_weights(), good["weights"]):
        np.testing.assert_array_equal(restored, kept)


def _example(out, data_dir, *extra):
    return [sys.executable, os.path.join(ROOT, "examples", "find_ticket.py"), "--method=lth",
            "--target_sparsity=0.75", "--prune_rate=0.3", "--epochs_per_round=1", "--train_limit=2000",
            "--validation_size=1000", "--test_limit=1000", "--verbose=0",
            f"--data_dir={data_dir}", f"--output_dir={out}", *extra]


def test_kill_9_mid_run_and_the_same_command_finishes_it(mnist_data_dir, tmp_path):
    out = str(tmp_path / "run")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(_example(out, mnist_data_dir), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    progress = os.path.join(out, "state", "progress.json")
    deadline = time.time() + 240
    while time.time() < deadline:  # wait until round 0 is recorded and round 1 runs
        if os.path.exists(progress):
            with open(progress) as f:
                p = json.load(f)
            if p["rounds"] and "1" in p["fits"]:
                break
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    else:
        pytest.fail("round 0 did not finish in time")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_rounds = p["rounds"]
    assert not os.path.exists(os.path.join(out, "results.json"))

    done = subprocess.run(_example(out, mnist_data_dir), env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fit 1: finished in an earlier attempt; restored." in done.stdout
    results = json.load(open(os.path.join(out, "results.json")))
    rounds = [r["round"] for r in results["rounds"]]
    assert rounds == list(range(len(rounds))) and len(rounds) >= 3
    assert results["rounds"][0] == killed_rounds[0]  # not redone
    assert results["final"]["sparsity"] >= 0.75

    again = subprocess.run(_example(out, mnist_data_dir), env=env, capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    other = subprocess.run(_example(out, mnist_data_dir, "--seed=3"), env=env,
                           capture_output=True, text=True, timeout=120)
    assert other.returncode != 0 and "different flags (seed)" in other.stdout + other.stderr
