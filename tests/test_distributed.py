"""Ticket searches under distribution strategies.

MirroredStrategy over the two logical CPU devices of conftest (in process), and
a two-worker MultiWorkerMirroredStrategy job on 127.0.0.1 started by
examples/launch_local_workers.py, one of whose workers is killed (SIGKILL) and
the job restarted. Replicas and workers must end with the same masks.
"""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import tf_unilth
from tf_unilth._compat import tf
from tf_unilth import distribute, masks

from helpers import toy_data, toy_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNILTH = dict(epochs=6, rounds=2, round_epochs=1, patience=1, rewind_epochs=2,
              min_finetune_epochs=0)
SUBSET = dict(train_limit=1200, validation_size=300, test_limit=300)  # 20 steps of 60


@pytest.fixture(scope="module")
def mirrored():
    assert len(tf.config.list_logical_devices("CPU")) >= 2, "conftest configures two"
    return distribute.make_strategy("mirrored", cpu_devices=2)


def _values(variable):
    return [v.numpy() for v in variable.values]


def test_mirrored_unilth_same_masks_and_weights_on_both_replicas(mirrored, mnist_data_dir,
                                                                 tmp_path):
    splits = tf_unilth.data.load("mnist", data_dir=mnist_data_dir, download=False,
                                 batch_size=60, **SUBSET)
    with mirrored.scope():
        model = tf_unilth.models.build("lenet300_100", (28, 28, 1), 10, seed=0)
    result = tf_unilth.find_ticket(
        model, "unilth", splits.train, splits.validation, target_sparsity=0.8,
        test_data=splits.test, strategy=mirrored, verbose=0, printer=lambda *_: None,
        state_dir=str(tmp_path / "state"), **UNILTH)
    assert result.sparsity == pytest.approx(0.8, abs=0.005)
    assert tf_unilth.ticket_sparsity(result.model) == pytest.approx(result.sparsity, abs=1e-6)
    assert result.method_info["trigger_epoch"] is not None
    pruned = result.pruned_model
    digests = masks.replica_digests(pruned)
    assert len(digests) == 2 and digests[0] == digests[1]
    for record in masks.pruned_weights(pruned):
        m0, m1 = _values(record.mask)
        w0, w1 = _values(record.weight)
        np.testing.assert_array_equal(m0, m1)
        np.testing.assert_array_equal(w0, w1)
        assert np.all(w0[m0 == 0] == 0)
    for slot in pruned.optimizer.variables:
        values = _values(slot) if hasattr(slot, "values") else [slot.numpy()]
        for other in values[1:]:
            np.testing.assert_array_equal(values[0], other)
    assert result.final["test_accuracy"] > 0.7
    assert not glob.glob(str(tmp_path / "state" / "workertemp_*"))


def test_lth_rewinding_to_step_k_under_mirrored(mirrored):
    x, y = toy_data(n=320)
    said = []
    result = tf_unilth.find_ticket(  # built outside the scope: a copy is trained
        toy_model(), "lth", (x[:224], y[:224]), (x[224:272], y[224:272]),
        test_data=(x[272:], y[272:]), target_sparsity=0.5, batch_size=32, epochs_per_round=1,
        prune_rate=0.5, rewind_step=3, strategy=mirrored, verbose=0, printer=said.append)
    assert any("outside the strategy's scope" in s for s in said)
    assert result.sparsity >= 0.5 - 0.005
    digests = masks.replica_digests(result.pruned_model)
    assert len(digests) == 2 and digests[0] == digests[1]
    assert result.model.distribute_strategy is mirrored


def test_bad_distribution_settings_are_named(mirrored, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs the TF_CONFIG environment variable"):
        distribute.make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:1"]}, '
                       '"task": {"type": "worker", "index": 3}}')
    with pytest.raises(ValueError, match="not in its cluster"):
        distribute.tf_config()
    with pytest.raises(ValueError, match="divisible by the 2 replicas.*use 60 or 62"):
        distribute.check_batch_size(61, mirrored)
    assert distribute.check_batch_size(60, mirrored) == 30
    with pytest.raises(ValueError, match="Unknown distribution"):
        distribute.make_strategy("tpu")
    assert distribute.is_chief(mirrored) and distribute.worker_dirpath("d", mirrored) == "d"
    x, y = toy_data(n=64)
    with pytest.raises(ValueError, match="batch size 15 is the global batch"):
        tf_unilth.find_ticket(toy_model(), "dense", (x, y), batch_size=15, strategy=mirrored,
                              epochs=1, verbose=0, printer=lambda *_: None)


def test_launcher_refuses_a_distribution_flag():
    done = subprocess.run([sys.executable, os.path.join(ROOT, "examples",
                                                        "launch_local_workers.py"),
                           "--", "--distribution=mirrored"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "set by the launcher" in done.stderr


# --------------------------------------------------------------------------
# Two workers on 127.0.0.1, one killed mid-run

def _launch(out, data_dir):
    cmd = [sys.executable, "-u", os.path.join(ROOT, "examples", "launch_local_workers.py"),
           "--num_workers=2", "--timeout=400", "--",
           "--method=unilth", "--target_sparsity=0.8", "--verbose=0",
           *[f"--{k}={v}" for k, v in {**SUBSET, **UNILTH}.items()],
           f"--data_dir={data_dir}", f"--output_dir={out}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _worker_pids(lines):
    return {int(m.group(1)): int(m.group(2)) for line in lines
            for m in [re.match(r"\[launcher\] worker (\d+) pid (\d+)", line)] if m}


def _collect(stream, lines):
    for line in iter(stream.readline, ""):
        lines.append(line)


def test_two_workers_survive_a_killed_worker_and_agree_on_the_masks(mnist_data_dir, tmp_path):
    out = str(tmp_path / "run")
    progress = os.path.join(out, "state", "progress.json")
    job = _launch(out, mnist_data_dir)
    lines = []
    reader = threading.Thread(target=_collect, args=(job.stdout, lines), daemon=True)
    reader.start()
    # Wait until the chief has saved epoch 2. The plateau trigger fires at epoch 4
    # at the latest (the budget then only fits stage 2) and rewinds 2 epochs: to a
    # checkpoint the killed job took.
    deadline, epoch = time.time() + 300, -1
    while time.time() < deadline:
        if os.path.exists(progress):
            try:
                with open(progress) as f:
                    fit = json.load(f)["fits"].get("0")
                epoch = fit["snapshot"]["epoch"] if fit else -1
            except (ValueError, OSError):
                pass
        if epoch >= 1:
            break
        assert job.poll() is None, "".join(lines)
        time.sleep(0.2)
    else:
        job.kill()
        pytest.fail("the job did not save epoch 3 in time:\n" + "".join(lines))
    os.kill(_worker_pids(lines)[1], signal.SIGKILL)  # the non-chief worker
    job.wait(timeout=120)
    reader.join(10)
    first = "".join(lines)
    assert job.returncode != 0, first
    assert "worker 1 exited with status -9; stopping the others" in first
    assert not os.path.exists(os.path.join(out, "results.json"))

    again = _launch(out, mnist_data_dir)
    output, _ = again.communicate(timeout=400)
    assert again.returncode == 0, first + output
    for worker in (0, 1):  # both resume from the chief's snapshot
        assert f"[worker {worker}] Resuming the search" in output
        assert re.search(rf"\[worker {worker}\] fit 1: resuming after epoch [2-9]", output)
    digests = dict(re.findall(r"\[worker (\d)\] masks digest \(worker \d.*\): (\w+)", output))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"], output
    results = json.load(open(os.path.join(out, "results.json")))
    assert results["final"]["sparsity"] == pytest.approx(0.8, abs=0.005)
    assert results["distribution"] == {"strategy": "multi_worker", "replicas": 2,
                                       "per_replica_batch": 30,
                                       "masks_digest": digests["0"]}
    assert [r["round"] for r in results["rounds"]] == [1, 2]
    assert os.path.exists(os.path.join(out, "ticket.keras"))
    assert not glob.glob(os.path.join(out, "**", "workertemp_*"), recursive=True)
