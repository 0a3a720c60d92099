"""Which weights of a user's model are pruned, for every kind of layer.

tfmot's `PruneRegistry` (and a layer's own `get_prunable_weights`, tfmot's
`PrunableLayer`) say which weights of a *leaf* layer are pruned: Dense,
Conv1D/2D/3D and their transposes, SeparableConv (pointwise kernel), Embedding,
LSTM/GRU/SimpleRNN (each cell's kernel and recurrent kernel),
MultiHeadAttention (its four projection kernels), ... We take its answer
as is. What tfmot does not do, written here by hand:

- **layers holding other layers** (Bidirectional, TimeDistributed, a nested
  Sequential/functional model, a subclassed model, a custom layer made of
  Keras layers): their prunable weights are those of the layers inside them,
  recursively. tfmot's registry refuses Bidirectional/TimeDistributed and has
  no notion of a container; one pruning wrapper around the container masks
  every weight inside it (`wrapper.MonotonePruneLowMagnitude` swaps each
  weight's attribute on the layer that owns it, at any depth);
- **leaves tfmot does not list** whose kernel is the weight tfmot prunes in
  their closest relative (`EXTRA_WEIGHTS`: EinsumDense, Conv1DTranspose);
- **layers with weights but nothing to prune** (Normalization's statistics,
  BatchNormalization, LayerNormalization, a layer with only biases or scales,
  DepthwiseConv2D, whose kernel tfmot does not prune, PReLU): kept dense,
  and listed (`kept_dense`), not an error.

A leaf that nobody names (not in the registry, no `get_prunable_weights`)
but that holds a trainable weight of rank >= 2 is refused (`NotPrunable`, one
line naming the layer, its class and the fix): leaving an unknown kernel
dense without saying so would misstate the sparsity.

Mask keys: `Mask.key(owner, index)`, the owner being the path of the layer
whose prunable weight it is, from the model's top (`"fc1"`, `"block/dense"`,
`"bidirectional/forward_gru"`), the index counting that owner's prunable
weights in tfmot's order (`"lstm/0"` kernel, `"lstm/1"` recurrent kernel;
`weight_names` says which is which). A flat model's keys are the same as
before containers were pruned.
"""

import dataclasses

from tf_unilth._compat import (PrunableLayer, is_subclassed_model, keras,
                               registry_prunable_weights, registry_supports, sublayers)
from tf_unilth.sparsity.mask import Mask

# Leaves tfmot's registry does not list, pruned like their relatives there
# (EinsumDense is MultiHeadAttention's projection; Conv1DTranspose as Conv2DTranspose).
EXTRA_WEIGHTS = {
    cls: names for cls, names in (
        (getattr(keras.layers, "EinsumDense", None), ("kernel",)),
        (getattr(keras.layers, "Conv1DTranspose", None), ("kernel",)),
    ) if cls is not None}

# Leaves whose weights (rank >= 2 included) are parameters of an activation or
# a preprocessing step, never kernels: kept dense.
KEPT_DENSE = tuple(getattr(keras.layers, name) for name in (
    "PReLU", "Normalization", "Discretization", "DepthwiseConv2D", "DepthwiseConv1D",
) if hasattr(keras.layers, name))

# The marker on a `get_prunable_weights` we set on a layer ourselves (a
# container): tfmot's wrapper needs the method, and our own reading of the
# layer must not take it for the user's.
_OURS = "_tf_unilth_prunable_weights"


class NotPrunable(ValueError):
    """A layer whose weights cannot be pruned (one line: layer, class, fix)."""


def join(*parts):
    return "/".join(p for p in parts if p)


def own_weights(layer):
    """The weights pruned in `layer` itself, as tfmot (its registry, or the
    layer's `get_prunable_weights`) or `EXTRA_WEIGHTS` names them; None when
    nobody names them (a container, or an unknown leaf)."""
    getter = getattr(layer, "get_prunable_weights", None)
    if getter is not None and not getattr(getter, _OURS, False):
        return list(getter())
    found = registry_prunable_weights(layer)
    if found is not None:
        return found
    names = EXTRA_WEIGHTS.get(type(layer))
    if names is not None:
        return [getattr(layer, name) for name in names]
    return None


@dataclasses.dataclass
class Entry:
    """One prunable weight: its owner's path below the layer it was found
    from ('' = that layer itself), its index among the owner's, the weight."""
    owner: str
    index: int
    weight: object


def _kernels(weights):
    return [w for w in weights if w.trainable and len(w.shape) >= 2]


def _refusal(layer, path, weight):
    name = path or layer.name
    return NotPrunable(
        f"Layer {name!r} ({type(layer).__name__}) has a trainable weight "
        f"{weight.name.split(':')[0]!r} of shape {tuple(weight.shape)} that neither tfmot's "
        f"PruneRegistry nor a get_prunable_weights method names: make "
        f"{type(layer).__name__} a tfmot PrunableLayer (get_prunable_weights returning the "
        f"weights to prune), or keep it dense with exclude=[{name!r}] (flag --exclude={name}).")


def entries(layer, skip=(), path="", kept=None):
    """Every weight pruned in `layer` (`Entry`s, in tfmot's order within each
    owner, owners in tracking order). `skip`: owner paths (below `layer`) kept
    dense. `kept` (a list) receives (path, layer) for each layer with weights
    that keeps them all dense. Raises NotPrunable (see module doc)."""
    return _entries(layer, "", set(skip), kept, path)


def _entries(layer, rel, skip, kept, top):
    where = join(top, rel)
    own = own_weights(layer)
    if own is not None:
        if not own and layer.weights and kept is not None:
            kept.append((where, layer))
        return [Entry(rel, i, w) for i, w in enumerate(own)]
    found, covered = [], set()
    for sub in sublayers(layer):
        covered.update(id(w) for w in sub.weights)
        sub_rel = join(rel, sub.name)
        if sub_rel in skip:
            if sub.weights and kept is not None:
                kept.append((join(top, sub_rel), sub))
            continue
        found += _entries(sub, sub_rel, skip, kept, top)
    left = [w for w in layer.weights if id(w) not in covered]  # the layer's own variables
    if left:
        kernels = _kernels(left)
        if kernels and not isinstance(layer, KEPT_DENSE):
            raise _refusal(layer, where, kernels[0])
        if kept is not None:
            kept.append((where, layer))
    return found


def make_prunable(layer, skip=()):
    """Gives a layer tfmot does not know (a container holding prunable layers,
    or one of `EXTRA_WEIGHTS`) the `get_prunable_weights` tfmot's wrapper asks for, the way
    tfmot's own `PruneRegistry.make_prunable` does for the layers it knows.
    Returns the layer's entries ([] for a layer not built yet, as one
    rebuilt from a saved config is: its weights, checked when the model
    was first pruned, exist only after build)."""
    found = entries(layer, skip) if layer.built else []
    if not is_prunable_layer(layer) and not registry_supports(layer):
        def get_prunable_weights():
            return [e.weight for e in entries(layer, skip)]
        setattr(get_prunable_weights, _OURS, True)
        # object.__setattr__: a plain function attribute, not tracked by Keras.
        object.__setattr__(layer, "get_prunable_weights", get_prunable_weights)
    return found


# ---------------------------------------------------------------------------
# A whole model

def layer_paths(model):
    """Every layer's path from the top of `model` (recursively through the
    layers that hold others): the names `exclude=` may give."""
    paths = []

    def walk(layer, path):
        for sub in sublayers(layer):
            sub_path = join(path, sub.name)
            paths.append(sub_path)
            walk(sub, sub_path)
    walk(model, "")
    return paths


def check_exclude(model, exclude):
    """`exclude` as a set of paths; a clear error for a name that is no layer."""
    exclude = set(exclude or ())
    known = set(layer_paths(model))
    unknown = exclude - known
    if unknown:
        top = [layer.name for layer in model.layers]
        raise ValueError(f"exclude names layers not in the model: {sorted(unknown)}; its "
                         f"layers: {top} (a layer inside another is named by its path, "
                         "e.g. 'block/dense').")
    return exclude


@dataclasses.dataclass
class Plan:
    """What pruning `model` does, per top-level layer: its entries (keys from
    the top), the owner paths it skips, and the layers kept dense."""
    layers: dict       # top-level layer name -> [Entry] (empty: not wrapped)
    skip: dict         # top-level layer name -> owner paths below it kept dense
    kept: list         # [(path, class name, number of weights)] kept dense

    def keys(self):
        return [Mask.key(join(name, e.owner), e.index)
                for name, found in self.layers.items() for e in found]

    def wrapped(self):
        return [name for name, found in self.layers.items() if found]


def plan(model, exclude=()):
    """The `Plan` of pruning `model` with `exclude` kept dense (names or
    paths). Raises NotPrunable, before anything is wrapped, for the first
    layer that cannot be pruned."""
    exclude = check_exclude(model, exclude)
    layers, skips, kept = {}, {}, []
    for layer in model.layers:
        if layer.name in exclude:
            layers[layer.name] = []
            if layer.weights:
                kept.append((layer.name, layer))
            continue
        skip = {p[len(layer.name) + 1:] for p in exclude if p.startswith(layer.name + "/")}
        layers[layer.name] = entries(layer, skip, layer.name, kept)
        skips[layer.name] = tuple(sorted(skip))
    counted = [(path, type(l).__name__, int(sum(w.shape.num_elements() for w in l.weights)))
               for path, l in kept]
    return Plan(layers, skips, counted)


def model_entries(model, exclude=()):
    """[(key, weight)] of the prunable weights of an unwrapped model."""
    found = plan(model, exclude)
    weights = [e.weight for name in found.layers for e in found.layers[name]]
    return list(zip(found.keys(), weights))


def weight_names(model, exclude=()):
    """{mask key: the weight's own name} ('lstm/1' -> 'lstm/lstm_cell/recurrent_kernel')."""
    return {key: weight.name.split(":")[0] for key, weight in model_entries(model, exclude)}


def describe_kept(kept, limit=8):
    """One line listing the layers kept dense (the first `limit`)."""
    if not kept:
        return None
    shown = ", ".join(f"{path} ({cls}, {n:,} weights)" for path, cls, n in kept[:limit])
    more = f", and {len(kept) - limit} more" if len(kept) > limit else ""
    return (f"Kept dense ({len(kept)} layer{'s' if len(kept) != 1 else ''} with weights but "
            f"nothing to prune): {shown}{more}.")


def is_prunable_layer(layer):
    """tfmot's PrunableLayer, or a layer with its own get_prunable_weights."""
    getter = getattr(layer, "get_prunable_weights", None)
    return isinstance(layer, PrunableLayer) or (
        getter is not None and not getattr(getter, _OURS, False))


__all__ = ["NotPrunable", "entries", "plan", "model_entries", "weight_names",
           "check_exclude", "layer_paths", "make_prunable", "is_subclassed_model"]
