"""Tests for tf_unilth.data: splitting, scaling, TFDS loading and its errors."""

import math
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tf_unilth import data
from tf_unilth._compat import tf

N_TRAIN, N_TEST = 600, 50


def _synthetic(n_train=N_TRAIN, n_test=N_TEST, shape=(8, 8, 3), num_classes=7):
    """uint8 images whose first two pixels encode a unique id (train 0.., test 10000..)."""
    rng = np.random.default_rng(123)

    def make(n, first_id):
        x = rng.integers(0, 256, size=(n,) + shape, dtype=np.uint8)
        ids = np.arange(first_id, first_id + n)
        flat = x.reshape(n, -1)
        flat[:, 0], flat[:, 1] = ids % 256, ids // 256
        y = rng.integers(0, num_classes, size=n)
        y[0] = num_classes - 1  # so the largest label is present
        return x, y

    return make(n_train, 0), make(n_test, 10000)


def _collect(ds):
    """All (x, y) of a batched dataset, concatenated."""
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def _ids(x):
    flat = np.rint(x.reshape(len(x), -1)[:, :2] * 255).astype(np.int64)
    return flat[:, 0] + 256 * flat[:, 1]


# ------------------------------------------------------------------ from_arrays


def test_from_arrays_split_sizes_disjoint_and_complete():
    train, test = _synthetic()
    splits = data.from_arrays(train, test, validation_size=100, batch_size=64)
    x_tr, y_tr = _collect(splits.train)
    x_va, y_va = _collect(splits.validation)
    x_te, y_te = _collect(splits.test)
    ids_tr, ids_va = _ids(x_tr), _ids(x_va)

    assert (len(ids_tr), len(ids_va), len(x_te)) == (500, 100, N_TEST)
    assert not set(ids_tr) & set(ids_va)
    assert sorted(np.concatenate([ids_tr, ids_va])) == list(range(N_TRAIN))
    np.testing.assert_array_equal(sorted(_ids(x_te)), np.arange(10000, 10000 + N_TEST))
    # Labels travel with their images.
    np.testing.assert_array_equal(y_va, train[1][ids_va])
    np.testing.assert_array_equal(y_tr, train[1][ids_tr])

    info = splits.info
    assert (info.num_train, info.num_validation, info.num_test) == (500, 100, N_TEST)
    assert info.input_shape == (8, 8, 3) and info.num_classes == 7
    assert info.mean is None and info.std is None
    assert splits.steps_per_epoch() == math.ceil(500 / 64) == len(list(splits.train))


def test_from_arrays_scaling_dtypes_and_shapes():
    train, test = _synthetic()
    splits = data.from_arrays(train, test, validation_size=100, batch_size=32)
    x_spec, y_spec = splits.train.element_spec
    assert x_spec.dtype == tf.float32 and x_spec.shape.as_list() == [None, 8, 8, 3]
    assert y_spec.dtype == tf.int64 and y_spec.shape.as_list() == [None]
    x_te, _ = _collect(splits.test)
    np.testing.assert_allclose(x_te, test[0] / 255.0, atol=1e-6)  # test not shuffled
    x_tr, _ = _collect(splits.train)
    assert x_tr.min() >= 0.0 and x_tr.max() <= 1.0 and x_tr.max() > 0.9
    first = next(iter(splits.train))[0]
    assert first.shape[0] == 32


def test_from_arrays_rank3_gets_channel_axis_and_rank2_kept():
    (x, y), (xt, yt) = _synthetic(shape=(5, 6, 1))
    splits = data.from_arrays((x[..., 0], y), (xt[..., 0], yt), validation_size=10)
    assert splits.info.input_shape == (5, 6, 1)
    assert next(iter(splits.test))[0].shape[1:] == (5, 6, 1)

    feats = np.random.default_rng(0).normal(3.0, 2.0, size=(40, 4))
    tab = data.from_arrays((feats, np.arange(40) % 3), (feats[:5], np.zeros(5, int)),
                           validation_size=0)
    assert tab.validation is None and tab.info.input_shape == (4,)
    x_te, _ = _collect(tab.test)
    np.testing.assert_allclose(x_te, feats[:5], rtol=1e-6)  # float kept as is


def test_from_arrays_is_seeded():
    train, test = _synthetic()

    def val_ids(seed):
        return _ids(_collect(data.from_arrays(train, test, validation_size=100,
                                              seed=seed).validation)[0])

    np.testing.assert_array_equal(val_ids(0), val_ids(0))
    assert set(val_ids(0)) != set(val_ids(1))

    def epochs(seed, n=2):
        ds = data.from_arrays(train, test, validation_size=100, seed=seed).train
        return [_ids(_collect(ds)[0]) for _ in range(n)]

    a, b = epochs(0), epochs(0)
    np.testing.assert_array_equal(a[0], b[0])  # same seed -> same order
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], a[1])  # reshuffled each epoch
    assert set(a[0]) == set(a[1])


def test_from_arrays_without_shuffle_keeps_order():
    train, test = _synthetic()
    ds = data.from_arrays(train, test, validation_size=100, shuffle=False).train
    first, second = _ids(_collect(ds)[0]), _ids(_collect(ds)[0])
    np.testing.assert_array_equal(first, second)
    assert np.all(np.diff(first) > 0)  # original order, hold-out removed


def test_from_arrays_standardize_uses_train_statistics():
    rng = np.random.default_rng(5)
    x = np.stack([rng.normal(m, s, size=(300, 6, 6)) for m, s in
                  [(0.2, 0.05), (0.5, 0.1), (0.8, 0.02)]], axis=-1).astype(np.float32)
    y = rng.integers(0, 4, size=300)
    xt = x[:20] + 0.1
    splits = data.from_arrays((x, y), (xt, y[:20]), validation_size=50, standardize=True)
    x_tr, _ = _collect(splits.train)
    np.testing.assert_allclose(x_tr.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(x_tr.std(axis=(0, 1, 2)), 1.0, atol=1e-3)

    mean, std = np.array(splits.info.mean), np.array(splits.info.std)
    assert mean.shape == std.shape == (3,)
    np.testing.assert_allclose(mean, [0.2, 0.5, 0.8], atol=0.01)
    x_te, _ = _collect(splits.test)
    np.testing.assert_allclose(x_te, (xt - mean) / std, rtol=1e-4, atol=1e-4)
    x_va, _ = _collect(splits.validation)
    assert abs(x_va.mean()) < 0.1  # validation uses the same (train) statistics


def test_from_arrays_explicit_validation_and_num_classes():
    train, test = _synthetic(num_classes=4)
    val = (train[0][:30], np.full(30, 9))
    splits = data.from_arrays(train, test, validation=val, validation_size=10**6)
    assert splits.info.num_validation == 30 and splits.info.num_train == N_TRAIN
    assert splits.info.num_classes == 10  # largest label over all splits + 1


@pytest.mark.parametrize("validation_size", [N_TRAIN, N_TRAIN + 1])
def test_validation_size_too_large(validation_size):
    train, test = _synthetic()
    with pytest.raises(ValueError, match=rf"{validation_size}.*{N_TRAIN}"):
        data.from_arrays(train, test, validation_size=validation_size)


def test_validation_size_zero_gives_no_validation():
    train, test = _synthetic()
    splits = data.from_arrays(train, test, validation_size=0)
    assert splits.validation is None
    assert splits.info.num_validation == 0 and splits.info.num_train == N_TRAIN
    assert len(_collect(splits.train)[0]) == N_TRAIN


@pytest.mark.parametrize("train, test, message", [
    ((np.zeros((5, 4, 4), np.uint8), np.zeros(4, int)), None, "lengths differ"),
    ((np.zeros((5, 2, 2, 2, 1), np.uint8), np.zeros(5, int)), None, "rank"),
    ((np.zeros((5,), np.uint8), np.zeros(5, int)), None, "rank"),
    ((np.zeros((5, 4, 4), np.uint8), np.zeros((5, 2), int)), None, "1-D"),
    ((np.zeros((5, 4, 4), np.uint8), np.zeros(5, float)), None, "integer"),
    ((np.zeros((5, 4, 4), np.uint8), np.zeros(5, int)),
     (np.zeros((3, 5, 5), np.uint8), np.zeros(3, int)), "shapes differ"),
])
def test_from_arrays_rejects_bad_input(train, test, message):
    test = test or (np.zeros((3, 4, 4), np.uint8), np.zeros(3, int))
    with pytest.raises(ValueError, match=message):
        data.from_arrays(train, test, validation_size=1)


def test_labels_column_vector_accepted():
    (x, y), (xt, yt) = _synthetic()
    splits = data.from_arrays((x, y[:, None]), (xt, yt[:, None]), validation_size=10)
    assert splits.train.element_spec[1].shape.as_list() == [None]


# ------------------------------------------------------------------ TFDS errors


def test_unknown_name_lists_known_datasets():
    with pytest.raises(ValueError) as err:
        data.load("imagenet2012")
    message = str(err.value)
    assert all(name in message for name in data.KNOWN_DATASETS)
    assert "from_arrays" in message


@pytest.fixture
def no_download(monkeypatch):
    """Fails the test if anything tries to download or probe the network."""
    def boom(*args, **kwargs):
        raise AssertionError("must not download")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", boom)
    return boom


def test_absent_data_without_download_is_a_clear_fast_error(tmp_path, no_download,
                                                             monkeypatch):
    monkeypatch.setattr(data, "_network_available", no_download)
    start = time.monotonic()
    with pytest.raises(data.DatasetNotAvailableError) as err:
        data.load("fashion_mnist", data_dir=tmp_path, download=False)
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert str(tmp_path / "fashion_mnist") in message
    assert "TFDS_DATA_DIR" in message and "download=False" in message
    assert isinstance(err.value, FileNotFoundError)


def test_tfds_data_dir_set_after_import_is_honoured(tmp_path, no_download, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with pytest.raises(data.DatasetNotAvailableError, match=str(tmp_path)):
        data.load_arrays("fashion_mnist", download=False)


def test_absent_data_without_network(tmp_path, no_download, monkeypatch):
    monkeypatch.setattr(data, "_network_available", lambda *a, **k: False)
    with pytest.raises(data.DatasetNotAvailableError, match="no network") as err:
        data.load("fashion_mnist", data_dir=tmp_path)
    assert str(tmp_path) in str(err.value)


def test_failed_download_is_wrapped(tmp_path, monkeypatch):
    def fail(self, *args, **kwargs):
        raise OSError("connection reset")

    monkeypatch.setattr(data, "_network_available", lambda *a, **k: True)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", fail)
    with pytest.raises(data.DatasetNotAvailableError, match="connection reset") as err:
        data.load("fashion_mnist", data_dir=tmp_path, download=True)
    assert isinstance(err.value.__cause__, OSError)
    assert "TFDS_DATA_DIR" in str(err.value)


def test_network_probe_is_bounded():
    start = time.monotonic()
    # 192.0.2.0/24 is reserved for documentation: never routable.
    assert data._network_available(("192.0.2.1", 9), timeout=0.5) is False
    assert time.monotonic() - start < 2


# ------------------------------------------------------------- mocked cifar10


@pytest.fixture
def mock_cifar10(monkeypatch):
    """TFDS mock data: 40 random cifar10 examples, identical for train and test.

    Under mock_data the builder reports "not prepared" (its data_dir is
    replaced by a non-existent one) and download_and_prepare is a no-op, so
    the network probe is stubbed out: nothing is contacted or downloaded.
    """
    monkeypatch.setattr(data, "_network_available", lambda *a, **k: True)
    with tfds.testing.mock_data(num_examples=40):
        yield


def test_load_mocked_cifar10(mock_cifar10):
    splits = data.load("cifar10", validation_size=10, batch_size=8)
    info = splits.info
    assert info.name == "cifar10" and info.input_shape == (32, 32, 3)
    assert info.num_classes == 10
    assert (info.num_train, info.num_validation, info.num_test) == (30, 10, 40)
    assert splits.steps_per_epoch() == 4

    x_tr, y_tr = _collect(splits.train)
    x_va, _ = _collect(splits.validation)
    x_te, _ = _collect(splits.test)
    assert x_tr.shape == (30, 32, 32, 3) and x_va.shape == (10, 32, 32, 3)
    assert x_tr.dtype == np.float32 and 0.0 <= x_tr.min() and x_tr.max() <= 1.0
    assert y_tr.dtype == np.int64 and 0 <= y_tr.min() and y_tr.max() < 10
    # Mock images are distinct, so byte equality identifies examples.
    train_keys = {x.tobytes() for x in x_tr}
    val_keys = {x.tobytes() for x in x_va}
    assert len(train_keys) == 30 and len(val_keys) == 10
    assert not train_keys & val_keys
    assert train_keys | val_keys == {x.tobytes() for x in x_te}  # test == train in mocks


def test_load_mocked_cifar10_limits_and_arrays(mock_cifar10):
    splits = data.load("cifar10", validation_size=10, train_limit=20, test_limit=15,
                       standardize=True)
    info = splits.info
    assert (info.num_train, info.num_validation, info.num_test) == (20, 10, 15)
    assert len(info.mean) == len(info.std) == 3

    (x, y), (xt, yt), num_classes = data.load_arrays("cifar10")
    assert x.shape == (40, 32, 32, 3) and x.dtype == np.uint8
    assert y.dtype == np.int64 and y.shape == (40,) and num_classes == 10


# ----------------------------------------------------------------- real MNIST


@pytest.fixture(scope="module")
def mnist_splits(mnist_data_dir):
    return data.load("mnist", download=False)  # data_dir from TFDS_DATA_DIR


def test_real_mnist(mnist_splits):
    info = mnist_splits.info
    assert (info.num_train, info.num_validation, info.num_test) == (55000, 5000, 10000)
    assert info.input_shape == (28, 28, 1) and info.num_classes == 10
    x, y = _collect(mnist_splits.validation)
    assert x.shape == (5000, 28, 28, 1)
    assert x.min() == 0.0 and x.max() == 1.0
    assert set(np.unique(y)) == set(range(10))
    x, y = next(iter(mnist_splits.train))
    assert x.shape == (128, 28, 28, 1) and y.dtype == tf.int64
    assert mnist_splits.steps_per_epoch() == math.ceil(55000 / 128)


def test_real_mnist_limits(mnist_data_dir):
    splits = data.load("mnist", data_dir=mnist_data_dir, download=False,
                       train_limit=1000, test_limit=500, batch_size=100)
    assert (splits.info.num_train, splits.info.num_test) == (1000, 500)
    assert splits.steps_per_epoch() == 10


def test_a_prepared_dataset_is_decoded_once_a_process_and_mocks_never_stay(mnist_data_dir,
                                                                           monkeypatch):
    first = data.load("mnist", data_dir=mnist_data_dir, download=False, train_limit=100)
    start = time.perf_counter()
    again = data.load("mnist", data_dir=mnist_data_dir, download=False, train_limit=100)
    assert time.perf_counter() - start < 1.0  # decoding it takes ~5 s
    assert np.array_equal(_collect(first.train)[0], _collect(again.train)[0])
    # The shared arrays cannot be changed; load_arrays hands out copies.
    (x, _), _, _ = data.load_arrays("mnist", data_dir=mnist_data_dir, download=False)
    x[0] = 255
    (x2, _), _, _ = data.load_arrays("mnist", data_dir=mnist_data_dir, download=False)
    assert x2.flags.writeable and not np.all(x2[0] == 255)
    # Mock data (same name) is read afresh and not remembered (the network
    # probe stubbed as in mock_cifar10: mock_data's builder is never prepared).
    monkeypatch.setattr(data, "_network_available", lambda *a, **k: True)
    with tfds.testing.mock_data(num_examples=20):
        (xm, _), _, _ = data.load_arrays("mnist", data_dir=mnist_data_dir)
    assert len(xm) == 20
    (x3, _), _, _ = data.load_arrays("mnist", data_dir=mnist_data_dir, download=False)
    assert len(x3) == 60000


def test_the_decoded_copy_on_disk_is_read_instead_of_tfds_and_a_damaged_one_is_redone(
        mnist_data_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TF_UNILTH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "_DECODED", {})  # as in a fresh process
    (x, y), (xt, yt), _ = data.load_arrays("mnist", data_dir=mnist_data_dir, download=False)
    [copy] = list((tmp_path / "cache").iterdir())
    assert copy.name.startswith("mnist-3.0.1-") and copy.suffix == ".npz"

    def no_tfds(*args):
        raise AssertionError("read from TFDS although a decoded copy exists")
    monkeypatch.setattr(data, "_DECODED", {})
    monkeypatch.setattr(data, "_read_split", no_tfds)
    (x2, y2), (xt2, yt2), _ = data.load_arrays("mnist", data_dir=mnist_data_dir,
                                               download=False)
    assert np.array_equal(x, x2) and np.array_equal(yt, yt2) and y2.dtype == np.int64
    # A damaged copy is said, read from TFDS again and rewritten.
    copy.write_bytes(b"not an npz")
    monkeypatch.undo()
    monkeypatch.setenv("TF_UNILTH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "_DECODED", {})
    (x3, _), _, _ = data.load_arrays("mnist", data_dir=mnist_data_dir, download=False)
    assert np.array_equal(x, x3) and "cannot be read" in caplog.text
    with np.load(copy) as f:
        assert np.array_equal(f["x_train"], x)
    # TF_UNILTH_CACHE_DIR='' keeps no copy (checked on the path, not by a third ~5 s read).
    monkeypatch.setenv("TF_UNILTH_CACHE_DIR", "")
    assert data._disk_copy_path(tfds.builder("mnist", data_dir=mnist_data_dir)) is None


def test_the_tests_find_mnist_where_tfds_puts_it_by_default(tmp_path, mnist_data_dir,
                                                            monkeypatch):
    # A user who ran the README's main job has MNIST in ~/tensorflow_datasets,
    # with no TFDS_DATA_DIR: the tests must not skip then.
    import conftest  # pylint: disable=import-outside-toplevel
    (tmp_path / "tensorflow_datasets").symlink_to(mnist_data_dir)
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert conftest.find_mnist_data_dir() == str(tmp_path / "tensorflow_datasets")
    monkeypatch.setenv("HOME", str(tmp_path / "empty"))
    assert conftest.find_mnist_data_dir() is None
