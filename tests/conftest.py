"""Shared test fixtures.

Two logical CPU devices are configured before TensorFlow initializes, so the
MirroredStrategy tests can run on this CPU-only machine; single-device code
keeps using the first one.
"""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tf_unilth  # noqa: E402,F401  (Keras 2 set-up before anything imports tf.keras)
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

MNIST_SKIP_REASON = (
    "real MNIST not found: set TFDS_DATA_DIR to a folder holding mnist/3.0.1 "
    "(e.g. ../shared/data/tfds); tests never download"
)


def find_mnist_data_dir():
    """TFDS_DATA_DIR when it holds a prepared MNIST, else None. Never downloads."""
    data_dir = os.environ.get("TFDS_DATA_DIR")
    if not data_dir:
        return None
    import tensorflow_datasets as tfds

    if tfds.builder("mnist", data_dir=data_dir).is_prepared():
        return data_dir
    return None


@pytest.fixture(scope="session")
def mnist_data_dir():
    """The TFDS data dir holding real MNIST; skips the test when absent."""
    data_dir = find_mnist_data_dir()
    if data_dir is None:
        pytest.skip(MNIST_SKIP_REASON)
    return data_dir


def _tf_unilth_temp_entries():
    import tempfile  # pylint: disable=import-outside-toplevel
    root = tempfile.gettempdir()
    return {name for name in os.listdir(root) if name.startswith("tf_unilth_")}


_TEMP_AT_START = _tf_unilth_temp_entries()


def pytest_sessionfinish(session, exitstatus):
    """The suite leaves no tf_unilth temporary directory behind in $TMPDIR.
    Checked once, by the main process, after every test ran (pytest-xdist's
    workers would see each other's runs in progress)."""
    if hasattr(session.config, "workerinput"):
        return
    left = sorted(_tf_unilth_temp_entries() - _TEMP_AT_START)
    if left:
        print(f"\nleftover temporary directories of tf_unilth in $TMPDIR: {left}")
        session.exitstatus = 1
