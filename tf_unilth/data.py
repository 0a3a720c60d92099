"""Image-classification data as train / validation / test `tf.data.Dataset`s.

`load(name)` reads a TFDS dataset (MNIST, Fashion-MNIST, CIFAR-10/100) into
memory; `from_arrays` does the same for the user's own numpy arrays. Both hold a
seeded validation split out of the training data, scale images to float32 once
with numpy (so the input pipeline is only slicing, shuffling and batching), and
return a `Splits` bundle.

Where the data lives: `data_dir` if given, else the `TFDS_DATA_DIR` environment
variable, else TFDS's default (`~/tensorflow_datasets`). TFDS itself reads
`TFDS_DATA_DIR` only once, when `tensorflow_datasets` is imported, so we re-read
it at call time; a variable set later (e.g. by a command-line tool) still counts.

A prepared dataset is decoded once: reading MNIST's 70,000 records through TFDS
takes about 5 s here (per-record parsing in tf.data), so the decoded arrays are
kept for the process (read-only; `load_arrays` returns copies) and on disk, as
an uncompressed .npz under `$TF_UNILTH_CACHE_DIR` (default
`~/.cache/tf_unilth`; empty: no disk copy), named by the dataset, its version
and a digest of its TFDS files' paths, sizes and modification times, so a
re-prepared dataset is read afresh. Loading the copy takes about 0.15 s.
TFDS keeps no decoded copy itself (its `cache()` is per pipeline, in memory or
in a file of its own format per run), hence this one.
"""

import dataclasses
import glob
import hashlib
import logging
import os
import socket
import threading
import urllib.parse
import urllib.request

import numpy as np

from tf_unilth._compat import tf, keras, tfds_reads_prepared_files  # noqa: F401  (keras: shared Keras-2 set-up)

KNOWN_DATASETS = ("cifar10", "cifar100", "fashion_mnist", "mnist")

# Host probed before downloading: TFDS fetches (most of) its data from GCS.
_DOWNLOAD_HOST = ("storage.googleapis.com", 443)
_PROBE_TIMEOUT_S = 3.0
_READ_CHUNK = 10000
# (name, versioned data directory) -> (train, test, num_classes), read-only
# arrays: the decoded datasets of this process (module doc).
_DECODED = {}
_DECODED_LOCK = threading.Lock()


class DatasetNotAvailableError(FileNotFoundError):
    """The TFDS dataset is not prepared locally and could not be downloaded."""


@dataclasses.dataclass
class DatasetInfo:
    """What a model needs to know about the data; counts are after splitting."""

    name: str
    input_shape: tuple
    num_classes: int
    num_train: int
    num_validation: int
    num_test: int
    mean: tuple | None = None  # per-channel, set when standardize=True
    std: tuple | None = None


@dataclasses.dataclass
class Splits:
    """Batched datasets yielding `(float32 images, int64 labels)`."""

    train: tf.data.Dataset
    validation: tf.data.Dataset | None
    test: tf.data.Dataset
    info: DatasetInfo

    def steps_per_epoch(self) -> int:
        """Number of train batches per epoch (the last one may be partial)."""
        n = int(self.train.cardinality())
        if n < 0:
            raise ValueError("the train dataset has unknown or infinite length")
        return n


def load(
    name,
    *,
    data_dir=None,
    batch_size=128,
    validation_size=5000,
    seed=0,
    standardize=False,
    train_limit=None,
    test_limit=None,
    download=None,
    shuffle=True,
) -> Splits:
    """Loads TFDS dataset `name` (one of KNOWN_DATASETS) as `Splits`.

    `validation_size` examples are held out of the training split by a
    permutation seeded with `seed` (0 -> no validation set). `train_limit` /
    `test_limit` keep only the first N remaining training / test examples
    (for fast runs). `download`: False never downloads; None (default) or True
    download when the data is missing and the network is reachable. Raises
    DatasetNotAvailableError (a FileNotFoundError) naming the directory
    searched when the data is neither present nor downloadable. See
    `from_arrays` for the other arguments.
    """
    train, test, num_classes = _decoded(name, data_dir, download)
    return _make_splits(
        train, test, None, validation_size=validation_size, batch_size=batch_size,
        seed=seed, standardize=standardize, shuffle=shuffle, name=name,
        num_classes=num_classes, train_limit=train_limit, test_limit=test_limit,
    )


def from_arrays(
    train,
    test,
    *,
    validation=None,
    validation_size=5000,
    batch_size=128,
    seed=0,
    standardize=False,
    shuffle=True,
    name="arrays",
    channel_axis=True,
) -> Splits:
    """Builds `Splits` from in-memory `(x, y)` numpy pairs.

    x: uint8 images are scaled by 1/255; any other numeric dtype is only cast
    to float32 (so pass float images already in [0, 1]). Rank 3 `(N, H, W)`
    gets a channel axis (unless `channel_axis=False`: sequences `(N, T, C)`),
    rank 4 `(N, H, W, C)` is kept, and rank 2 `(N, D)` feature matrices are
    kept as they are. y: integer class ids, shape `(N,)`
    (or `(N, 1)`, as `keras.datasets` returns).

    If `validation` is None, `validation_size` examples are held out of
    `train` by a permutation seeded with `seed`; a given `validation` is used
    as is. `standardize=True` subtracts the per-channel (last-axis) mean and
    divides by the std of the training part, for all splits. With
    `shuffle=True` the train set is reshuffled every epoch (seeded).
    num_classes is the largest label + 1.
    """
    return _make_splits(
        train, test, validation, validation_size=validation_size,
        batch_size=batch_size, seed=seed, standardize=standardize,
        shuffle=shuffle, name=name, channel_axis=channel_axis,
    )


def load_arrays(name, *, data_dir=None, download=None):
    """Returns raw `((x_train, y_train), (x_test, y_test), num_classes)`.

    Images are uint8 NHWC, labels int64, in TFDS order. `data_dir` and
    `download` as in `load`.
    """
    (x_train, y_train), (x_test, y_test), num_classes = _decoded(name, data_dir, download)
    return (x_train.copy(), y_train.copy()), (x_test.copy(), y_test.copy()), num_classes


def _decoded(name, data_dir, download):
    """The dataset's decoded splits as read-only arrays, read once per process
    (module doc)."""
    builder = _prepared_builder(name, data_dir, download)
    key = (name, os.fspath(builder.data_dir))
    with _DECODED_LOCK:
        if key in _DECODED:
            return _DECODED[key]
    real = tfds_reads_prepared_files(_tfds())
    path = _disk_copy_path(builder) if real else None
    arrays = _read_disk_copy(path)
    if arrays is None:
        train, test = _read_split(builder, "train"), _read_split(builder, "test")
        arrays = (*train, *test)
        _write_disk_copy(path, arrays)
    for array in arrays:
        array.flags.writeable = False  # shared by every later load in this process
    decoded = (arrays[0], arrays[1]), (arrays[2], arrays[3]), int(
        builder.info.features["label"].num_classes)
    if real:
        with _DECODED_LOCK:
            _DECODED[key] = decoded
    return decoded


_SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _disk_copy_path(builder):
    """Where the decoded copy of `builder`'s prepared files lives (module
    doc), or None when disk copies are off or the files are not local."""
    root = os.environ.get("TF_UNILTH_CACHE_DIR",
                          os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache",
                                       "tf_unilth"))
    data_dir = os.fspath(builder.data_dir)
    if not root or not os.path.isdir(data_dir):
        return None
    digest = hashlib.sha256(os.path.abspath(data_dir).encode())
    for file in sorted(glob.glob(os.path.join(data_dir, "*"))):
        stat = os.stat(file)
        digest.update(f"{os.path.basename(file)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return os.path.join(os.path.expanduser(root),
                        f"{builder.name}-{builder.version}-{digest.hexdigest()[:16]}.npz")


def _read_disk_copy(path):
    if path is None or not os.path.exists(path):
        return None
    try:
        with np.load(path) as f:
            return tuple(f[k] for k in _SPLIT_KEYS)
    except Exception as e:  # a damaged copy: read the dataset again (and rewrite it)
        logging.warning("tf_unilth: the decoded copy %s cannot be read (%s: %s); reading the "
                        "dataset from its TFDS files again.", path, type(e).__name__, e)
        return None


def _write_disk_copy(path, arrays):
    if path is None:
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, **dict(zip(_SPLIT_KEYS, arrays)))
        os.replace(tmp, path)  # whole or absent, for a reader in another process
    except OSError as e:
        logging.warning("tf_unilth: no decoded copy of the dataset written to %s (%s); set "
                        "TF_UNILTH_CACHE_DIR to a writable folder, or to '' to skip it.",
                        path, e)
        if os.path.exists(tmp):
            os.remove(tmp)


# ----------------------------------------------------------------- TFDS access


def _check_name(name):
    if name not in KNOWN_DATASETS:
        raise ValueError(
            f"Unknown dataset {name!r}; known datasets: {', '.join(KNOWN_DATASETS)}. "
            "For other data, pass in-memory numpy arrays to "
            "tf_unilth.data.from_arrays(train=(x, y), test=(x, y))."
        )


def _tfds():
    """TensorFlow Datasets, imported on first use (the `data` extra)."""
    try:
        import importlib_resources  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
        import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise ImportError(
            f"Loading TFDS datasets needs TensorFlow Datasets ({e}); install it with: "
            'pip install "tf_unilth[data]". Your own numpy arrays need nothing more: '
            "tf_unilth.data.from_arrays(train=(x, y), test=(x, y)).") from e
    return tfds


def _prepared_builder(name, data_dir, download):
    """Returns a TFDS builder whose data is on disk, downloading if allowed."""
    _check_name(name)
    tfds = _tfds()
    if data_dir:
        data_dir = os.path.expanduser(os.fspath(data_dir))
    else:
        data_dir = os.environ.get("TFDS_DATA_DIR") or None  # see module doc
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    if download is False:
        raise _not_available(builder, "download=False")
    host = _probe_host()
    if not _network_available(host):
        raise _not_available(
            builder, f"there is no network ({host[0]}:{host[1]} unreachable), "
            "so it cannot be downloaded")
    try:
        builder.download_and_prepare()
    except Exception as e:  # anything from the download or preparation
        raise _not_available(builder, f"downloading it failed ({type(e).__name__}: {e})") from e
    return builder


def _not_available(builder, reason):
    name = builder.name
    return DatasetNotAvailableError(
        f"TFDS dataset {name!r} is not prepared in {builder.data_dir} (TFDS data "
        f"dir {builder.data_dir_root}) and {reason}. To use a local copy, set the "
        "TFDS_DATA_DIR environment variable, or pass data_dir=... (--data_dir on "
        f"the command line), to a folder holding {name}/<version>/ (here "
        f"{name}/{builder.version}/ with dataset_info.json and the *.tfrecord* "
        "files)."
    )


def _probe_host():
    """The download host, or the HTTPS proxy when one is configured."""
    proxy = urllib.request.getproxies().get("https")
    if proxy:
        parsed = urllib.parse.urlsplit(proxy if "//" in proxy else "//" + proxy)
        if parsed.hostname:
            return (parsed.hostname, parsed.port or 443)
    return _DOWNLOAD_HOST


def _network_available(host=_DOWNLOAD_HOST, timeout=_PROBE_TIMEOUT_S):
    """Quick TCP probe; runs in a thread because DNS lookups ignore `timeout`."""
    result = []

    def probe():
        try:
            socket.create_connection(host, timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _read_split(builder, split):
    """Reads one split as numpy in chunks.

    `as_dataset(batch_size=-1)` is avoided on purpose: it batches by the
    recorded split size, which is unknown under `tfds.testing.mock_data` and
    then makes TensorFlow abort the process.
    """
    ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    xs, ys = [], []
    for x, y in _tfds().as_numpy(ds.batch(_READ_CHUNK)):
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys).astype(np.int64)


# ------------------------------------------------------------- array handling


def _make_splits(train, test, validation, *, validation_size, batch_size, seed,
                 standardize, shuffle, name, num_classes=None, train_limit=None,
                 test_limit=None, channel_axis=True):
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    x_train, y_train = _check_pair(train, "train", channel_axis)
    x_test, y_test = _check_pair(test, "test", channel_axis)

    if validation is None:
        n = len(x_train)
        if not isinstance(validation_size, (int, np.integer)) or validation_size < 0:
            raise ValueError(
                f"validation_size must be an int >= 0, got {validation_size!r}")
        if validation_size >= n:
            raise ValueError(
                f"validation_size={validation_size} must be smaller than the "
                f"number of training examples ({n})")
        if validation_size:
            # Sorted so both parts keep the original order; the choice is random.
            perm = np.random.default_rng(seed).permutation(n)
            val_idx = np.sort(perm[:validation_size])
            train_idx = np.sort(perm[validation_size:])
            x_val, y_val = x_train[val_idx], y_train[val_idx]
            x_train, y_train = x_train[train_idx], y_train[train_idx]
        else:
            x_val = y_val = None
    else:
        x_val, y_val = _check_pair(validation, "validation", channel_axis)

    x_train, y_train = _limit(x_train, y_train, train_limit, "train_limit")
    x_test, y_test = _limit(x_test, y_test, test_limit, "test_limit")

    shapes = {"train": x_train.shape[1:], "test": x_test.shape[1:]}
    if x_val is not None:
        shapes["validation"] = x_val.shape[1:]
    if len(set(shapes.values())) != 1:
        raise ValueError(f"per-example shapes differ between splits: {shapes}")

    x_train, x_test = _to_float(x_train), _to_float(x_test)
    x_val = None if x_val is None else _to_float(x_val)
    mean = std = None
    if standardize:
        axes = tuple(range(x_train.ndim - 1))
        mean = x_train.mean(axis=axes, dtype=np.float64)
        std = x_train.std(axis=axes, dtype=np.float64)
        std = np.where(std < 1e-7, 1.0, std)  # constant channels stay finite
        x_train, x_test = _standardize(x_train, mean, std), _standardize(x_test, mean, std)
        x_val = None if x_val is None else _standardize(x_val, mean, std)
        mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    if num_classes is None:
        labels = [y_train, y_test] + ([] if y_val is None else [y_val])
        num_classes = max(int(y.max()) for y in labels) + 1

    info = DatasetInfo(
        name=name, input_shape=tuple(int(d) for d in x_train.shape[1:]),
        num_classes=num_classes, num_train=len(x_train),
        num_validation=0 if x_val is None else len(x_val), num_test=len(x_test),
        mean=mean, std=std,
    )
    return Splits(
        train=_dataset(x_train, y_train, batch_size, seed if shuffle else None),
        validation=None if x_val is None else _dataset(x_val, y_val, batch_size),
        test=_dataset(x_test, y_test, batch_size),
        info=info,
    )


def _check_pair(pair, what, channel_axis=True):
    """Validates one `(x, y)` pair; returns x (rank 3 with a channel axis when
    `channel_axis`), y as int64."""
    try:
        x, y = pair
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an (x, y) pair of numpy arrays") from None
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim not in (2, 3, 4):
        raise ValueError(
            f"{what} x must have rank 2 (N, D), 3 (N, H, W) or 4 (N, H, W, C); "
            f"got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise ValueError(f"{what} x must be numeric, got dtype {x.dtype}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{what} y must be 1-D class ids, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{what} y must be integer class ids, got dtype {y.dtype}")
    if len(x) != len(y):
        raise ValueError(
            f"{what} x and y lengths differ: {len(x)} images vs {len(y)} labels")
    if len(x) == 0:
        raise ValueError(f"{what} is empty")
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.isfinite(x)))
        raise ValueError(f"{what} x has {bad} values that are NaN or infinite; clean or impute "
                         "them before training (a NaN input makes every loss NaN).")
    if y.min() < 0:
        raise ValueError(f"{what} y has negative labels (min {y.min()})")
    if x.ndim == 3 and channel_axis:
        x = x[..., np.newaxis]
    return x, y.astype(np.int64)


def _limit(x, y, limit, what):
    if limit is None:
        return x, y
    if not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ValueError(f"{what} must be a positive int or None, got {limit!r}")
    return x[:limit], y[:limit]


def _to_float(x):
    if x.dtype == np.uint8:
        out = x.astype(np.float32)
        out *= np.float32(1.0 / 255.0)
        return out
    return x.astype(np.float32, copy=False)


def _standardize(x, mean, std):
    out = x - mean.astype(np.float32)  # float32 temporaries: CIFAR is large
    out /= std.astype(np.float32)
    return out


class EpochOrder:
    """The order of the training examples as a function of (seed, epoch).

    tf.data's own reshuffle draws each epoch's order from a seed generator
    that lives in the process, so a run restarted after a kill would see the
    first epoch's order again. Here the permutation of epoch e is
    `stateless_shuffle(range(n), seed=(seed, e))`, read from the `epoch`
    variable when an epoch's iterator is made: whoever trains sets `epoch`
    first (`DataOrder`, which every search adds), so a resumed run sees
    exactly the orders the uninterrupted one saw.
    """

    def __init__(self, seed):
        self.seed = int(seed)
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_epoch")

    def set_epoch(self, epoch):
        self.epoch.assign(int(epoch))


class DataOrder(keras.callbacks.Callback):
    """Sets an `EpochOrder` to the epoch about to be trained: before the fit
    (Keras makes an epoch's iterator before `on_epoch_begin`) and after each
    epoch. `epoch_fn()` gives the number of epochs trained so far in the whole
    search (default: Keras' epoch index of this fit)."""

    def __init__(self, order, epoch_fn=None):
        super().__init__()
        self.order, self.epoch_fn = order, epoch_fn
        self._initial = 0

    def on_train_begin(self, logs=None):
        params = self.params or {}
        self._initial = params.get("initial_epoch", 0) or 0
        self.order.set_epoch(self.epoch_fn() if self.epoch_fn else self._initial)

    def on_epoch_end(self, epoch, logs=None):
        self.order.set_epoch(self.epoch_fn() if self.epoch_fn else epoch + 1)


def epoch_order(dataset):
    """The `EpochOrder` of a dataset made by `shuffled` (None for others)."""
    return getattr(dataset, "tf_unilth_order", None)


def with_epoch_order(dataset):
    """The epoch-ordered twin (`shuffled`) of a training dataset made by
    `load` / `from_arrays`: the same examples, batches and seed, each epoch's
    order a function of (seed, epoch). Other datasets are returned as they are."""
    source = getattr(dataset, "tf_unilth_source", None)
    if source is None or epoch_order(dataset) is not None:
        return dataset
    x, y, batch_size, seed = source
    return shuffled(x, y, batch_size, seed)


def shuffled(x, y, batch_size, seed, steps=None):
    """Batches of (x, y) in an order that is a function of (seed, epoch), for training.

    One epoch is `steps` batches (default: one pass over the examples); when
    `steps` asks for more than a pass, every pass has its own permutation.
    The dataset carries its `EpochOrder` (`epoch_order(dataset)`); the
    searches advance it, so a resumed run repeats no order and skips none."""
    n, per_pass = len(x), -(-len(x) // batch_size)
    steps = per_pass if steps is None else int(steps)
    passes = -(-steps // per_pass)
    order = EpochOrder(seed)
    features, labels = tf.constant(x), tf.constant(y)

    def permutation(pass_index):
        seed_pair = tf.stack([tf.constant(order.seed, tf.int64),
                              order.epoch.read_value() * passes + pass_index])
        return tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed_pair)

    ds = (tf.data.Dataset.range(passes).map(permutation)
          .flat_map(lambda perm: tf.data.Dataset.from_tensor_slices(perm).batch(batch_size))
          .take(steps)
          .map(lambda idx: (tf.gather(features, idx), tf.gather(labels, idx)),
               num_parallel_calls=tf.data.AUTOTUNE)
          .apply(tf.data.experimental.assert_cardinality(steps))
          .prefetch(tf.data.AUTOTUNE))
    ds.tf_unilth_order = order
    ds.tf_unilth_arrays = (x, y)
    return ds


def arrays(dataset):
    """The (x, y) numpy arrays behind a dataset made here (None for others)."""
    return getattr(dataset, "tf_unilth_arrays", None)


def _dataset(x, y, batch_size, shuffle_seed=None):
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        # tf.data's seeded reshuffle, for `model.fit` as users know it; a search
        # trains on `with_epoch_order(ds)` instead (exact resume).
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=False).prefetch(tf.data.AUTOTUNE)
    if shuffle_seed is not None:
        ds.tf_unilth_source = (x, y, batch_size, shuffle_seed)
    ds.tf_unilth_arrays = (x, y)
    return ds


__all__ = [
    "KNOWN_DATASETS", "DataOrder", "DatasetInfo", "DatasetNotAvailableError", "EpochOrder",
    "Splits", "arrays", "epoch_order", "shuffled", "with_epoch_order",
    "from_arrays", "load", "load_arrays",
]
