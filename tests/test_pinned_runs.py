"""The pinned short searches (tests/pinned_runs.py) give exactly the pinned outcome:
same masks, same round records, same final numbers, for every method."""

import json
import os
import subprocess
import sys

import pytest

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
        assert got[name]["rounds"] == pinned[name]["rounds"], name
        assert got[name]["final"] == pinned[name]["final"], name
        assert got[name]["total"] == pinned[name]["total"], name
        assert got[name]["method_info"] == pinned[name]["method_info"], name
