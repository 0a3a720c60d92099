"""Masked layers for Keras 3: the layer hook, the masks, the growing penalty.

`prune(model)` hooks every prunable layer of a Keras 3 model in place (Dense,
Conv*, Conv*Transpose: `kernel`; Embedding: `embeddings`): the layer's class
becomes a subclass whose kernel property returns `stored kernel * mask`
(`keras.ops`, any backend), so

- a removed weight contributes nothing and gets exactly zero gradient;
- removing a weight (`set_masks`, `remove`, a schedule event) also sets the
  stored weight and its optimizer slots to 0; with zero gradient and zero
  slots no optimizer moves it again: removed weights stay exactly 0;
- masks are monotone: a removed weight never comes back.

Each hooked layer also counts its training steps (a variable incremented in
the forward pass, like the tfmot wrappers' `pruning_step`) and, once a
penalty is attached (`attach_regularizers`), adds
0.5 * lambda_t * sum((w * s)^2) on its selected weights s, lambda_t computed
inside the step from that counter (`LambdaGrowth`'s formula), so growth needs
no per-batch Python. `strip(model)` gives a plain Keras 3 copy, removed
weights 0. Keys are `Mask.key(layer name, index)` as on the tf_keras path.
"""

import collections

import numpy as np

from tf_unilth.keras3._compat import (KERAS3_LAYERS, build_optimizer, is_keras3, keras,
                                      ops, optimizer_slots, refresh_call_signature,
                                      restore_call_signature, sync, unlocked)
from tf_unilth.keras3 import schedules as schedules_lib
from tf_unilth.sparsity import Mask

PrunedWeight = collections.namedtuple(
    "PrunedWeight", ["key", "layer_name", "weight", "mask", "wrapper", "index"])

# Growth parameters, one float vector per layer: [start, held, lambda_max, every, rate, gamma]
_START, _HELD, _LMAX, _EVERY, _RATE, _GAMMA = range(6)
_IDLE = [-1.0, 0.0, 0.0, 1.0, 0.0, 1.0]

_HOOKED = {}


def _attribute(cls):
    return "embeddings" if issubclass(cls, keras.layers.Embedding) else "kernel"


def hooked_class(cls):
    """The masked subclass of a Keras 3 layer class (made once per class)."""
    if cls in _HOOKED:
        return _HOOKED[cls]
    attribute = _attribute(cls)
    plain = getattr(cls, attribute)

    def masked(self):
        value = plain.fget(self)
        return value * ops.cast(self._tfu_mask, value.dtype)

    def call(self, *args, training=None, **kwargs):
        if training:
            self._tfu_step.assign(self._tfu_step + 1)
        if training and self._tfu_penalized:  # training only: val_loss is the data loss
            self.add_loss(penalty(self))
        if self._tfu_had_training:
            kwargs["training"] = training
        return cls.call(self, *args, **kwargs)

    hooked = type(cls.__name__, (cls,), {attribute: property(masked), "call": call,
                                         "_tfu_original": cls, "_tfu_attribute": attribute,
                                         "__module__": __name__})
    _HOOKED[cls] = hooked
    return hooked


def penalty(layer):
    """0.5 * lambda_t * ||w * s||^2 of one hooked layer (inside the step)."""
    g = layer._tfu_growth
    step = ops.cast(layer._tfu_step, "float32")
    t = ops.maximum(step - g[_START], 0.0)
    x = ops.minimum(1.0, g[_RATE] * ops.floor(t / g[_EVERY]))
    lam = ops.where(g[_START] >= 0.0, g[_LMAX] * ops.power(x, g[_GAMMA]), g[_HELD])
    w = getattr(layer, layer._tfu_attribute)
    selected = w * ops.cast(layer._tfu_plan, w.dtype)
    return ops.cast(lam, w.dtype) * 0.5 * ops.sum(ops.square(selected))


def _stored(layer):
    """The stored (unmasked) weight variable of a hooked or plain layer."""
    return getattr(layer, "_" + _attribute(type(layer)))


def prunable(layer):
    return type(layer).__name__ in KERAS3_LAYERS and isinstance(
        layer, tuple(getattr(keras.layers, n) for n in KERAS3_LAYERS)) and layer.built


def check_model(model):
    if not is_keras3(model) or not isinstance(model, keras.Model):
        raise TypeError(f"Expected a Keras 3 model (the `keras` package >= 3), got "
                        f"{type(model).__module__}.{type(model).__name__}.")
    return model


def prune(model, schedule_fn=None, *, exclude=()):
    """Hooks every prunable layer of the Keras 3 `model` in place and returns
    it. `schedule_fn(layer)` gives each layer its pruning schedule (default: a
    frozen `TriggeredSchedule`). Already hooked layers are kept as they are."""
    check_model(model)
    exclude = set(exclude)
    unknown = exclude - {layer.name for layer in model.layers}
    if unknown:
        raise ValueError(f"exclude names layers not in the model: {sorted(unknown)}.")
    schedule_fn = schedule_fn or (lambda layer: schedules_lib.TriggeredSchedule())
    count = 0
    for layer in model.layers:
        if hasattr(layer, "_tfu_mask"):
            count += 1
            continue
        if layer.name in exclude:
            continue
        if isinstance(layer, keras.Model):
            raise TypeError(f"Layer {layer.name!r} is a nested model; flatten it into the "
                            "outer functional model, or name it in exclude=[...].")
        if not prunable(layer):
            continue
        weight = _stored(layer)
        with unlocked(layer):
            layer._tfu_mask = layer.add_weight(shape=weight.shape, initializer="ones",
                                               trainable=False, name="tfu_mask")
            layer._tfu_plan = layer.add_weight(shape=weight.shape, initializer="zeros",
                                               trainable=False, name="tfu_plan")
            layer._tfu_step = layer.add_weight(shape=(), initializer="zeros", dtype="int32",
                                               trainable=False, name="tfu_step")
            layer._tfu_growth = layer.add_weight(
                shape=(6,), initializer=keras.initializers.Constant(_IDLE),
                trainable=False, name="tfu_growth")
        layer._tfu_penalized = False
        layer.pruning_schedule = schedule_fn(layer)
        layer.__class__ = hooked_class(type(layer))
        layer._tfu_had_training = refresh_call_signature(layer)
        count += 1
    if not count:
        raise ValueError(f"Model {model.name!r} has no prunable layer (Dense, Conv, "
                         "Embedding with weights); there is nothing to make sparse.")
    return model


def wrappers(model):
    """The hooked layers of `model`, in layer order."""
    return [layer for layer in model.layers if hasattr(layer, "_tfu_mask")]


def _state_variables(layer):
    return [layer._tfu_mask, layer._tfu_plan, layer._tfu_step, layer._tfu_growth]


def pruning_state_variables(model):
    """The variables that belong to the pruning (a rewind never restores them)."""
    return [v for layer in wrappers(model) for v in _state_variables(layer)]


def strip(model):
    """A plain Keras 3 copy of the hooked `model`: same architecture, removed
    weights exactly 0, nothing of tf_unilth in it (saves and loads anywhere
    Keras 3 does)."""
    sync(model)
    hooked = {layer.name: layer for layer in wrappers(model)}

    def clone(layer):
        cls = getattr(type(layer), "_tfu_original", type(layer))
        return cls.from_config(layer.get_config())

    plain = keras.models.clone_model(model, clone_function=clone)
    for source, target in zip(model.layers, plain.layers):
        skip = {id(v) for v in _state_variables(source)} if source.name in hooked else set()
        stored = _stored(source) if source.name in hooked else None
        target.set_weights([v.numpy() * source._tfu_mask.numpy() if v is stored else v.numpy()
                            for v in source.weights if id(v) not in skip])
    return plain


# ---------------------------------------------------------------------------
# Masks

def pruned_weights(model):
    records = [PrunedWeight(Mask.key(layer.name, 0), layer.name, _stored(layer),
                            layer._tfu_mask, layer, 0) for layer in wrappers(model)]
    if not records:
        raise ValueError("The model has no pruned layers; hook it first with "
                         "tf_unilth.keras3.prune(model).")
    return records


def get_masks(model):
    sync(model)
    return Mask({r.key: r.mask.numpy() > 0.5 for r in pruned_weights(model)})


def get_weights(model):
    sync(model)
    return {r.key: r.weight.numpy() * r.mask.numpy() for r in pruned_weights(model)}


def sparsity(model):
    return get_masks(model).sparsity


def apply_masks(model, optimizer=None):
    """weights (and their optimizer slots) <- themselves * mask."""
    sync(model)
    optimizer = optimizer or getattr(model, "optimizer", None)
    for r in pruned_weights(model):
        mask = r.mask.numpy()
        r.weight.assign(r.weight.numpy() * mask.astype(r.weight.dtype))
        for slot in optimizer_slots(optimizer, r.weight):
            slot.assign(slot.numpy() * mask.astype(slot.dtype))


def set_masks(model, masks, optimizer=None):
    """Sets masks (True = keep) monotonically; returns how many entries asked to
    be kept were already removed (they stay removed)."""
    sync(model)
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
        record.mask.assign((keep & current).astype("float32"))
    apply_masks(model, optimizer)
    return refused


def remove(model, removal, optimizer=None):
    """Removes the weights of `removal` (True = remove) now."""
    return set_masks(model, get_masks(model).remove(removal), optimizer)


def plain_mask(model, exclude=()):
    """Everything kept, keyed like the hooked model's mask."""
    return Mask({Mask.key(layer.name, 0): np.ones(_stored(layer).shape, bool)
                 for layer in model.layers
                 if layer.name not in set(exclude) and (prunable(layer)
                                                        or hasattr(layer, "_tfu_mask"))})


def zeros_mask(model):
    """The mask of a stripped ticket: weight != 0 over the prunable weights."""
    return Mask({Mask.key(layer.name, 0): _stored(layer).numpy() != 0
                 for layer in model.layers if prunable(layer)})


def _inbound(layer):
    found = []
    for node in getattr(layer, "_inbound_nodes", []):
        for tensor in node.input_tensors:
            history = getattr(tensor, "_keras_history", None)
            if history is not None:
                found.append(history[0])
    return found


def output_layers(model, named=None, exclude=()):
    """Names of the prunable layers producing the model's outputs (through
    layers without prunable weights); `named` overrides, and is checked."""
    def is_prunable(layer):
        return hasattr(layer, "_tfu_mask") or (layer.name not in set(exclude)
                                               and prunable(layer))

    if named:
        names = [named] if isinstance(named, str) else list(named)
        known = {l.name for l in model.layers if is_prunable(l)}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"output_layer names {unknown}, which are not prunable layers of "
                             f"the model; its prunable layers: {sorted(known)}.")
        return tuple(names)
    todo = [t._keras_history[0] for t in model.outputs]
    found, seen = [], set()
    while todo:
        layer = todo.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if is_prunable(layer):
            found.append(layer.name)
        else:
            todo.extend(_inbound(layer))
    return tuple(sorted(set(found)))


GRADIENT_BACKENDS = ("jax", "tensorflow")  # where `gradients` has an autodiff


def gradients(model, batch):
    """{key: dL/dw} of the compiled loss on one (x, y) batch, backend-neutral
    through `stateless_call` and the backend's own autodiff."""
    x, y = batch
    records = pruned_weights(model)
    weights = {r.key: r.weight.numpy() * r.mask.numpy() for r in records}
    # A finite difference would be slow; use the backend's autodiff.
    name = keras.backend.backend()
    loss_fn = model.loss if callable(model.loss) else keras.losses.get(model.loss)
    if name == "jax":
        import jax  # pylint: disable=import-outside-toplevel
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        index = {id(v): i for i, v in enumerate(model.trainable_variables)}

        def f(tv):
            out, _ = model.stateless_call(tv, non_trainable, x, training=False)
            return ops.mean(loss_fn(y, out))
        grads = jax.grad(f)(trainable)
        return {r.key: np.asarray(grads[index[id(r.weight)]]) for r in records}
    if name == "tensorflow":
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        with tf.GradientTape() as tape:
            loss = ops.mean(loss_fn(y, model(x, training=False)))
        grads = tape.gradient(loss, [r.weight.value for r in records])
        return {r.key: (np.zeros_like(weights[r.key]) if g is None else g.numpy())
                for r, g in zip(records, grads)}
    raise NotImplementedError(f"gradient criteria on the {name} backend are not supported "
                              "yet on the Keras 3 path (use jax or tensorflow).")


def choose(model, selector, rates, batch=None):
    return choose_among(model, selector, rates, get_masks(model), batch)


def choose_among(model, selector, rates, alive, batch=None):
    grads = None
    if selector.needs_gradients:
        if batch is None:
            raise ValueError(f"Criterion {selector.criterion.name!r} needs gradients: give a "
                             "batch (x, y) to score them on.")
        grads = gradients(model, batch)
    return selector.removal(get_weights(model), alive, rates, grads)


# ---------------------------------------------------------------------------
# Pruning events (what a schedule asks for), run in Python between steps

def fire_event(layer, sparsity, optimizer=None):
    """One pruning event of `layer` at `sparsity` (of its whole size): the
    planned weights go when a plan is set (the plan wins; the agreement with
    magnitude is the selection fidelity), otherwise the lowest magnitudes."""
    weight = _stored(layer)
    mask = layer._tfu_mask.numpy() > 0.5
    plan = (layer._tfu_plan.numpy() > 0.5) & mask
    w = np.abs(weight.numpy()) * mask
    keep = int(round((1.0 - sparsity) * w.size))
    order = np.argsort(-w, axis=None, kind="stable")
    by_magnitude = np.zeros(w.size, bool)
    by_magnitude[order[:keep]] = True
    by_magnitude = by_magnitude.reshape(w.shape) & mask
    planned = int(plan.sum())
    layer._tfu_fidelity = (int((plan & ~by_magnitude).sum()), planned)
    new = (mask & ~plan) if planned else by_magnitude
    layer._tfu_mask.assign(new.astype("float32"))
    weight.assign(weight.numpy() * new.astype(weight.dtype))
    for slot in optimizer_slots(optimizer, weight):
        slot.assign(slot.numpy() * new.astype(slot.dtype))


def selection_fidelity(model):
    """Share of the planned weights magnitude also chose at the last event."""
    pairs = [getattr(layer, "_tfu_fidelity", (0, 0)) for layer in wrappers(model)]
    selected = sum(p[1] for p in pairs)
    return sum(p[0] for p in pairs) / selected if selected else 1.0


def due_events(model, step):
    """Fires every armed schedule's event due at training step `step + 1`
    (tfmot fires in the forward pass of that step; here just before it, at a
    step boundary Python sees). Returns whether anything fired."""
    fired = False
    for layer in wrappers(model):
        sparsity = layer.pruning_schedule.due(step + 1)
        if sparsity is not None:
            if not fired:
                sync(model)
                build_optimizer(model)
            fire_event(layer, sparsity, getattr(model, "optimizer", None))
            fired = True
    return fired


def next_event(model):
    """The earliest pending event step of any layer (None if none)."""
    steps = [s for layer in wrappers(model) for s in layer.pruning_schedule.pending()]
    return min(steps) if steps else None


# ---------------------------------------------------------------------------
# The growing penalty

def attach_regularizers(model):
    """Gives every hooked layer the growing penalty on its removal plan (call
    before compiling: the penalty is part of the traced step)."""
    layers = wrappers(model)
    if not layers:
        raise ValueError("The model has no pruned layers; hook it first with prune(model).")
    for layer in layers:
        layer._tfu_penalized = True
    return {Mask.key(layer.name, 0): layer for layer in layers}


def set_selection(model, selection):
    """The weights each layer's penalty (and next event) targets; keys missing
    from `selection` target nothing."""
    sync(model)
    for layer in wrappers(model):
        chosen = selection.get(Mask.key(layer.name, 0))
        value = np.zeros(layer._tfu_plan.shape, "float32") if chosen is None \
            else np.asarray(chosen, "float32")
        layer._tfu_plan.assign(value)


def start_growth(model, curve, step):
    """lambda = curve(t), t = 0 at the step after `step` steps done."""
    sync(model)
    every, rate, gamma = curve.step_form()
    for layer in wrappers(model):
        g = layer._tfu_growth.numpy()
        g[[_START, _LMAX, _EVERY, _RATE, _GAMMA]] = [int(step) + 1, curve.lambda_max,
                                                    float(every), float(rate), float(gamma)]
        layer._tfu_growth.assign(g)


def hold_lambda(model, value):
    sync(model)
    for layer in wrappers(model):
        g = layer._tfu_growth.numpy()
        g[_START], g[_HELD] = -1.0, float(value)
        layer._tfu_growth.assign(g)


def current_lambda(model):
    """Lambda at the current step (Python float)."""
    layers = wrappers(model)
    if not layers:
        return 0.0
    sync(model)
    g = layers[0]._tfu_growth.numpy()
    if g[_START] < 0:
        return float(g[_HELD])
    t = max(float(layers[0]._tfu_step.numpy()) - g[_START], 0.0)
    x = min(1.0, g[_RATE] * np.floor(t / g[_EVERY]))
    return float(g[_LMAX] * x ** g[_GAMMA])


def current_step(model):
    layers = wrappers(model)
    if not layers:
        return 0
    sync(model)
    return int(layers[0]._tfu_step.numpy())
