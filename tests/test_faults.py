"""Faults a user meets: bad input refused before anything is trained or
written, one writer per directory, a launcher that never leaves workers
behind, a worker that never hears from its peers, one-line CLI errors.

Kills in the middle of a search (and damaged state) are in test_resume.py."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import tf_unilth
from tf_unilth._compat import keras, tf
from tf_unilth.engine import journal as journal_lib
from tf_unilth import results

from helpers import toy_data, toy_model

X, Y = toy_data(n=200)
TRAIN, VAL = (X[:160], Y[:160]), (X[160:], Y[160:])


class CountBatches(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


def _nan_inputs():
    x = X[:160].copy()
    x[3, 2] = np.nan
    return x, Y[:160]


BAD_INPUTS = {
    # name: (method, keyword arguments, what the message must name)
    "dlth without fine-tuning": ("dlth", dict(target_sparsity=0.5, epochs=3, finetune_epochs=0),
                                 r"finetune_epochs"),
    "lth with no rounds": ("lth", dict(target_sparsity=0.5, rounds=0), r"rounds"),
    "a negative learning rate": ("dense", dict(epochs=1, learning_rate=-0.1), r"learning_rate"),
    "a zero learning rate": ("dense", dict(epochs=1, learning_rate=0.0), r"learning_rate"),
    "a negative patience": ("unilth", dict(target_sparsity=0.5, patience=-1), r"patience"),
    "a prune rate above 1": ("lth", dict(target_sparsity=0.5, prune_rate=1.5), r"prune_rate"),
    "no epochs": ("dense", dict(epochs=0), r"epochs"),
    "a sparsity of 1": ("lth", dict(target_sparsity=1.0),
                        r"target sparsity .*--target_sparsity"),
    "labels out of range": ("dense", dict(epochs=1, train=(X[:160], Y[:160] + 5)), r"label"),
    "inputs of the wrong shape": ("dense", dict(epochs=1, train=(X[:160, :10], Y[:160]),
                                                validation=(X[160:, :10], Y[160:])), r"shape"),
    "a NaN in the inputs": ("dense", dict(epochs=1, train=_nan_inputs()), r"(?i)nan|finite"),
    "an unbatched dataset": ("dense", dict(
        epochs=1, train=tf.data.Dataset.from_tensor_slices(TRAIN)), r"(?i)batch"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_refused_before_a_batch_is_trained_or_a_file_written(case, tmp_path):
    method, kw, names = BAD_INPUTS[case]
    train, validation = kw.pop("train", TRAIN), kw.pop("validation", VAL)
    model = toy_model()
    before = [w.copy() for w in model.get_weights()]
    counter = CountBatches()
    with pytest.raises(ValueError, match=names):
        tf_unilth.find_ticket(model, method, train, validation, batch_size=16, verbose=0,
                              printer=lambda *_: None, state_dir=str(tmp_path / "state"),
                              callbacks=[counter], **kw)
    assert counter.batches == 0
    assert not os.path.exists(tmp_path / "state") or not os.listdir(tmp_path / "state"), \
        os.listdir(tmp_path / "state")
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_a_learning_rate_that_diverges_at_once_is_named(tmp_path):
    with pytest.raises(FloatingPointError, match=r"(?i)diverg.*learning_rate|learning.rate"):
        tf_unilth.find_ticket(toy_model(), "dense", TRAIN, VAL, batch_size=16, verbose=0,
                              printer=lambda *_: None, epochs=3, learning_rate=1e6)


# -- one writer per directory ------------------------------------------------

def test_a_second_writer_is_refused_and_named(tmp_path):
    first = journal_lib.Lock(str(tmp_path)).acquire()
    try:
        with pytest.raises(journal_lib.RunLocked, match=rf"process {os.getpid()}.*another"):
            journal_lib.Lock(str(tmp_path)).acquire()
        # A search on a locked state directory is refused before it trains.
        counter = CountBatches()
        with pytest.raises(journal_lib.RunLocked):
            tf_unilth.find_ticket(toy_model(), "dense", TRAIN, VAL, epochs=1, verbose=0,
                                  printer=lambda *_: None, state_dir=str(tmp_path),
                                  callbacks=[counter])
        assert counter.batches == 0
    finally:
        first.release()
    assert not os.path.exists(tmp_path / journal_lib.LOCK_FILE)


def test_a_lock_left_by_a_dead_process_is_taken_over_and_said(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with open(tmp_path / journal_lib.LOCK_FILE, "w") as f:
        json.dump({"pid": gone.pid, "host": __import__("socket").gethostname(), "since": 0}, f)
    said = []
    result = tf_unilth.find_ticket(toy_model(), "dense", TRAIN, VAL, epochs=1, verbose=0,
                                   printer=said.append, state_dir=str(tmp_path))
    assert result.final["val_accuracy"] > 0
    assert any(f"process {gone.pid}, which is gone; taken over" in line for line in said), said


def test_an_output_dir_that_is_a_file_is_named(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("")
    with pytest.raises(NotADirectoryError, match="is a file"):
        results.RunDir(str(path)).ensure_writable()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes read-only directories: nothing to refuse")
def test_an_unwritable_output_dir_is_named(tmp_path):
    locked = tmp_path / "read_only"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="cannot be written"):
            results.RunDir(str(locked / "run")).ensure_writable()
    finally:
        locked.chmod(0o700)


# -- the command line ----------------------------------------------------------

def _cli(*args, timeout=120):
    # As a user runs it: the command sets TensorFlow's log level itself.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", "tf_unilth", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_a_cli_error_is_one_line_and_verbose_3_shows_where(tmp_path):
    bad = ["find-ticket", "--method=lth", "--target_sparsity=0.5", "--prune_rate=1.5",
           "--epochs_per_round=1", f"--output_dir={tmp_path / 'run'}", "--data_dir=/nonexistent"]
    done = _cli(*bad)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    # The library names the field and its range; the command line adds the flag.
    assert "lth: prune_rate must be in (0, 1), got 1.5. (flag --prune_rate)" in errors[0], \
        done.stderr
    assert "Traceback" not in done.stderr
    # TensorFlow's C++ start-up lines (CUDA probing on a CPU machine) are not shown.
    for startup in ("cudart_stub", "InitializeLog", "cuInit", "I0000", "W0000"):
        assert startup not in done.stderr, done.stderr
    assert not os.path.exists(tmp_path / "run"), "nothing is written for a refused run"
    loud = _cli(*bad, "--verbose=3")
    assert loud.returncode != 0 and "Traceback" in loud.stderr and "prune_rate" in loud.stderr


# -- multi-worker launcher -----------------------------------------------------

SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(120)"]


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (not yet reaped by init) is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
def test_workers_die_with_a_launcher_killed_by_sigkill():
    script = textwrap.dedent(f"""
        from tf_unilth.cli import launch_workers
        launch_workers.launch(2, [], cmd=lambda _: {SLEEPER!r})
    """)
    launcher = subprocess.Popen([sys.executable, "-u", "-c", script], stdout=subprocess.PIPE,
                                text=True)
    pids = []
    deadline = time.time() + 60
    while len(pids) < 2 and time.time() < deadline:
        m = re.match(r"\[launcher\] worker \d+ pid (\d+)", launcher.stdout.readline())
        if m:
            pids.append(int(m.group(1)))
    assert len(pids) == 2
    assert all(_pid_alive(p) for p in pids)
    launcher.send_signal(signal.SIGKILL)  # no handler of the launcher runs
    launcher.wait()
    deadline = time.time() + 10
    while any(_pid_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    alive = [p for p in pids if _pid_alive(p)]
    for p in alive:
        os.kill(p, signal.SIGKILL)
    assert not alive, "workers outlived their launcher"


def test_a_launcher_stopped_by_sigterm_stops_its_workers_and_says_so():
    script = textwrap.dedent(f"""
        from tf_unilth.cli import launch_workers
        raise SystemExit(launch_workers.launch(2, [], cmd=lambda _: {SLEEPER!r}, grace=2))
    """)
    launcher = subprocess.Popen([sys.executable, "-u", "-c", script], stdout=subprocess.PIPE,
                                text=True)
    lines, pids = [], []
    while len(pids) < 2:
        lines.append(launcher.stdout.readline())
        m = re.match(r"\[launcher\] worker \d+ pid (\d+)", lines[-1])
        if m:
            pids.append(int(m.group(1)))
    time.sleep(1)
    launcher.send_signal(signal.SIGTERM)
    out, _ = launcher.communicate(timeout=30)
    assert launcher.returncode == 128 + signal.SIGTERM
    assert "stopping the workers" in out
    assert not any(_pid_alive(p) for p in pids)


def test_a_worker_whose_peers_never_come_stops_with_a_clear_error(tmp_path, mnist_data_dir):
    from tf_unilth.cli import launch_workers  # pylint: disable=import-outside-toplevel
    ports = launch_workers.free_ports(2)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               TF_CONFIG=launch_workers.tf_config(ports, 0))  # worker 1 is never started
    start = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "tf_unilth", "find-ticket", "--distribution=multi_worker",
         "--method=dense", "--epochs=1", "--peer_timeout=4", f"--data_dir={mnist_data_dir}",
         f"--output_dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == -9, done.stderr[-2000:]  # SIGKILL by its watchdog
    assert "did not answer within 4 s" in done.stderr and "--peer_timeout" in done.stderr
    assert time.time() - start < 200


def test_an_offline_run_that_found_no_data_wrote_nothing_and_the_retry_runs(
        tmp_path, mnist_data_dir):
    empty = tmp_path / "no_data"
    empty.mkdir()
    run = ["find-ticket", "--method=dense", "--epochs=1", "--train_limit=600",
           "--validation_size=100", "--test_limit=100", f"--output_dir={tmp_path / 'run'}"]
    # Offline for sure: the download probe goes to a proxy port nobody listens on.
    env_offline = {"TFDS_DATA_DIR": str(empty), "https_proxy": "http://127.0.0.1:9",
                   "HTTPS_PROXY": "http://127.0.0.1:9"}
    missing = subprocess.run([sys.executable, "-m", "tf_unilth", *run, f"--data_dir={empty}"],
                             capture_output=True, text=True, timeout=180,
                             env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **env_offline))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr, missing.stderr[-2000:]
    assert not (tmp_path / "run" / results.FLAGS_FILE).exists()
    retry = _cli(*run, f"--data_dir={mnist_data_dir}")
    assert retry.returncode == 0, retry.stderr[-2000:]
    assert (tmp_path / "run" / "results.json").exists()
