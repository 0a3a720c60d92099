"""Reading, setting and choosing the masks of a tfmot-wrapped model.

A *selection* is a dict `{key: bool array}` marking the surviving weights a
pruning step removes; `key` is `"<layer name>/<index of the prunable weight>"`.
Selections are made from *scores* (magnitude, fixed random scores, block
norms) either per layer (`select_layerwise`) or with one threshold over the
whole model (`select_global`, which tfmot lacks). Masks are monotone: every
function here only ever removes weights, and removing a weight also zeroes it
and its optimizer state.
"""

import collections

import numpy as np

from tf_unilth._compat import keras, tf
from tf_unilth import wrapper as wrapper_lib

PrunedWeight = collections.namedtuple(
    "PrunedWeight", ["key", "layer_name", "weight", "mask", "wrapper", "index"])


def pruned_weights(model):
    """One record per prunable weight tensor of the wrapped `model`."""
    records = []
    for layer in wrapper_lib.wrappers(model):
        for i, (weight, mask, _) in enumerate(layer.pruning_vars):
            records.append(PrunedWeight(f"{layer.layer.name}/{i}", layer.layer.name,
                                        weight, mask, layer, i))
    if not records:
        raise ValueError(
            "The model has no pruning wrappers; wrap it first with "
            "tf_unilth.prune(model) (or tfmot's prune_low_magnitude).")
    return records


def get_masks(model):
    """{key: bool array}, True where the weight survives."""
    return {r.key: r.mask.numpy() > 0.5 for r in pruned_weights(model)}


def get_weights(model):
    """{key: array} of the prunable weights (as stored, i.e. already masked)."""
    return {r.key: r.weight.numpy() for r in pruned_weights(model)}


# ---------------------------------------------------------------------------
# Optimizer state

def optimizer_slots(optimizer, variable):
    """The optimizer variables that hold per-entry state for `variable`.

    tf_keras optimizers keep one list per kind of slot (`_momentums`,
    `_velocities`, ...) indexed like the model variables; legacy optimizers
    expose `get_slot`. Unknown optimizers yield [] (their state is then not
    cleared, but removed weights still get zero gradient).
    """
    if optimizer is None:
        return []
    if isinstance(optimizer, keras.optimizers.legacy.Optimizer):
        slots = []
        for name in optimizer.get_slot_names():
            try:
                slots.append(optimizer.get_slot(variable, name))
            except (KeyError, ValueError):
                pass
        return slots
    index_dict = getattr(optimizer, "_index_dict", None)
    if not index_dict:
        return []
    key = optimizer._var_key(variable)  # pylint: disable=protected-access
    if key not in index_dict:
        return []
    index, size = index_dict[key], len(index_dict)
    slots = []
    for value in vars(optimizer).values():
        if (isinstance(value, (list, tuple)) and len(value) == size
                and all(isinstance(v, tf.Variable) for v in value)):
            slot = value[index]
            if slot.shape == variable.shape:
                slots.append(slot)
    return slots


def attach_optimizer(model, optimizer=None):
    """Builds the optimizer's slots (in the model's strategy scope) and lets each
    wrapper zero the slots of the weights it removes."""
    optimizer = optimizer or getattr(model, "optimizer", None)
    if optimizer is None:
        return
    with model.distribute_strategy.scope():
        if isinstance(optimizer, keras.optimizers.legacy.Optimizer):
            optimizer._create_all_weights(model.trainable_variables)  # pylint: disable=protected-access
        else:
            optimizer.build(model.trainable_variables)
    for layer in wrapper_lib.wrappers(model):
        layer.pruning_obj.set_optimizer_slots(
            [optimizer_slots(optimizer, w) for w, _, _ in layer.pruning_vars])


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


def remove(model, selection, optimizer=None):
    """Removes the selected weights now (masks &= ~selection)."""
    masks = get_masks(model)
    return set_masks(model, {k: masks[k] & ~np.asarray(v, bool)
                             for k, v in selection.items()}, optimizer)


# ---------------------------------------------------------------------------
# Reports

def sparsity_report(model):
    """Per-layer and total sparsity over prunable weights."""
    layers, zeros, total = {}, 0, 0
    for r in pruned_weights(model):
        mask = r.mask.numpy()
        n, z = mask.size, int(np.sum(mask < 0.5))
        layers[r.key] = {"count": n, "zeros": z, "sparsity": z / n, "density": 1 - z / n}
        zeros, total = zeros + z, total + n
    return {"layers": layers, "count": total, "zeros": zeros,
            "sparsity": zeros / total, "density": 1 - zeros / total}


def sparsity(model):
    return sparsity_report(model)["sparsity"]


# ---------------------------------------------------------------------------
# Scores and selections

def magnitude_scores(model):
    return {r.key: np.abs(r.weight.numpy()) for r in pruned_weights(model)}


def random_scores(model, seed):
    """Fixed uniform scores: ranking by them draws a seeded random ticket.

    Drawn once and reused across rounds, later rounds remove the next chunk of
    the same random order (UniDLTH's random ticket)."""
    rng = np.random.default_rng(seed)
    return {r.key: rng.random(tuple(r.weight.shape)) for r in pruned_weights(model)}


def block_scores(model, block_size, scores=None):
    """Scores pooled over (rows x cols) blocks of rank-2 weights, broadcast back.

    Default scores are magnitudes, pooled as the L2 norm of each block; other
    scores (e.g. `random_scores`) are pooled by their mean, so a random ticket
    is drawn block by block. `block_size=(4, 1)` groups 4 consecutive input
    rows of a Dense kernel (Keras layout [in, out]): the 1x4 blocks TFLite's
    sparse fully-connected kernels accelerate. Every entry of a block gets the
    block's score, so the block survives or goes as a whole. Weights of other
    ranks keep their own scores."""
    bh, bw = (int(b) for b in block_size)
    if bh < 1 or bw < 1:
        raise ValueError(f"block_size must be two positive ints, got {block_size}.")
    pooled = {}
    for r in pruned_weights(model):
        values = np.abs(r.weight.numpy()) if scores is None else scores[r.key]
        if values.ndim != 2:
            pooled[r.key] = values
            continue
        rows, cols = values.shape
        padded = np.pad(values ** 2 if scores is None else values,
                        ((0, -rows % bh), (0, -cols % bw)))
        blocks = padded.reshape(padded.shape[0] // bh, bh, padded.shape[1] // bw, bw)
        norms = np.sqrt(blocks.sum(axis=(1, 3))) if scores is None else blocks.mean(axis=(1, 3))
        pooled[r.key] = np.repeat(np.repeat(norms, bh, axis=0), bw, axis=1)[:rows, :cols]
    return pooled


def _removal_count(alive, rate, unit=1):
    """Weights to remove, a whole number of blocks of `unit` entries."""
    return int(round(alive * rate / unit)) * unit


def _lowest(scores, alive, count):
    """Bool array marking `count` alive entries with the lowest scores."""
    chosen = np.zeros(scores.shape, dtype=bool)
    if count <= 0:
        return chosen
    flat_idx = np.flatnonzero(alive)
    order = np.argsort(scores.reshape(-1)[flat_idx], kind="stable")[:count]
    chosen.reshape(-1)[flat_idx[order]] = True
    return chosen


def select_layerwise(model, scores, rate, rate_overrides=None, block_size=None):
    """Each layer removes `rate` of its surviving weights (lowest scores first).

    `rate_overrides` maps a layer name to its own rate (LTH: the output layer at
    half rate). With `block_size` (scores pooled by `block_scores`), rank-2
    weights remove whole blocks."""
    _check_rate(rate)
    rate_overrides = dict(rate_overrides or {})
    names = {r.layer_name for r in pruned_weights(model)}
    unknown = set(rate_overrides) - names
    if unknown:
        raise ValueError(f"rate_overrides names unknown layers {sorted(unknown)}; "
                         f"prunable layers: {sorted(names)}.")
    masks = get_masks(model)
    selection = {}
    for r in pruned_weights(model):
        layer_rate = rate_overrides.get(r.layer_name, rate)
        _check_rate(layer_rate)
        alive = masks[r.key]
        unit = int(np.prod(block_size)) if block_size is not None and alive.ndim == 2 else 1
        selection[r.key] = _lowest(scores[r.key], alive,
                                   _removal_count(int(alive.sum()), layer_rate, unit))
    return selection


def select_global(model, scores, rate):
    """Removes `rate` of all surviving weights with one threshold across layers."""
    _check_rate(rate)
    masks = get_masks(model)
    keys = list(masks)
    alive_scores = np.concatenate([scores[k][masks[k]] for k in keys])
    count = _removal_count(alive_scores.size, rate)
    selection = {k: np.zeros(masks[k].shape, bool) for k in keys}
    if count == 0:
        return selection
    # Rank over the concatenation so ties are broken deterministically.
    flat_keys = np.concatenate([np.full(masks[k].sum(), i) for i, k in enumerate(keys)])
    flat_pos = np.concatenate([np.flatnonzero(masks[k]) for k in keys])
    order = np.argsort(alive_scores, kind="stable")[:count]
    for i, k in enumerate(keys):
        picked = flat_pos[order[flat_keys[order] == i]]
        selection[k].reshape(-1)[picked] = True
    return selection


def magnitude_layerwise(model, rate, rate_overrides=None):
    return select_layerwise(model, magnitude_scores(model), rate, rate_overrides)


def magnitude_global(model, rate):
    return select_global(model, magnitude_scores(model), rate)


def random(model, rate, seed, rate_overrides=None):
    return select_layerwise(model, random_scores(model, seed), rate, rate_overrides)


SELECTIONS = ("magnitude_layerwise", "magnitude_global", "random", "block")


def select(model, method, rate, *, seed=0, scores=None, rate_overrides=None,
           block_size=None):
    """Dispatches on a selection name (what the methods and flags use).

    `block_size` (e.g. (4, 1)) makes any layer-wise selection remove whole
    blocks: magnitude ranks blocks by L2 norm, random draws blocks. "block" is
    magnitude_layerwise with block_size (4, 1) unless another is given."""
    if block_size is not None and tuple(block_size) == (1, 1):
        block_size = None
    if method == "block":
        method, block_size = "magnitude_layerwise", tuple(block_size or (4, 1))
    if method == "magnitude_global":
        if block_size is not None:
            raise ValueError("magnitude_global has no block form; use "
                             "selection='magnitude_layerwise' (or 'block') with block_size.")
        return magnitude_global(model, rate)
    if method == "magnitude_layerwise":
        base = None
    elif method == "random":
        base = scores if scores is not None else random_scores(model, seed)
    else:
        raise ValueError(f"Unknown selection {method!r}; known: {list(SELECTIONS)}.")
    if block_size is not None:
        base = block_scores(model, block_size, base)
    elif base is None:
        base = magnitude_scores(model)
    return select_layerwise(model, base, rate, rate_overrides, block_size)


def layer_rates(model, density, output_rate_scale=0.5):
    """(rate, rate_overrides) that take the surviving weights to `density` overall
    while the output layer removes `output_rate_scale` times the others' rate.

    The LTH convention (Frankle & Carbin: the output layer at half rate), used
    by every method here so their tickets are comparable: the output layer of
    a classifier is small and each of its weights matters more. 1.0 prunes
    every layer alike."""
    if not 0.0 <= output_rate_scale <= 1.0:
        raise ValueError(f"output_rate_scale must be in [0, 1], got {output_rate_scale}.")
    records = pruned_weights(model)
    masks = get_masks(model)
    output = records[-1].layer_name
    total = sum(m.size for m in masks.values())
    alive_out = sum(int(masks[r.key].sum()) for r in records if r.layer_name == output)
    alive_rest = sum(int(masks[r.key].sum()) for r in records if r.layer_name != output)
    remove = alive_out + alive_rest - density * total
    if remove < 0:
        raise ValueError(f"Cannot grow density to {density} (now "
                         f"{(alive_out + alive_rest) / total:.4f}).")
    rate = remove / (output_rate_scale * alive_out + alive_rest)
    _check_rate(rate)
    return rate, {output: output_rate_scale * rate}


def erk_densities(model, density):
    """Per-layer densities of the Erdos-Renyi-Kernel allocation at `density` overall.

    Density of a layer proportional to sum(shape) / prod(shape) (Evci et al.
    2020, RigL), capped at 1 with the rest shared by the other layers: small
    layers (the output layer) stay denser, the big first layer sparser. Random
    sparse networks train much better with it than with uniform layer rates
    (Liu et al. 2022), which is why random-ticket methods offer it."""
    records = pruned_weights(model)
    sizes = {r.key: int(np.prod(r.weight.shape)) for r in records}
    raw = {r.key: float(np.sum(r.weight.shape)) / sizes[r.key] for r in records}
    budget, dense = density * sum(sizes.values()), set()
    while True:
        free = [k for k in sizes if k not in dense]
        scale = (budget - sum(sizes[k] for k in dense)) / sum(raw[k] * sizes[k] for k in free)
        over = [k for k in free if raw[k] * scale > 1.0]
        if not over:
            return {k: 1.0 if k in dense else raw[k] * scale for k in sizes}
        dense.update(over)


def allocation_rates(model, layer_densities):
    """(rate, rate_overrides) taking each layer to its density in `layer_densities`."""
    masks, overrides = get_masks(model), {}
    for r in pruned_weights(model):
        alive = masks[r.key].sum() / masks[r.key].size
        overrides[r.layer_name] = max(0.0, rate_between(alive, min(alive, layer_densities[r.key])))
    return 0.0, overrides


def rate_between(density_from, density_to):
    """Fraction of the surviving weights to remove to go from one density to another."""
    if density_to > density_from + 1e-12:
        raise ValueError(f"Cannot grow density from {density_from} to {density_to}.")
    return 1.0 - density_to / density_from


def selection_size(selection):
    return int(sum(np.sum(v) for v in selection.values()))


def fidelity(selected, removed):
    """|selected ∩ removed| / |selected| (1.0 when nothing was selected)."""
    n = selection_size(selected)
    if n == 0:
        return 1.0
    agree = sum(int(np.sum(selected[k] & removed[k])) for k in selected)
    return agree / n


def _check_rate(rate):
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"A pruning rate must be in [0, 1), got {rate}.")
