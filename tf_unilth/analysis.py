"""Stability analysis of subnetworks (seed 001, Frankle et al. 2020).

Rewinding to an early iteration k finds tickets where rewinding to k = 0
fails because the subnetwork (mask m, weights theta_k) has become *stable* to
SGD noise: two copies trained from theta_k with the same mask but different
data orders end in the same linearly connected region. Measures (see
ALGORITHMS.md, "Stability"):

- `instability(a, b, data)`: test error along w(alpha) = (1 - alpha) w_a +
  alpha w_b; instability = max_alpha err(alpha) - mean(err(0), err(1));
  stable when below 2 percentage points.
- `weight_distance(a, b)`: L2 distance over the surviving prunable weights,
  absolute and relative to the mean norm of the two.
- `stability_test(model, mask, k, ...)`: trains the two copies and reports both.

A tool on the shared trainer, not a training loop of its own: each copy
trains through a `tf_unilth.search.Search` (wrap, compile, fit: NaN-guarded,
under the given strategy) on a finite dataset of exactly its steps, and the
path is evaluated with a Search's compile and evaluate (the training's loss
and accuracy). (x, y) arrays are batched by `tf_unilth.data.from_arrays`.

Models may be plain tf_keras models (stripped tickets; the mask is given or
taken as weight != 0) or wrapped by `tf_unilth.prune` (the wrappers' masks),
Sequential or functional, nested ones included (a functional model holding a
Sequential or functional block as a layer): mask keys are those of
`tf_unilth.prunable` ("block/dense/0"), parameter names keep the inner layer
("block/dense/kernel").
Masks are `tf_unilth.sparsity.Mask` values (plain {key: bool array} dicts are
accepted). Nothing here modifies the models it is given: interpolation and
training run on fresh clones of the architecture.
"""

import contextlib
import dataclasses
import time

import numpy as np

from tf_unilth._compat import (TfmotPruneLowMagnitude, check_model, clone_model,
                               collect_prunable_layers, keras, static_batch_size, tf,
                               unwrapped_layer)
from tf_unilth import callbacks as callbacks_lib
from tf_unilth import data as data_lib
from tf_unilth import distribute
from tf_unilth import masks as masks_lib
from tf_unilth import prunable as prunable_lib
from tf_unilth import search as search_lib
from tf_unilth import wrapper as wrapper_lib
from tf_unilth.sparsity import Mask

STABLE_THRESHOLD = 0.02  # ALGORITHMS.md: stable when the barrier is below 2%
EVALUATION_BATCH = 1000  # batch size of an (x, y) evaluation set


# ---------------------------------------------------------------------------
# Results

def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


@dataclasses.dataclass
class Instability:
    """Error (and loss) along the linear path between two trained copies."""
    alphas: list
    errors: list
    losses: list
    barrier: float  # max error on the path - mean of the two endpoint errors
    threshold: float = STABLE_THRESHOLD

    @property
    def stable(self):
        return self.barrier < self.threshold

    def to_dict(self):
        return _jsonable({**dataclasses.asdict(self), "stable": self.stable})


@dataclasses.dataclass
class Distance:
    """L2 distance between the surviving prunable weights of two models.

    `relative` = l2 / mean(norm_a, norm_b); `layers` holds the l2 per mask key.
    Biases and normalization parameters (never pruned) are not counted."""
    l2: float
    relative: float
    norm_a: float
    norm_b: float
    count: int  # surviving weights compared
    layers: dict

    def to_dict(self):
        return _jsonable(dataclasses.asdict(self))


@dataclasses.dataclass
class StabilityResult:
    """Two copies trained from the same rewind point with different data orders."""
    rewind_point: int  # k, the training iteration the start weights are from
    train_steps: int  # iterations each copy trained
    seeds: list  # shuffle seeds of the two copies
    sparsity: float
    test_accuracy: list  # of the two trained copies
    instability: Instability
    distance: Distance
    seconds: float
    models: list = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def stable(self):
        return self.instability.stable

    def to_dict(self):
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("models", "instability", "distance")}
        out.update(instability=self.instability.to_dict(), distance=self.distance.to_dict(),
                   stable=self.stable)
        return _jsonable(out)


# ---------------------------------------------------------------------------
# Reading models: parameters and masks

@dataclasses.dataclass
class _Snapshot:
    """A model's parameters as arrays, in the order of a plain clone's weights."""
    template: keras.Model  # plain view (wrappers stripped); shares the variables
    arrays: list
    keys: list  # mask key of each array, or None for weights that are never pruned
    masks: Mask  # True = kept
    wrapped: bool

    @property
    def shapes(self):
        """{mask key: shape} of the prunable weights."""
        return {k: a.shape for a, k in zip(self.arrays, self.keys) if k is not None}

    def masked(self, mask):
        """The arrays with the weights `mask` removes set to 0."""
        return [a * mask[k] if k is not None else a for a, k in zip(self.arrays, self.keys)]


def _unwrap(layer):
    """A layer of a wrapped model as a plain model holds it: a pruning wrapper's
    layer, a nested model holding wrappers without them (recursively)."""
    if isinstance(layer, TfmotPruneLowMagnitude):
        return unwrapped_layer(layer)
    if isinstance(layer, keras.Model) and collect_prunable_layers(layer):
        return clone_model(layer, _unwrap)
    return layer


def _plain_view(model):
    """The model without pruning wrappers, sharing its variables (not a copy).

    tfmot's strip_pruning without its side effects, through `_compat.clone_model`
    (tf_keras' own clone never returns for a wrapped nested model)."""
    if wrapper_lib.wrappers(model):
        return clone_model(model, _unwrap)
    return model


def _parameters(plain, keys=None):
    """[(variable, mask key or None)] over the plain model's layer weights (a
    nested model's weights all under its layer, in its own order).

    The penalties and removal plans of `tf_unilth.prune` live on the wrappers,
    so a plain view's layers hold only their parameters. `keys`: {id(variable):
    mask key} of the pruned weights; by default those of `prunable.model_entries`
    (keys as `masks.get_masks` and `masks.zeros_mask` read them)."""
    if keys is None:
        keys = {id(v): key for key, v in prunable_lib.model_entries(plain)}
    return [(v, keys.get(id(v))) for v in _own_params(plain)]


def _wrapper_keys(model, plain):
    """{id(variable): mask key} of the weights `model`'s wrappers prune (none for
    a layer kept dense by `exclude=`), checked to be among `plain`'s."""
    keys = {id(r.weight): r.key for r in masks_lib.pruned_weights(model)}
    held = {id(v) for v in _own_params(plain)}
    if set(keys) - held:
        raise TypeError(f"The pruned weights of model {model.name!r} are not among its "
                        "layers' weights once unwrapped; the analysis supports models "
                        "wrapped by tf_unilth.prune (or tfmot's prune_low_magnitude).")
    return keys


def _fit_mask(mask, shapes, what):
    """`mask` (a Mask or {key: bool array}) as a Mask, checked against `shapes`."""
    missing, unknown = set(shapes) - set(mask), set(mask) - set(shapes)
    if missing or unknown:
        raise ValueError(f"The mask given for {what} does not fit its prunable weights: "
                         f"missing keys {sorted(missing)}, unknown keys {sorted(unknown)} "
                         f"(expected {sorted(shapes)}, as tf_unilth.masks.get_masks names "
                         "them).")
    mask = Mask({key: np.asarray(mask[key]).astype(bool) for key in shapes})
    for key, keep in mask.items():
        if keep.shape != shapes[key]:
            raise ValueError(f"The mask of {key!r} for {what} has shape {keep.shape}; the "
                             f"weight has shape {shapes[key]}.")
    return mask


def _snapshot(model, mask=None, what="the model"):
    """Reads parameters and masks: the wrappers' masks when wrapped, else `mask`,
    else weight != 0 (a stripped ticket's removed weights are exactly 0)."""
    check_model(model)
    wrapped = bool(wrapper_lib.wrappers(model))
    plain = _plain_view(model)
    # Wrapped: the weights the wrappers prune (an excluded layer's stay dense).
    params = _parameters(plain, _wrapper_keys(model, plain) if wrapped else None)
    arrays = [v.numpy() for v, _ in params]
    keys = [k for _, k in params]
    shapes = {k: a.shape for a, k in zip(arrays, keys) if k is not None}
    if not shapes:
        raise ValueError(f"{what} has no prunable weights (Dense, Conv, ...): there is no "
                         "subnetwork to analyse.")
    given = None if mask is None else _fit_mask(mask, shapes, what)
    if wrapped:
        found = masks_lib.get_masks(model)
        if given is not None:
            _check_same_masks(found, given, f"{what}'s pruning wrappers", "the given mask")
    elif given is not None:
        found = given
        for array, key in zip(arrays, keys):
            if key is not None and np.any(array[~given[key]] != 0):
                count = int(np.sum(array[~given[key]] != 0))
                raise ValueError(
                    f"{what} has {count} nonzero weights in layer "
                    f"{Mask.layer_name(key)!r} ({key}) that the mask removes: it is not "
                    "that subnetwork. Pass the mask the model was trained with, or "
                    "mask=None to take it as weight != 0.")
    else:
        found = masks_lib.zeros_mask(plain)
    # Removed weights are 0 in the arrays we work on, whatever the variables hold.
    arrays = [a * found[k] if k is not None else a for a, k in zip(arrays, keys)]
    return _Snapshot(plain, arrays, keys, found, wrapped)


def _check_same_masks(mask_a, mask_b, name_a="model_a", name_b="model_b"):
    if set(mask_a) != set(mask_b):
        raise ValueError(f"{name_a} and {name_b} have different prunable weights "
                         f"({sorted(mask_a)} vs {sorted(mask_b)}); compare two copies of "
                         "the same architecture.")
    for key in mask_a:
        a, b = mask_a[key], mask_b[key]
        layer = Mask.layer_name(key)
        if a.shape != b.shape:
            raise ValueError(f"Layer {layer!r} ({key}): weight shapes differ "
                             f"between {name_a} {a.shape} and {name_b} {b.shape}.")
        differ = int(np.sum(a != b))
        if differ:
            raise ValueError(
                f"Masks differ in layer {layer!r} ({key}): {differ} of {a.size} "
                f"entries are kept in one of {name_a} / {name_b} and removed in the other. "
                "Stability compares two copies of the same subnetwork: train both with the "
                "same mask (for stripped tickets whose surviving weights may be exactly 0, "
                "pass mask=... explicitly).")


def _pair(model_a, model_b, mask):
    a = _snapshot(model_a, mask, "model_a")
    b = _snapshot(model_b, mask, "model_b")
    _check_same_masks(a.masks, b.masks)
    shapes_a, shapes_b = [x.shape for x in a.arrays], [x.shape for x in b.arrays]
    if shapes_a != shapes_b:
        raise ValueError(f"model_a and model_b have different parameter shapes "
                         f"({shapes_a} vs {shapes_b}); compare two copies of one architecture.")
    return a, b


# ---------------------------------------------------------------------------
# Fresh models

def _clone_plain(template):
    """A new plain model of the same architecture (fresh variables, no regularizers:
    they change neither inference nor the parameters). Call it in the scope of
    the strategy the clone is to run under."""
    def clone_layer(layer):
        if isinstance(layer, keras.Model):  # a nested model: its layers the same way
            return clone_model(layer, clone_layer)
        config = layer.get_config()
        for key in list(config):
            if key.endswith("_regularizer"):
                config[key] = None
        return layer.__class__.from_config(config)

    try:
        clone = clone_model(template, clone_layer)
    except ValueError as e:
        raise TypeError(f"Cannot clone model {template.name!r} ({e}). The analysis needs a "
                        "Sequential or functional tf_keras model.") from e
    if [v.shape for v in _own_params(clone)] != [v.shape for v in _own_params(template)]:
        raise TypeError(f"The clone of {template.name!r} has other weights than the model; "
                        "the analysis supports Sequential and functional tf_keras models "
                        "of standard layers.")
    return clone


def _own_params(plain):
    """The plain model's layer weights, in the order of `_parameters`."""
    return [v for layer in plain.layers for v in layer.weights]


def _parameter_names(plain):
    """The name, "<layer>/<weight>", of each of `_own_params(plain)`; in a
    nested model the layer is the path of the inner layer holding the weight
    ("block/dense/kernel")."""
    names = {}

    def walk(layer, path):
        if isinstance(layer, keras.Model):  # a nested model: its layers by their paths
            for sub in layer.layers:
                walk(sub, prunable_lib.join(path, sub.name))
        for v in layer.weights:  # a nested model's own variables, if any, under its path
            names.setdefault(id(v), f"{path}/{v.name.split('/')[-1].split(':')[0]}")

    for layer in plain.layers:
        walk(layer, layer.name)
    out = [names[id(v)] for v in _own_params(plain)]
    # A wrapper's inner layers can give two weights one short name (a
    # Bidirectional's forward and backward "bi/kernel"): those are named by
    # their variables' full paths, so no parameter is silently dropped.
    clash = {n for n in out if out.count(n) > 1}
    out = [_full_name(n.rsplit("/", 1)[0], v.name.split(":")[0]) if n in clash else n
           for n, v in zip(out, _own_params(plain))]
    if len(set(out)) != len(out):
        raise TypeError(f"Model {plain.name!r} has weights of the same name "
                        f"({sorted(n for n in out if out.count(n) > 1)[:3]}); give its "
                        "layers distinct names to analyse it.")
    return out


def _full_name(path, variable_name):
    """`variable_name` under `path`, the path not repeated when it leads it
    ("bi" and "bi/forward_gru/gru_cell/kernel")."""
    if variable_name.startswith(path + "/"):
        return variable_name
    return f"{path}/{variable_name}"


def get_parameters(model):
    """{"<layer>/<weight>": array} ("<block>/<layer>/<weight>" inside a nested
    model) of the weights the analysis compares and interpolates (kernels,
    biases, normalization parameters and statistics), wrapped or not; pruning
    state (masks, steps, regularizer variables) is left out. Use it to keep
    theta_k during a run and `set_parameters` to put it into a fresh model of
    the same architecture."""
    check_model(model)
    plain = _plain_view(model)
    return {name: v.numpy() for name, v in zip(_parameter_names(plain), _own_params(plain))}


def set_parameters(model, parameters):
    """Assigns `get_parameters` output to a model of the same architecture (plain
    or wrapped; a wrapped model's removed weights are zeroed again). Returns it."""
    check_model(model)
    plain = _plain_view(model)
    names, variables = _parameter_names(plain), _own_params(plain)
    missing, unknown = set(names) - set(parameters), set(parameters) - set(names)
    if missing or unknown:
        raise ValueError(f"The parameters do not fit model {model.name!r}: missing "
                         f"{sorted(missing)}, unknown {sorted(unknown)}.")
    for name, variable in zip(names, variables):
        value = np.asarray(parameters[name])
        if value.shape != tuple(variable.shape):
            raise ValueError(f"Parameter {name!r} has shape {value.shape}; the model's "
                             f"has {tuple(variable.shape)}.")
        variable.assign(value)
    if wrapper_lib.wrappers(model):
        masks_lib.apply_masks(model)
    return model


def _set(plain, arrays):
    for variable, array in zip(_own_params(plain), arrays):
        variable.assign(array)
    return plain


def interpolate(model_a, model_b, alpha, mask=None):
    """A new plain model with weights (1 - alpha) w_a + alpha w_b.

    Masks must match (a clear error names the layer otherwise); removed
    weights are exactly 0 in the result. Non-trainable state (batch-norm
    moving statistics) is interpolated too."""
    a, b = _pair(model_a, model_b, mask)
    return _set(_clone_plain(a.template), _mix(a, b, alpha))


def _mix(a, b, alpha):
    out = []
    for wa, wb, key in zip(a.arrays, b.arrays, a.keys):
        w = (1.0 - alpha) * wa + alpha * wb
        if key is not None:
            w = w * a.masks[key]  # exactly 0 where removed
        out.append(w.astype(wa.dtype, copy=False))
    return out


# ---------------------------------------------------------------------------
# Data and searches

def _batched(pair, batch_size):
    """The (x, y) arrays batched in order by `tf_unilth.data.from_arrays`.

    Values are fed as given, as they are where a dataset is evaluated as it
    is: uint8 images become float32 here, which from_arrays does not rescale."""
    x, y = np.asarray(pair[0]), pair[1]
    if x.dtype == np.uint8:
        x = x.astype(np.float32)
    stand_in = (x[:1], y[:1])  # from_arrays also makes a test split; nothing reads it
    return data_lib.from_arrays((x, y), stand_in, validation_size=0, batch_size=batch_size,
                                shuffle=False).train


def _evaluation_data(data):
    """A batched dataset to evaluate on: a tf.data dataset as it is, (x, y) arrays
    batched in order."""
    if isinstance(data, tf.data.Dataset):
        return data
    if isinstance(data, tuple) and len(data) == 2:
        return _batched(data, EVALUATION_BATCH)
    raise TypeError("data must be a batched tf.data.Dataset of (x, y) or an (x, y) pair "
                    f"of numpy arrays; got {type(data).__name__}.")


def _arrays(data):
    """(x, y) numpy arrays from an (x, y) pair or a (batched) tf.data dataset, read
    once: each copy's order then depends on its seed only, not on the dataset's
    own shuffling."""
    if isinstance(data, tuple) and len(data) == 2:
        return np.asarray(data[0]), np.asarray(data[1])
    if isinstance(data, tf.data.Dataset):
        leading = tf.nest.flatten(data.element_spec)[0].shape
        # Batched: an unknown leading dimension, or the graph's batch size there
        # (batch(B, drop_remainder=True) makes it static).
        batched = bool(leading.rank) and (leading[0] is None
                                          or static_batch_size(data) == leading[0])
        xs, ys = [], []
        for x, y in data.as_numpy_iterator():
            xs.append(x if batched else x[None])
            ys.append(y if batched else np.asarray(y)[None])
        return np.concatenate(xs), np.concatenate(ys)
    raise TypeError("train_data must be an (x, y) pair of numpy arrays or a tf.data "
                    f"dataset of (x, y); got {type(data).__name__}.")


def _silent(*_):
    pass


@contextlib.contextmanager
def _searching(data, strategy=None, optimizer="adam", learning_rate=None, verbose=0):
    """A `Search` over `data` (loss, metrics and compile of every ticket method),
    printing its messages only when `verbose`; its temporary state is removed
    afterwards."""
    search = search_lib.Search(data, optimizer=optimizer, learning_rate=learning_rate,
                               strategy=strategy, verbose=verbose,
                               printer=print if verbose else _silent)
    try:
        yield search
    finally:
        search.journal.cleanup()


# ---------------------------------------------------------------------------
# Measures

def instability(model_a, model_b, data, points=11, *, mask=None, threshold=STABLE_THRESHOLD,
                strategy=None):
    """Test error along the linear path between two copies of one subnetwork.

    `data`: the evaluation set (seed 001 uses the test set), a batched
    tf.data dataset or an (x, y) pair. `points` evenly spaced alphas in [0, 1]
    (ALGORITHMS.md asks for at least 11). Returns `Instability` with the curve
    and barrier = max err - mean(err(0), err(1)); `stable` = barrier <
    `threshold`. Masks must match; removed weights stay 0 along the path.
    The path's model is compiled once by a `Search` (the loss and accuracy
    ticket methods train with) and evaluated under `strategy` (default: the
    current one).
    """
    if int(points) < 2:
        raise ValueError(f"points must be >= 2 (both endpoints), got {points}.")
    a, b = _pair(model_a, model_b, mask)
    dataset = _evaluation_data(data)
    with _searching(search_lib.Data(None, test=dataset), strategy) as search:
        with search.strategy.scope():
            probe = _clone_plain(a.template)
        search.compile(probe)
        alphas = np.linspace(0.0, 1.0, int(points))
        errors, losses = [], []
        for alpha in alphas:
            _set(probe, _mix(a, b, alpha))
            result = search.evaluate(probe, "test")
            errors.append(1.0 - result["accuracy"])
            losses.append(result["loss"])
    barrier = max(errors) - 0.5 * (errors[0] + errors[-1])
    return Instability([float(x) for x in alphas], errors, losses, float(barrier),
                       float(threshold))


def weight_distance(a, b, mask=None):
    """L2 distance over the surviving prunable weights of two models (`Distance`).

    Symmetric; 0 for identical weights. Masks must match (see `instability`)."""
    sa, sb = _pair(a, b, mask)
    layers, total, norm_a, norm_b, count = {}, 0.0, 0.0, 0.0, 0
    for wa, wb, key in zip(sa.arrays, sb.arrays, sa.keys):
        if key is None:
            continue
        keep = sa.masks[key]
        xa, xb = wa[keep].astype(np.float64), wb[keep].astype(np.float64)
        d2 = float(np.sum((xa - xb) ** 2))
        layers[key] = float(np.sqrt(d2))
        total += d2
        norm_a += float(np.sum(xa ** 2))
        norm_b += float(np.sum(xb ** 2))
        count += int(keep.sum())
    l2, norm_a, norm_b = np.sqrt(total), np.sqrt(norm_a), np.sqrt(norm_b)
    scale = 0.5 * (norm_a + norm_b)
    return Distance(float(l2), float(l2 / scale) if scale > 0 else 0.0, float(norm_a),
                    float(norm_b), count, layers)


# ---------------------------------------------------------------------------
# The stability test

def train_copy(start, mask, x, y, *, steps, seed, batch_size=60, optimizer="adam",
               learning_rate=6e-4, strategy=None, verbose=0):
    """Trains one copy of the subnetwork for `steps` iterations; returns it wrapped.

    The copy starts from the weights of `start` (a model, plain or wrapped,
    or a snapshot of one) times `mask` (a Mask or {key: bool array}), with
    frozen masks and a fresh `optimizer` (a name or a tf_keras optimizer to
    copy), and trains through a `Search` under `strategy` (default: the
    current one) on (x, y) reshuffled on every pass by `seed`: one epoch of
    exactly `steps` batches of `batch_size` (global). A loss that stops being
    finite raises FloatingPointError (the Search's guard).
    """
    strategy = strategy or tf.distribute.get_strategy()
    distribute.check_batch_size(batch_size, strategy)
    if not isinstance(start, _Snapshot):
        start = _snapshot(start, None, "start")
    mask = _fit_mask(mask, start.shapes, "start")
    steps = int(steps)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}.")
    # One epoch of exactly `steps` batches; every pass over the examples has
    # its own permutation, a function of the seed only.
    x = np.asarray(x)
    order = data_lib.shuffled(x.astype(np.float32) if x.dtype == np.uint8 else x, y,
                              batch_size, seed, steps=max(steps, 1))
    data = search_lib.Data(order, steps_per_epoch=steps)
    with _searching(data, strategy, optimizer, learning_rate, verbose) as search:
        with strategy.scope():
            plain = _set(_clone_plain(start.template), start.masked(mask))
        model = search.wrap(plain)  # frozen schedules: the mask never changes
        with strategy.scope():
            masks_lib.set_masks(model, mask)
        search.compile(model)
        if steps > 0:
            search.fit(model, 1, [callbacks_lib.UpdatePruningStep()])
    return model


def stability_test(model, mask=None, rewind_point=0, train_data=None, test_data=None, *,
                   train_steps=None, total_steps=None, seeds=(1, 2), batch_size=60,
                   optimizer="adam", learning_rate=6e-4, points=11,
                   threshold=STABLE_THRESHOLD, keep_models=False, strategy=None, verbose=0):
    """Trains two copies of a subnetwork from its rewind point and measures both.

    `model` holds theta_k, the weights at iteration `rewind_point` (k) of the
    dense run, plain or wrapped; it is not modified. `mask` (a Mask or {key:
    bool array}, keys as `masks.get_masks`) is the subnetwork; None takes the
    wrappers' masks, or weight != 0 for a plain model. Each copy starts from
    theta_k * mask with a fresh optimizer and trains `train_steps` iterations
    (or `total_steps - k`, seed 001's budget) on `train_data` ((x, y) arrays or
    a tf.data dataset, read once into arrays; its examples are reshuffled) in
    the order drawn by its seed in `seeds`; everything else is the same
    (`train_copy`: a Search under `strategy`, NaN-guarded). Returns
    `StabilityResult` with the test accuracy of both copies, `instability` on
    `test_data` and `weight_distance` between them.
    """
    if train_data is None or test_data is None:
        raise ValueError("stability_test needs train_data (to train the two copies) and "
                         "test_data (to measure the error along the path).")
    if (train_steps is None) == (total_steps is None):
        raise ValueError("Give exactly one of train_steps (iterations per copy) or "
                         "total_steps (the full training length T; copies train T - k).")
    if rewind_point < 0:
        raise ValueError(f"rewind_point (k) must be >= 0, got {rewind_point}.")
    steps = train_steps if train_steps is not None else total_steps - rewind_point
    if steps < 0:
        raise ValueError(f"total_steps {total_steps} is below the rewind point "
                         f"{rewind_point}: nothing left to train.")
    seeds = list(seeds)
    if len(seeds) != 2 or seeds[0] == seeds[1]:
        raise ValueError(f"seeds must be two different shuffle seeds, got {seeds}.")
    start = _snapshot(model, None, "model")  # theta_k as it is (dense weights are fine)
    mask = start.masks if mask is None else _fit_mask(mask, start.shapes, "model")
    x, y = _arrays(train_data)
    began = time.perf_counter()
    copies = [train_copy(start, mask, x, y, steps=steps, seed=s, batch_size=batch_size,
                         optimizer=optimizer, learning_rate=learning_rate, strategy=strategy,
                         verbose=verbose)
              for s in seeds]
    curve = instability(copies[0], copies[1], test_data, points, threshold=threshold,
                        strategy=strategy)
    distance = weight_distance(copies[0], copies[1])
    return StabilityResult(
        rewind_point=int(rewind_point), train_steps=int(steps), seeds=seeds,
        sparsity=mask.sparsity, test_accuracy=[1.0 - curve.errors[0],
                                               1.0 - curve.errors[-1]],
        instability=curve, distance=distance, seconds=time.perf_counter() - began,
        models=copies if keep_models else None)


__all__ = ["Distance", "Instability", "StabilityResult", "STABLE_THRESHOLD", "get_parameters",
           "instability", "interpolate", "set_parameters", "stability_test", "train_copy",
           "weight_distance"]
