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
    "real MNIST not found in TFDS_DATA_DIR nor in TFDS's default data dir "
    "(~/tensorflow_datasets, where the README's main job puts it): set TFDS_DATA_DIR "
    "to a folder holding mnist/3.0.1 (e.g. ../shared/data/tfds); tests never download"
)


def find_mnist_data_dir():
    """The TFDS data dir holding a prepared MNIST: TFDS_DATA_DIR, else TFDS's
    default (where `tf-unilth find-ticket` downloaded it); None when neither
    holds it. Never downloads. TFDS's default is ~/tensorflow_datasets, read
    here at call time (TFDS fixes its own when it is imported)."""
    import tensorflow_datasets as tfds

    default = os.path.join(os.path.expanduser("~"), "tensorflow_datasets")
    for data_dir in (os.environ.get("TFDS_DATA_DIR"), default):
        if not data_dir:
            continue
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


# The slowest tests (seconds, measured alone with two processes), run first:
# xdist hands tests out in collection order, and a slow test started last
# leaves the other process idle while it runs (the suite's wall time).
SLOWEST_FIRST = (
    "test_readme.py::test_every_shell_command_runs",  # ~120
    "test_pinned_runs.py::",  # ~100
    "test_readme.py::test_every_python_snippet_runs_in_order",  # ~80
    "test_distributed.py::test_two_workers_survive_a_killed_worker",  # ~60
    "test_interop.py::test_every_methods_ticket_loads_and_trains",  # ~37
    "test_resume.py::test_kill_9_mid_run",  # ~35
    "test_extending.py::test_the_documented_method_runs_from_the_command_line",  # ~31
    "test_packaging.py::test_a_non_editable_install_runs",  # ~28
    "test_transfer.py::test_deterministic_runs",  # ~25
)


def pytest_collection_modifyitems(config, items):
    """Puts SLOWEST_FIRST at the front; every other test keeps its order."""
    def rank(item):
        name = item.nodeid.split("/")[-1]
        return next((i for i, prefix in enumerate(SLOWEST_FIRST) if name.startswith(prefix)),
                    len(SLOWEST_FIRST))
    items.sort(key=rank)


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
