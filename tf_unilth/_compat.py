"""Keras 2 set-up, and every private TensorFlow / tf_keras / tfmot API we use.

TensorFlow >= 2.16 resolves `tf.keras` to Keras 3 unless TF_USE_LEGACY_KERAS is
set *before* `tf.keras` is first touched. tfmot 0.8.1 itself falls back to
`tf_keras` when `tf.keras` is Keras 3, so the one thing that matters is that
every object we create or accept comes from `tf_keras`. We therefore import
`tf_keras` directly (never `tf.keras`) and set the variable for users who have
not touched `tf.keras` yet, so their `tf.keras` agrees with ours too.

Everything below the set-up reaches into internals that carry no stability
promise (tfmot's pruning implementation, tf_keras optimizer slots and the
multi-step execution variable, tf.data's batch size, tf.distribute's collective
keys). They are pinned by setup's version ranges and live only here, so an
upgrade changes this one file.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
from tensorflow_model_optimization.python.core.sparsity.keras import (  # noqa: E402
    prune_registry, pruning_impl, pruning_wrapper)

KERAS2_RULE = (
    "tf_unilth works with Keras 2 only (tfmot does not support Keras 3): build "
    "models with `import tf_keras as keras` (or `tf_unilth.keras`), not "
    "`import keras` / Keras-3 `tf.keras`."
)


def is_keras3_object(obj):
    """True when `obj` is a Keras 3 layer/model (the `keras` package >= 3)."""
    module = type(obj).__module__ or ""
    if module.startswith("tf_keras"):
        return False
    for cls in type(obj).__mro__:
        if (cls.__module__ or "").startswith("keras.") or cls.__module__ == "keras":
            return True
    return False


def check_model(model, what="model"):
    """Raises a clear TypeError unless `model` is a tf_keras Model."""
    if isinstance(model, keras.Model):
        return model
    if is_keras3_object(model):
        raise TypeError(
            f"The {what} is a Keras 3 object ({type(model).__module__}."
            f"{type(model).__name__}). {KERAS2_RULE}"
        )
    raise TypeError(
        f"The {what} must be a tf_keras.Model, got {type(model).__name__}. "
        f"{KERAS2_RULE}"
    )


# ---------------------------------------------------------------------------
# tfmot's pruning implementation (`python.core.sparsity.keras`, not its API)

TfmotPruneLowMagnitude = pruning_wrapper.PruneLowMagnitude
TfmotPruning = pruning_impl.Pruning
collect_prunable_layers = pruning_wrapper.collect_prunable_layers


def prune_callback_error_message(wrapper):
    """tfmot's message for a pruning wrapper trained without UpdatePruningStep."""
    return wrapper._PRUNE_CALLBACK_ERROR_MSG  # pylint: disable=protected-access


def sparsity_m_by_n(wrapper):
    """The wrapper's (m, n) structured sparsity, or None (tfmot keeps it private)."""
    return wrapper._sparsity_m_by_n  # pylint: disable=protected-access


def prunable_weight_count(layer):
    """Number of weight tensors tfmot would prune in `layer` (None: cannot)."""
    if hasattr(layer, "get_prunable_weights"):
        return len(layer.get_prunable_weights())
    if prune_registry.PruneRegistry.supports(layer):
        return len(prune_registry.PruneRegistry._weight_names(layer))  # pylint: disable=protected-access
    return None


def prunable_weights(layer):
    """The weights tfmot would prune in an unwrapped `layer` ([] if none)."""
    if hasattr(layer, "get_prunable_weights"):
        return list(layer.get_prunable_weights())
    if prune_registry.PruneRegistry.supports(layer):
        return [getattr(layer, n) for n in
                prune_registry.PruneRegistry._weight_names(layer)]  # pylint: disable=protected-access
    return []


def pruning_parts(pruning):
    """(pruning_vars, schedule, step_fn) of a tfmot `Pruning` object."""
    return (pruning._pruning_vars, pruning._pruning_schedule,  # pylint: disable=protected-access
            pruning._step_fn)  # pylint: disable=protected-access


def magnitude_mask(pruning, weights):
    """tfmot's (threshold, mask) for `weights` at the schedule's sparsity
    (block pooling and m-by-n included)."""
    return pruning._maybe_update_block_mask(weights)  # pylint: disable=protected-access


def smart_cond(pred, true_fn, false_fn):
    return tf.__internal__.smart_cond.smart_cond(pred, true_fn, false_fn)


def inbound_layers(layer):
    """The layers whose outputs `layer` takes as inputs (in a built functional
    or Sequential model)."""
    found = []
    for node in getattr(layer, "inbound_nodes", None) or []:
        for inbound in tf.nest.flatten(node.inbound_layers):
            if inbound not in found:
                found.append(inbound)
    return found


def rename_layer(layer, name):
    """Sets a layer's (or model's) name; tf_keras has no public setter."""
    layer._name = name  # pylint: disable=protected-access


# ---------------------------------------------------------------------------
# tf_keras optimizers

def build_optimizer(optimizer, variables):
    """Creates the optimizer's slots for `variables` (call in the strategy scope)."""
    if isinstance(optimizer, keras.optimizers.legacy.Optimizer):
        optimizer._create_all_weights(variables)  # pylint: disable=protected-access
    else:
        optimizer.build(variables)


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


def set_variable_constraint(variable, constraint):
    """Replaces the constraint tf_keras optimizers apply after every update
    (variables take theirs only at creation)."""
    for v in getattr(variable, "values", None) or [variable]:
        v._constraint = constraint  # pylint: disable=protected-access


# ---------------------------------------------------------------------------
# tf_keras training loop

def implements_train_batch_hooks(callback):
    """Whether Keras calls `callback` at every training batch (or chunk)."""
    return bool(callback._implements_train_batch_hooks())  # pylint: disable=protected-access


def steps_per_execution_variable(model):
    """The variable holding how many steps one call of the train function
    runs (Keras reads it before every call, so changing it splits a chunk)."""
    return getattr(model, "_steps_per_execution", None)


# ---------------------------------------------------------------------------
# tf.data

def static_batch_size(dataset):
    """The batch size of `dataset` from its graph (batch(B) without
    drop_remainder keeps B there, not in the element spec); None if unknown."""
    while dataset is not None:
        size = getattr(dataset, "_batch_size", None)
        if size is not None:
            return int(size)
        dataset = getattr(dataset, "_input_dataset", None)
    return None


# ---------------------------------------------------------------------------
# tf.distribute

def in_multi_worker_mode(strategy):
    return bool(getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)())


def tf_initialized():
    """True once TensorFlow's eager context exists (devices can't change then)."""
    from tensorflow.python.eager import context  # pylint: disable=import-outside-toplevel
    return context.context()._initialized  # pylint: disable=protected-access


def mirrored_strategy_with_key_offset(devices, offset):
    """A MirroredStrategy whose collective keys start `offset` above the default.

    Every MirroredStrategy numbers its all-reduces from the same keys, and the
    collective executor is per process: a second strategy over the same
    devices (tests, notebooks) would reuse the first one's keys for tensors of
    other shapes and fail. TensorFlow's own tests offset the base the same way.
    """
    cls = tf.distribute.MirroredStrategy
    base = getattr(cls, "_collective_key_base", None)
    if base is None:  # another TensorFlow: nothing to offset
        return cls(devices)
    cls._collective_key_base = base + offset  # pylint: disable=protected-access
    try:
        return cls(devices)
    finally:
        cls._collective_key_base = base  # pylint: disable=protected-access
