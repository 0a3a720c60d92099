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


PrunableLayer = tfmot.sparsity.keras.PrunableLayer


def registry_supports(layer):
    """Whether tfmot's PruneRegistry knows `layer`'s class (built or not)."""
    return prune_registry.PruneRegistry.supports(layer)


def registry_prunable_weights(layer):
    """The weights tfmot's PruneRegistry prunes in `layer` (the kernel and
    recurrent kernel of every RNN cell, MultiHeadAttention's four projection
    kernels, ...), or None when the registry does not support the layer.

    Read through the registry's own `make_prunable`, which sets
    `layer.get_prunable_weights` exactly as tfmot's wrapper does on wrapping
    (its weight-name table alone cannot be read for RNNs and attention)."""
    registry = prune_registry.PruneRegistry
    if not registry.supports(layer):
        return None
    getter = getattr(layer, "get_prunable_weights", None)
    if getter is None:
        getter = registry.make_prunable(layer).get_prunable_weights
    try:
        return list(getter())
    except AttributeError as error:  # MultiHeadAttention creates its projections in build
        raise ValueError(f"Layer {layer.name!r} ({type(layer).__name__}) is not built, so its "
                         "prunable weights do not exist yet: build the model (call it once, or "
                         "give it an Input) before pruning it.") from error


def prunable_weights(layer):
    """The weights tfmot would prune in an unwrapped `layer` ([] if none)."""
    if hasattr(layer, "get_prunable_weights"):
        return list(layer.get_prunable_weights())
    return registry_prunable_weights(layer) or []


def prunable_weight_count(layer):
    """Number of weight tensors tfmot would prune in `layer` (None: cannot)."""
    if hasattr(layer, "get_prunable_weights"):
        return len(layer.get_prunable_weights())
    found = registry_prunable_weights(layer)
    return None if found is None else len(found)


def sublayers(layer, recursive=False):
    """The layers `layer` holds as attributes (a model's layers, a wrapper's
    layer, an RNN's cell, Bidirectional's two directions, ...), in tracking
    order; tf_keras has no public accessor for a plain layer's."""
    return list(layer._flatten_layers(include_self=False, recursive=recursive))  # pylint: disable=protected-access


def built_input(model):
    """(shape with batch axis, dtype) a subclassed model was built or first
    called with (None, None if unknown); tf_keras keeps them privately."""
    spec = getattr(model, "_saved_model_inputs_spec", None)
    return (getattr(model, "_build_input_shape", None),
            getattr(spec, "dtype", None) if isinstance(spec, tf.TensorSpec) else None)


def is_subclassed_model(model):
    """A keras.Model that is neither Sequential nor functional."""
    return isinstance(model, keras.Model) and not (
        isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False))


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


def _skips_first_node(layer):
    from tf_keras.src.engine import functional  # pylint: disable=import-outside-toplevel
    return int(functional._should_skip_first_node(layer))  # pylint: disable=protected-access


def _shift_nodes(config, deltas):
    """`config` with every reference [layer name, node index, tensor index, ...]
    to a layer of `deltas` moved by its delta."""
    if isinstance(config, dict):
        return {k: _shift_nodes(v, deltas) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        if (len(config) >= 3 and isinstance(config[0], str) and config[0] in deltas
                and isinstance(config[1], int) and isinstance(config[2], int)):
            return [config[0], config[1] + deltas[config[0]]] + [
                _shift_nodes(v, deltas) for v in config[2:]]
        return [_shift_nodes(v, deltas) for v in config]
    return config


def clone_model(model, layer_fn):
    """`keras.models.clone_model(model, clone_function=layer_fn)`, also when
    `layer_fn` puts a layer that is not a functional model in place of a
    nested functional model (a pruning wrapper around it), or back.

    tf_keras numbers a nested functional model's calls from 1 (its first node
    is its own input) and any other layer's from 0; its reconstruction then
    waits forever for a node that never comes. The references to such a
    layer are renumbered before the graph is rebuilt (the rest is
    tf_keras' own clone)."""
    if isinstance(model, keras.Sequential) or not getattr(model, "_is_graph_network", False) \
            or not any(_skips_first_node(l) or isinstance(l, TfmotPruneLowMagnitude)
                       for l in model.layers):
        return keras.models.clone_model(model, input_tensors=None, clone_function=layer_fn)
    from tf_keras.src.engine import functional  # pylint: disable=import-outside-toplevel
    from tf_keras.src.models import cloning  # pylint: disable=import-outside-toplevel
    config, created = cloning._clone_layers_and_model_config(  # pylint: disable=protected-access
        model, {}, layer_fn)
    originals = {layer.name: layer for layer in model.layers}
    deltas = {name: _skips_first_node(layer) - _skips_first_node(originals[name])
              for name, layer in created.items() if name in originals}
    deltas = {name: d for name, d in deltas.items() if d}
    if deltas:
        config = _shift_nodes(config, deltas)
    inputs, outputs, _ = functional.reconstruct_from_config(config, created_layers=created)
    return keras.Model(inputs, outputs, name=model.name)


def true_dtype_variables():
    """A context in which mixed precision's AutoCastVariables read as their
    own dtype (float32), not the layer's compute dtype: the mask updates
    compute with the stored weights."""
    from tf_keras.src.mixed_precision import autocast_variable  # pylint: disable=import-outside-toplevel
    return autocast_variable.enable_auto_cast_variables(None)


def module_ignoring(*names):
    """tf.Module's set of attributes it does not track, plus `names`: for a
    class attribute _TF_MODULE_IGNORED_PROPERTIES (tf.Module's own hook)."""
    return frozenset(tf.Module._TF_MODULE_IGNORED_PROPERTIES | set(names))  # pylint: disable=protected-access


def unwrapped_layer(wrapper):
    """A pruning wrapper's layer, as tfmot's strip_pruning returns it (with the
    wrapper's input shape, so a Sequential model stays built)."""
    layer = wrapper.layer
    if not hasattr(layer, "_batch_input_shape") and hasattr(wrapper, "_batch_input_shape"):
        layer._batch_input_shape = wrapper._batch_input_shape  # pylint: disable=protected-access
    return layer


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


def tfds_reads_prepared_files(tfds):
    """False while `tfds.testing.mock_data` stands in for TFDS' readers (it
    patches `DatasetBuilder.as_dataset`): what is read then is made up, and
    must not be remembered as the prepared dataset."""
    return tfds.core.DatasetBuilder.as_dataset.__module__.startswith("tensorflow_datasets.core")

