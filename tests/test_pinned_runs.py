"""The pinned short searches (tests/pinned_runs.py) give the pinned outcome:
the same masks, round records and final numbers, for every method.

Masks, step and epoch counts, sparsities and accuracies (counts of correct
examples) must be equal; a loss may differ in its last bits (relative 1e-6):
CI's clean install gave the pinned masks and accuracies with losses 1e-7 off
(float sums in another order). Any change to what a method does moves an
accuracy, a count or a mask, far beyond that."""

import json
import math
import os
import subprocess
import sys

LOSS_RTOL = 1e-6


def _same(got, pinned, key=""):
    """got == pinned, except that a float under a key ending in 'loss' may
    differ by LOSS_RTOL."""
    if isinstance(pinned, dict):
        return isinstance(got, dict) and set(got) == set(pinned) and all(
            _same(got[k], pinned[k], k) for k in pinned)
    if isinstance(pinned, list):
        return isinstance(got, list) and len(got) == len(pinned) and all(
            _same(g, p, key) for g, p in zip(got, pinned))
    if key.endswith("loss") and isinstance(pinned, float) and isinstance(got, float):
        return math.isclose(got, pinned, rel_tol=LOSS_RTOL)
    return got == pinned


def test_a_loss_may_differ_in_its_last_bits_nothing_else_may():
    pinned = {"rounds": [{"val_loss": 0.40316203236579895, "val_accuracy": 0.877,
                          "train_steps": 100}]}
    assert _same({"rounds": [{"val_loss": 0.40316206216812134, "val_accuracy": 0.877,
                              "train_steps": 100}]}, pinned)
    assert not _same({"rounds": [{"val_loss": 0.4032, "val_accuracy": 0.877,
                                  "train_steps": 100}]}, pinned)
    assert not _same({"rounds": [{"val_loss": 0.40316203236579895, "val_accuracy": 0.8771,
                                  "train_steps": 100}]}, pinned)
    assert not _same({"rounds": [{"val_loss": 0.40316203236579895, "val_accuracy": 0.877,
                                  "train_steps": 101}]}, pinned)

HERE = os.path.dirname(os.path.abspath(__file__))


def test_every_pinned_search_gives_the_pinned_masks_and_records(mnist_data_dir):
    # A fresh process, as when the pins were written (same devices and threads).
    env = dict(os.environ, TFDS_DATA_DIR=mnist_data_dir, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, os.path.join(HERE, "pinned_runs.py")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout)
    with open(os.path.join(HERE, "data", "pinned_runs.json")) as f:
        pinned = json.load(f)
    assert set(got) == set(pinned)
    for name in pinned:
        assert got[name]["masks_digest"] == pinned[name]["masks_digest"], name
        for part in ("rounds", "final", "total", "method_info"):
            assert _same(got[name][part], pinned[name][part]), (name, part, got[name][part])
