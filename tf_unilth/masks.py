"""The masks of a pruned tf_keras model: read them, choose removals, write them back.

The sparsity core (`tf_unilth.sparsity`) decides on plain arrays; this module
is where they meet the model: `get_masks(model)` reads a `Mask` out of the
wrappers, `choose(model, selector, ...)` scores the weights and returns the
removal set, and `remove` / `set_masks` write masks back monotonically (a
removed weight stays removed; removing a weight also zeroes it and its
optimizer state). Keys are `Mask.key(owner, index of the prunable weight)`, the
owner being the layer's name or its path inside another (tf_unilth.prunable).

Earlier versions' entry points (`select`, `magnitude_layerwise`,
`layer_rates`, ...) remain, as thin compositions of the core.
"""

import collections

import numpy as np

from tf_unilth._compat import (TfmotPruneLowMagnitude, inbound_layers, is_subclassed_model,
                               keras, optimizer_slots, tf)
from tf_unilth import prunable
from tf_unilth import wrapper as wrapper_lib
from tf_unilth.sparsity import Mask, Selector, allocation, criteria, selection
from tf_unilth.sparsity.plans import check_rate, rate_between  # noqa: F401

PrunedWeight = collections.namedtuple(
    "PrunedWeight", ["key", "layer_name", "weight", "mask", "wrapper", "index"])

SELECTIONS = tuple(selection.NAMED)


def pruned_weights(model):
    """One record per prunable weight tensor of the wrapped `model`."""
    records = []
    for layer in wrapper_lib.wrappers(model):
        for i, ((weight, mask, _), key) in enumerate(zip(layer.pruning_vars,
                                                         wrapper_lib.weight_keys(layer))):
            records.append(PrunedWeight(key, Mask.layer_name(key), weight, mask, layer, i))
    if not records:
        raise ValueError(
            "The model has no pruning wrappers; wrap it first with "
            "tf_unilth.prune(model) (or tfmot's prune_low_magnitude).")
    return records


def _local(variable, replica):
    values = getattr(variable, "values", None)
    return values[replica] if values is not None else variable


def get_masks(model, replica=0):
    """The model's `Mask` (of one local replica's copy under a strategy)."""
    return Mask({r.key: _local(r.mask, replica).numpy() > 0.5 for r in pruned_weights(model)})


def replica_masks(model):
    """`get_masks` of every local replica's copy."""
    count = len(getattr(pruned_weights(model)[0].mask, "values", None) or [None])
    return [get_masks(model, i) for i in range(count)]


def replica_digests(model):
    """The masks digest of every local replica's copy ([] for a model without
    wrappers): replicas that disagree show as different digests."""
    if not wrapper_lib.wrappers(model):
        return []
    return [m.digest() for m in replica_masks(model)]


def get_weights(model):
    """{key: array} of the prunable weights (as stored, i.e. already masked)."""
    return {r.key: r.weight.numpy() for r in pruned_weights(model)}


def zeros_mask(model):
    """The mask of a stripped ticket (or any plain model): weight != 0 over the
    weights tfmot would prune, keyed like a wrapped model's."""
    return Mask({key: weight.numpy() != 0 for key, weight in prunable.model_entries(model)})


def plain_mask(model, exclude=()):
    """Everything kept, keyed like the wrapped model's mask: the prunable
    weights of an unwrapped model (without its `exclude`d layers)."""
    return Mask({key: np.ones(weight.shape, bool)
                 for key, weight in prunable.model_entries(model, exclude)})


def _owners(model, exclude):
    """The owner paths (`Mask.layer_name` of the keys) of a wrapped or plain model."""
    if wrapper_lib.wrappers(model):
        keys = wrapper_lib.mask_keys(model)
    else:
        keys = prunable.plan(model, exclude).keys()
    return list(dict.fromkeys(Mask.layer_name(k) for k in keys))


def _under(owners, path):
    return [o for o in owners if o == path or o.startswith(path + "/")]


def _producers(model, owners, prefix):
    """The owners producing `model`'s outputs, walking back through layers
    without weights to prune (a final Softmax)."""
    found, todo, seen = [], [model.get_layer(n) for n in model.output_names], set()
    while todo:
        layer = todo.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        inner = layer.layer if isinstance(layer, TfmotPruneLowMagnitude) else layer
        path = prunable.join(prefix, inner.name)
        mine = _under(owners, path)
        if not mine:
            todo.extend(inbound_layers(layer))
        elif path in mine:
            found.append(path)
        elif isinstance(inner, keras.Model) and not is_subclassed_model(inner):
            found += _producers(inner, owners, path) or mine
        elif is_subclassed_model(inner):
            found.append(mine[-1])  # no graph to follow: its last prunable layer
        else:
            found += mine  # Bidirectional's two directions, TimeDistributed's layer
    return found


def output_layers(model, named=None, exclude=()):
    """Owner paths (see tf_unilth.prunable: a layer's name, or 'block/dense'
    inside another) of the prunable layers that produce the model's outputs
    (through layers without weights to prune, such as a final Softmax),
    wrapped or not: the layers the output layer's pruning rate applies to.
    `named` (a name or names; a layer holding others stands for the prunable
    layers inside it) overrides the search, and is checked."""
    owners = _owners(model, exclude)
    if named:
        names = [named] if isinstance(named, str) else list(named)
        unknown = [n for n in names if not _under(owners, n)]
        if unknown:
            raise ValueError(f"output_layer names {unknown}, which are not prunable layers of "
                             f"the model; its prunable layers: {sorted(owners)}.")
        return tuple(dict.fromkeys(o for n in names for o in _under(owners, n)))
    return tuple(sorted(set(_producers(model, owners, ""))))


def output_layer(model):
    """The output layer's name (the first of `output_layers`; earlier versions' name)."""
    return output_layers(model)[0]


# ---------------------------------------------------------------------------
# Writing masks

def apply_masks(model, optimizer=None):
    """weights (and optimizer slots) <- themselves * mask, for every wrapper."""
    optimizer = optimizer or getattr(model, "optimizer", None)
    for r in pruned_weights(model):
        mask = r.mask.read_value()
        r.weight.assign(r.weight * tf.cast(mask, r.weight.dtype))
        for slot in optimizer_slots(optimizer, r.weight):
            slot.assign(slot * tf.cast(mask, slot.dtype))


def set_masks(model, masks, optimizer=None):
    """Sets masks (True = keep) monotonically: a removed weight stays removed.

    Returns the number of entries that `masks` asked to keep but that were
    already removed (they stay removed).
    """
    records = {r.key: r for r in pruned_weights(model)}
    unknown = set(masks) - set(records)
    if unknown:
        raise KeyError(f"Unknown mask keys {sorted(unknown)}; known: {sorted(records)}.")
    refused = 0
    for key, keep in masks.items():
        record = records[key]
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != tuple(record.mask.shape):
            raise ValueError(f"Mask {key!r} has shape {keep.shape}, expected "
                             f"{tuple(record.mask.shape)}.")
        current = record.mask.numpy() > 0.5
        refused += int(np.sum(keep & ~current))
        record.mask.assign((keep & current).astype(record.mask.dtype.as_numpy_dtype))
    apply_masks(model, optimizer)
    return refused


def remove(model, removal, optimizer=None):
    """Removes the weights of `removal` (True = remove) now."""
    return set_masks(model, get_masks(model).remove(removal), optimizer)


# ---------------------------------------------------------------------------
# Reports

def sparsity_report(model):
    """Per-layer and total sparsity over prunable weights."""
    return get_masks(model).report()


def sparsity(model):
    return get_masks(model).sparsity


def masks_digest(model, replica=0):
    """A hex digest of the model's masks (of one local replica's copy), or None
    for a model without wrappers. Equal digests: the same weights were pruned."""
    if not wrapper_lib.wrappers(model):
        return None
    return get_masks(model, replica).digest()


# ---------------------------------------------------------------------------
# Choosing removals

def gradients(model, batch):
    """{key: dL/dw} of the compiled loss on one `(x, y)` batch (for criteria
    that ask for gradients)."""
    x, y = batch
    records = pruned_weights(model)
    with tf.GradientTape() as tape:
        loss = model.compiled_loss(y, model(x, training=False))
    grads = tape.gradient(loss, [r.weight for r in records])
    return {r.key: (np.zeros(r.weight.shape, np.float32) if g is None else g.numpy())
            for r, g in zip(records, grads)}


def choose(model, selector, rates, batch=None):
    """The removal set (a Mask) that `selector` picks at `rates` (see
    `tf_unilth.sparsity.allocation`); `batch` feeds a gradient criterion."""
    return choose_among(model, selector, rates, get_masks(model), batch)


def choose_among(model, selector, rates, alive, batch=None):
    """`choose` among the weights `alive` marks (a subset of the survivors:
    e.g. those not yet set for removal)."""
    grads = None
    if selector.needs_gradients:
        if batch is None:
            raise ValueError(f"Criterion {selector.criterion.name!r} needs gradients: give a "
                             "batch (x, y) to score them on.")
        grads = gradients(model, batch)
    return selector.removal(get_weights(model), alive, rates, grads)


def _selector(method, seed=0, block_size=None, scores=None):
    selector = Selector.named(method, block_size=block_size, seed=seed,
                              floor=allocation.NO_FLOOR)
    if scores is not None:  # precomputed scores (earlier versions' random_scores)
        fixed = scores

        class _Given(criteria.Criterion):
            def score(self, weights, gradients=None):
                return {k: fixed[k] for k in weights}

        selector.criterion = _Given()
    return selector


def select(model, method, rate, *, seed=0, scores=None, rate_overrides=None, block_size=None):
    """Earlier versions' dispatcher: `method` names a (criterion, allocation)
    pair ('magnitude_layerwise', 'magnitude_global', 'random', 'block'); no floor."""
    selector = _selector(method, seed, block_size, scores)
    if isinstance(selector.allocation, allocation.Global):
        rates = check_rate(rate)
    else:
        rates = _layer_rates(model, rate, rate_overrides)
    return selector.removal(get_weights(model), get_masks(model), rates)


def _layer_rates(model, rate, rate_overrides):
    check_rate(rate)
    rate_overrides = dict(rate_overrides or {})
    records = pruned_weights(model)
    unknown = set(rate_overrides) - {r.layer_name for r in records}
    if unknown:
        raise ValueError(f"rate_overrides names unknown layers {sorted(unknown)}; "
                         f"prunable layers: {sorted({r.layer_name for r in records})}.")
    return {r.key: rate_overrides.get(r.layer_name, rate) for r in records}


def select_layerwise(model, scores, rate, rate_overrides=None, block_size=None):
    """Each layer removes `rate` of its surviving weights (lowest `scores` first)."""
    return selection.remove_lowest(scores, get_masks(model),
                                   _layer_rates(model, rate, rate_overrides), block_size)


def select_global(model, scores, rate):
    """Removes `rate` of all surviving weights with one threshold across layers."""
    return selection.remove_lowest(scores, get_masks(model), check_rate(rate))


def magnitude_scores(model):
    return criteria.Magnitude().score(get_weights(model))


def random_scores(model, seed):
    """Fixed uniform scores: ranking by them draws a seeded random ticket."""
    return criteria.FixedRandom(seed).score(get_weights(model))


def magnitude_layerwise(model, rate, rate_overrides=None):
    return select(model, "magnitude_layerwise", rate, rate_overrides=rate_overrides)


def magnitude_global(model, rate):
    return select(model, "magnitude_global", rate)


def random(model, rate, seed, rate_overrides=None):
    return select(model, "random", rate, seed=seed, rate_overrides=rate_overrides)


def layer_rates(model, density, output_rate_scale=0.5):
    """(rate, rate_overrides) taking the model to `density` with the output
    layer at `output_rate_scale` times the others' rate (earlier versions' form
    of `allocation.Uniform.rates`, without a floor)."""
    out = output_layer(model)
    rates = allocation.Uniform(output_rate_scale, allocation.NO_FLOOR).rates(
        get_masks(model), density, out)
    rest = [v for k, v in rates.items() if Mask.layer_name(k) != out]
    rate = rest[0] if rest else rates[next(iter(rates))] / max(output_rate_scale, 1e-12)
    return rate, {out: output_rate_scale * rate}


def erk_densities(model, density):
    return allocation.ERK.densities({r.key: tuple(r.weight.shape)
                                     for r in pruned_weights(model)}, density)


def allocation_rates(model, layer_densities):
    """(0.0, {layer: rate}) taking each layer to its density in `layer_densities`."""
    rates = allocation.ERK.rates_to(get_masks(model), layer_densities)
    return 0.0, {Mask.layer_name(k): v for k, v in rates.items()}


def selection_size(selection_mask):
    return int(sum(np.sum(v) for v in selection_mask.values()))


def fidelity(selected, removed):
    """|selected & removed| / |selected| (1.0 when nothing was selected)."""
    return Mask(selected).fidelity(removed)


attach_optimizer = wrapper_lib.link_optimizer  # earlier versions' name
