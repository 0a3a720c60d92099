"""Resuming a search: interrupted fits continue, finished work is not redone,
and a diverged loss puts the model back to its last good snapshot."""

import json
import os
import signal
import subprocess
import sys
import time
import types

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


def _search(method, state_dir, callbacks=(), printer=lambda *_: None, **kw):
    x, y = toy_data(n=240)
    return tf_unilth.find_ticket(
        toy_model(), method, (x[:160], y[:160]), (x[160:200], y[160:200]),
        test_data=(x[200:], y[200:]), batch_size=16, learning_rate=5e-3, verbose=0,
        printer=printer, state_dir=state_dir, callbacks=callbacks, **kw)


_REFERENCES = {}


@pytest.fixture
def reference_of(tmp_path_factory):
    """The uninterrupted search of (method, kw), run once per test process:
    several tests compare a resumed run with the same one (deterministic; the
    resumed run being equal to it is what they check). Its digest is kept,
    not its models."""
    def reference(method, kw):
        key = (method, tuple(sorted(kw.items())))
        if key not in _REFERENCES:
            r = _search(method, str(tmp_path_factory.mktemp("reference")), **kw)
            _REFERENCES[key] = types.SimpleNamespace(
                rounds=r.rounds, final=r.final, sparsity=r.sparsity, total=r.total,
                method_info=r.method_info,
                digest=masks.masks_digest(r.pruned_model or r.model))
        return _REFERENCES[key]
    return reference


UNILTH = dict(target_sparsity=0.8, epochs=14, rounds=2, round_epochs=2, patience=2)
LTH = dict(target_sparsity=0.6, epochs_per_round=3, prune_rate=0.4, rewind_step=5)


@pytest.mark.parametrize("method,kw,crash_after", [
    ("unilth", UNILTH, 6),   # in stage 2 (the trigger fires by then on this problem)
    ("lth", LTH, 4),         # inside round 1, after round 0's record
    ("dense", dict(epochs=5), 3),
])
def test_an_interrupted_search_resumes_and_matches_an_uninterrupted_one(
        method, kw, crash_after, tmp_path, reference_of):
    reference = reference_of(method, kw)
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
        reference.digest
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


# -- the kill window: a round recorded, its snapshot not yet written ---------

def kill_after_round(original, n):
    """Search.record_round that raises right after the `n`-th new record:
    inside UniLTH's fit that is before the epoch's snapshot is written, for
    LTH after the record is kept and before the next fit's first snapshot.
    Nothing is written on the way out, as with a kill -9 at that instant.
    (A plain function, so that it binds to the Search as a method.)"""
    left = [n]

    def record_round(search, *args, **kwargs):
        before = len(search.log.rounds)
        restored = len(search.log.rounds) < len(search.journal.rounds)
        record = original(search, *args, **kwargs)
        if len(search.log.rounds) > before and not restored:
            left[0] -= 1
            if left[0] == 0:
                raise Interrupted()
        return record

    return record_round


UNIDLTH = dict(target_sparsity=0.8, epochs=14, rounds=2, round_epochs=2, patience=2)


@pytest.mark.parametrize("method,kw,n", [
    ("unilth", UNILTH, 1),   # round 1 is recorded mid-fit, round 2 follows in that fit
    ("unidlth", UNIDLTH, 1),
    ("lth", LTH, 2),
])
def test_a_kill_right_after_a_round_is_recorded_never_redoes_a_kept_round(
        method, kw, n, tmp_path, monkeypatch, reference_of):
    from tf_unilth import search as search_lib  # pylint: disable=import-outside-toplevel
    reference = reference_of(method, kw)
    assert len(reference.rounds) > n, "the crash must come before the last round"
    state = str(tmp_path / "state")
    original = search_lib.Search.record_round
    monkeypatch.setattr(search_lib.Search, "record_round", kill_after_round(original, n))
    with pytest.raises(Interrupted):
        _search(method, state, **kw)
    monkeypatch.setattr(search_lib.Search, "record_round", original)
    kept = json.load(open(os.path.join(state, "progress.json")))["rounds"]
    resumed = _search(method, state, **kw)
    # What was kept is returned as kept; the rest is the uninterrupted run's.
    assert resumed.rounds[:len(kept)] == kept
    assert [r["round"] for r in resumed.rounds] == [r["round"] for r in reference.rounds]
    assert _without_time(resumed.rounds) == _without_time(reference.rounds)
    assert resumed.final == reference.final
    assert masks.masks_digest(resumed.pruned_model or resumed.model) == \
        reference.digest


# -- corrupt or missing state ------------------------------------------------

def _crashed_lth(tmp_path, crash_after=4):
    state = str(tmp_path / "state")
    with pytest.raises(Interrupted):
        _search("lth", state, callbacks=[InterruptAt(crash_after)], **LTH)
    return state


def _latest_checkpoint_files(state):
    progress = json.load(open(os.path.join(state, "progress.json")))
    latest = progress["fits"][str(max(int(i) for i in progress["fits"]))]
    prefix = os.path.join(state, latest["snapshot"]["checkpoint"])
    return latest, [prefix + ".index"] + [
        os.path.join(os.path.dirname(prefix), f) for f in os.listdir(os.path.dirname(prefix))
        if f.startswith(os.path.basename(prefix) + ".data")]


def _damage(state, files, how):
    if how == "truncate_data":
        data = [f for f in files if ".data" in f][0]
        with open(data, "r+b") as f:
            f.truncate(os.path.getsize(data) // 2)
    elif how == "empty_index":
        open(files[0], "w").close()
    else:  # truncate_progress
        path = os.path.join(state, "progress.json")
        text = open(path).read()
        open(path, "w").write(text[:len(text) // 2])


@pytest.mark.parametrize("damage", ["truncate_data", "empty_index", "truncate_progress"])
def test_a_damaged_snapshot_falls_back_to_the_one_before_and_says_so(damage, tmp_path,
                                                                     reference_of):
    reference = reference_of("lth", LTH)
    state = _crashed_lth(tmp_path)
    latest, files = _latest_checkpoint_files(state)
    assert latest["previous"] is not None, "a snapshot before the latest is kept"
    _damage(state, files, damage)
    said = []
    resumed = _search("lth", state, printer=said.append, **LTH)
    text = "\n".join(said)
    if damage == "truncate_progress":
        assert "progress.json cannot be read" in text and "previous version" in text
    else:
        assert "cannot be read; falling back to the one before it" in text
    # One epoch (at most) trained again; nothing else lost, and the same run.
    assert [r["round"] for r in resumed.rounds] == [r["round"] for r in reference.rounds]
    assert _without_time(resumed.rounds) == _without_time(reference.rounds)
    assert masks.masks_digest(resumed.pruned_model) == reference.digest


@pytest.mark.parametrize("damage", ["truncate_data", "empty_index"])
def test_a_damaged_first_snapshot_of_a_fit_trains_that_fit_again_from_its_start(
        damage, tmp_path, reference_of):
    reference = reference_of("lth", LTH)
    state = _crashed_lth(tmp_path, crash_after=LTH["epochs_per_round"] + 2)  # fit 2, epoch 2
    latest, files = _latest_checkpoint_files(state)
    assert latest["previous"] is None and latest["snapshot"]["epoch"] == 0
    _damage(state, files, damage)
    said = []
    resumed = _search("lth", state, printer=said.append, **LTH)
    assert "it was the first of fit 2, which is trained again from its start" in "\n".join(said)
    assert _without_time(resumed.rounds) == _without_time(reference.rounds)
    assert resumed.final == reference.final
    assert masks.masks_digest(resumed.pruned_model) == reference.digest


def test_no_readable_snapshot_is_a_one_line_error_naming_the_file_and_restart(tmp_path):
    state = _crashed_lth(tmp_path)
    progress = json.load(open(os.path.join(state, "progress.json")))
    for entry in progress["fits"].values():
        for snap in (entry["snapshot"], entry.get("previous")):
            if snap:
                open(os.path.join(state, snap["checkpoint"] + ".index"), "w").close()
    with pytest.raises(tf_unilth.CorruptState, match=r"can(not)? be read.*--restart") as e:
        _search("lth", state, **LTH)
    assert ".index" in str(e.value) and "\n" not in str(e.value)


def test_a_deleted_progress_file_is_refused_not_silently_restarted(tmp_path):
    state = _crashed_lth(tmp_path)
    for name in ("progress.json", "progress.json.prev"):
        if os.path.exists(os.path.join(state, name)):
            os.remove(os.path.join(state, name))
    before = sorted(os.listdir(os.path.join(state, "checkpoints")))
    with pytest.raises(tf_unilth.CorruptState, match="no readable progress.json.*--restart"):
        _search("lth", state, **LTH)
    assert sorted(os.listdir(os.path.join(state, "checkpoints"))) == before  # nothing changed


def test_divergence_never_leaves_a_non_finite_checkpoint_nor_drops_a_kept_one(tmp_path):
    """UniLTH keeps per-epoch rewind checkpoints: the diverged epoch must not
    be among them, and every one the last good snapshot refers to stays."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    class Poison(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 4:
                kernel = self.model.get_layer("prune_low_magnitude_output").layer.kernel \
                    if "prune_low_magnitude_output" in [l.name for l in self.model.layers] \
                    else self.model.get_layer("output").kernel
                kernel.assign(tf.fill(kernel.shape, np.inf))

    state = str(tmp_path / "state")
    with pytest.raises(FloatingPointError, match="diverged"):
        _search("unilth", state, callbacks=[Poison()], **UNILTH)
    checkpoints = []
    for root, _, files in os.walk(state):
        checkpoints += [os.path.join(root, f[:-len(".index")]) for f in files
                        if f.endswith(".index")]
    assert checkpoints
    for prefix in checkpoints:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            value = reader.get_tensor(name)
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                assert np.all(np.isfinite(value)), f"{prefix}: {name} is not finite"
    # The last good snapshot still restores (its rewind checkpoints exist).
    resumed_said = []
    x, y = toy_data(n=240)
    with pytest.raises(FloatingPointError):  # the poison again, but from the kept state
        tf_unilth.find_ticket(
            toy_model(), "unilth", (x[:160], y[:160]), (x[160:200], y[160:200]),
            batch_size=16, learning_rate=5e-3, verbose=0, printer=resumed_said.append,
            state_dir=state, callbacks=[Poison()], **UNILTH)
    assert any("resuming after epoch 4" in line for line in resumed_said), resumed_said
