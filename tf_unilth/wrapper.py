"""A tfmot pruning wrapper whose masks are monotone and whose removed weights stay 0.

tfmot's `PruneLowMagnitude` masks by assignment at every forward pass: the
optimizer still updates removed weights between passes (so Adam/momentum state
keeps moving them), the magnitude ranking then sees those stray values, and a
mask can grow back. Under MirroredStrategy the per-step assignment is also an
all-reduce of every masked weight. `MonotonePruneLowMagnitude` keeps tfmot's
wrapper, schedule protocol and magnitude criterion, and changes three things:

1. the layer computes with `weight * mask`, so removed weights get exactly zero
   gradient (nothing leaks through gradient clipping, weight decay or slots);
2. on a mask update the new mask is the magnitude mask of the *surviving*
   weights AND the old mask, and the weights and the optimizer slots of newly
   removed entries are set to 0 in the same step (so Adam/momentum cannot drift
   them); masks therefore only shrink and removed weights stay exactly 0;
3. no per-step weight assignment (nor its all-reduce) is needed any more.
"""

import contextlib
import inspect

from tensorflow_model_optimization.python.core.sparsity.keras import (
    prune_registry, pruning_impl, pruning_wrapper)

from tf_unilth._compat import check_model, keras, tf, tfmot
from tf_unilth import schedules as schedules_lib

_TfmotWrapper = pruning_wrapper.PruneLowMagnitude


def _strategy_update(distribution, var, fn, *args):
    if distribution is None:
        return fn(var, *args)
    return distribution.extended.update(var, fn, args=args, group=False)


class MonotonePruning(pruning_impl.Pruning):
    """tfmot's magnitude pruning, restricted to surviving weights and monotone."""

    def __init__(self, *args, selected_count, agreed_count, **kwargs):
        super().__init__(*args, **kwargs)
        self._slots = [[] for _ in self._pruning_vars]
        self._selections = [None for _ in self._pruning_vars]
        # Selection fidelity of the last event: how many selected weights the
        # magnitude criterion also chose (variables owned by the wrapper).
        self.selected_count = selected_count
        self.agreed_count = agreed_count

    def set_optimizer_slots(self, slots_per_weight):
        """Optimizer variables shaped like each weight, zeroed where removed."""
        self._slots = [list(s) for s in slots_per_weight]

    def set_selections(self, selections):
        """0/1 variables marking the weights the next event must remove.

        With a selection, an event still computes tfmot's magnitude mask, counts
        how many selected weights it agrees on, and then removes exactly the
        selected surviving weights ("the selection wins"). An all-zero
        selection leaves the magnitude mask in charge.
        """
        self._selections = list(selections)

    def _new_mask(self, weight, mask, selection):
        threshold, magnitude_mask = self._maybe_update_block_mask(weight * mask)
        magnitude_mask = magnitude_mask * mask
        if selection is None:
            return threshold, magnitude_mask, 0.0, 0.0
        chosen = mask * tf.cast(selection, mask.dtype)
        n_selected = tf.reduce_sum(chosen)
        agreed = tf.reduce_sum(chosen * (1.0 - magnitude_mask))
        new_mask = tf.where(n_selected > 0, mask * (1.0 - chosen), magnitude_mask)
        return threshold, new_mask, n_selected, agreed

    def conditional_mask_update(self):
        def apply(distribution):
            ops, selected, agreed = [], 0.0, 0.0
            assign = lambda v, value: v.assign(value)  # noqa: E731
            for (weight, mask, threshold), slots, selection in zip(
                    self._pruning_vars, self._slots, self._selections):
                new_threshold, new_mask, n_sel, n_agree = self._new_mask(
                    weight, mask, selection)
                selected, agreed = selected + n_sel, agreed + n_agree
                scale = lambda v, m: v.assign(v * tf.cast(m, v.dtype))  # noqa: E731
                ops.append(_strategy_update(distribution, mask, assign, new_mask))
                ops.append(_strategy_update(distribution, threshold, assign, new_threshold))
                ops.append(_strategy_update(distribution, weight, scale, new_mask))
                for slot in slots:
                    ops.append(_strategy_update(distribution, slot, scale, new_mask))
            ops.append(_strategy_update(distribution, self.selected_count, assign,
                                        tf.cast(selected, tf.float32)))
            ops.append(_strategy_update(distribution, self.agreed_count, assign,
                                        tf.cast(agreed, tf.float32)))
            return tf.group(ops)

        def maybe_apply(distribution=None):
            should_prune = self._pruning_schedule(self._step_fn())[0]
            return tf.cond(should_prune, lambda: apply(distribution), tf.no_op)

        if tf.distribute.has_strategy() and tf.distribute.in_cross_replica_context():
            return maybe_apply(tf.distribute.get_strategy())
        if tf.distribute.has_strategy():
            return tf.distribute.get_replica_context().merge_call(maybe_apply)
        return maybe_apply()

    def weight_mask_op(self):
        """weights <- weights * mask, outside the training step (no reduction)."""
        if tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context():
            return tf.distribute.get_replica_context().merge_call(
                lambda d: self._mask_weights(d))
        return self._mask_weights(
            tf.distribute.get_strategy() if tf.distribute.has_strategy() else None)

    def _mask_weights(self, distribution):
        scale = lambda v, m: v.assign(v * tf.cast(m, v.dtype))  # noqa: E731
        return tf.group([_strategy_update(distribution, w, scale, m)
                         for w, m, _ in self._pruning_vars])


def _weight_attributes(layer, weights):
    """(owner, attribute) pairs through which `layer.call` reads each weight."""
    owners = [layer]
    for name in ("cell", "forward_layer", "backward_layer"):
        sub = getattr(layer, name, None)
        if isinstance(sub, keras.layers.Layer):
            owners.append(sub)
    found = []
    for weight in weights:
        hit = None
        for owner in owners:
            for attr, value in vars(owner).items():
                if value is weight:
                    hit = (owner, attr)
                    break
            if hit:
                break
        found.append(hit)
    return found


@contextlib.contextmanager
def _masked_attributes(pairs, tensors):
    # object.__setattr__ bypasses Keras attribute tracking: the swap is only for
    # the duration of one call and must not (un)track any variable.
    originals = []
    try:
        for pair, tensor in zip(pairs, tensors):
            if pair is None:
                continue
            owner, attr = pair
            originals.append((owner, attr, getattr(owner, attr)))
            object.__setattr__(owner, attr, tensor)
        yield
    finally:
        for owner, attr, value in reversed(originals):
            object.__setattr__(owner, attr, value)


@keras.utils.register_keras_serializable(package="tf_unilth")
class MonotonePruneLowMagnitude(_TfmotWrapper):
    """`tfmot.sparsity.keras.PruneLowMagnitude` with monotone masks (see module doc)."""

    def build(self, input_shape):
        super().build(input_shape)
        counts = [self.add_weight(name, shape=[], initializer="zeros", trainable=False,
                                  aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
                  for name in ("selected_count", "agreed_count")]
        self.pruning_obj = MonotonePruning(
            selected_count=counts[0], agreed_count=counts[1],
            training_step_fn=lambda: self.pruning_step,
            pruning_vars=self.pruning_vars,
            pruning_schedule=self.pruning_schedule,
            block_size=self.block_size,
            block_pooling_type=self.block_pooling_type,
            sparsity_m_by_n=self.sparsity_m_by_n)
        self._weight_attrs = _weight_attributes(self.layer, self.prunable_weights)
        # Weights we cannot reach by attribute keep tfmot's masking by assignment.
        self._assign_masked = [
            (w, m) for (w, m, _), pair in zip(self.pruning_vars, self._weight_attrs)
            if pair is None]

    def call(self, inputs, training=None, **kwargs):
        if training is None:
            training = keras.backend.learning_phase()

        def train_updates():
            with tf.control_dependencies([self.pruning_step.assign_add(1)]):
                with tf.control_dependencies([tf.debugging.assert_greater_equal(
                        self.pruning_step, tf.constant(1, tf.int64),
                        message=self._PRUNE_CALLBACK_ERROR_MSG)]):
                    return tf.group(self.pruning_obj.conditional_mask_update())

        self.add_update(tf.__internal__.smart_cond.smart_cond(
            training, train_updates, tf.no_op))
        for weight, mask in self._assign_masked:
            self.add_update(weight.assign(weight * mask))
        masked = [w * tf.cast(m, w.dtype) for w, m, _ in self.pruning_vars]
        with _masked_attributes(self._weight_attrs, masked):
            if "training" in self._call_arg_names():
                return self.layer.call(inputs, training=training, **kwargs)
            return self.layer.call(inputs, **kwargs)

    def _call_arg_names(self):
        return inspect.getfullargspec(self.layer.call).args

    @classmethod
    def from_config(cls, config):
        # tfmot looks schedules up in its own module only; ours are registered
        # Keras serializables, so resolve them here, whatever form they come in
        # (tfmot 0.8.1's `.keras` path may hand over a bare class name string).
        config = dict(config)
        schedule = config.pop("pruning_schedule")
        config["pruning_schedule"] = deserialize_schedule(schedule)
        from tf_unilth import regularizers  # pylint: disable=import-outside-toplevel
        # Legacy (.h5) deserialization looks regularizers up by bare class name.
        with keras.utils.custom_object_scope(
                {"GrowingRegularizer": regularizers.GrowingRegularizer}):
            config["layer"] = keras.layers.deserialize(config.pop("layer"))
        return cls(**config)


def deserialize_schedule(schedule):
    """A PruningSchedule from its config, our classes or tfmot's."""
    if isinstance(schedule, tfmot.sparsity.keras.PruningSchedule):
        return schedule
    known = {
        "TriggeredSchedule": schedules_lib.TriggeredSchedule,
        "OneShotSchedule": schedules_lib.OneShotSchedule,
        "ConstantSparsity": tfmot.sparsity.keras.ConstantSparsity,
        "PolynomialDecay": tfmot.sparsity.keras.PolynomialDecay,
    }
    if isinstance(schedule, str):
        raise ValueError(
            f"Pruning schedule was saved as the bare string {schedule!r}, without "
            "its config; it cannot be restored. Save with tf_unilth >= 0.1.")
    name = schedule["class_name"].split(">")[-1]
    if name not in known:
        raise ValueError(f"Unknown pruning schedule {schedule['class_name']!r}; "
                         f"known: {sorted(known)}.")
    return known[name].from_config(schedule["config"])


# --------------------------------------------------------------------------
# Wrapping a whole model

def prunable_weight_count(layer):
    """Number of prunable weight tensors tfmot would prune in `layer`."""
    if hasattr(layer, "get_prunable_weights"):
        return len(layer.get_prunable_weights())
    if prune_registry.PruneRegistry.supports(layer):
        return len(prune_registry.PruneRegistry._weight_names(layer))  # pylint: disable=protected-access
    return None


def prune(model, schedule_fn=None, *, exclude=(), block_size=(1, 1),
          block_pooling_type="AVG"):
    """Wraps every prunable layer of a Sequential/functional tf_keras model.

    `schedule_fn(layer) -> PruningSchedule` gives each layer its own schedule
    (each schedule holds its own run-time state); by default a frozen
    `TriggeredSchedule` (no pruning until a controller starts it). Layers named
    in `exclude` stay dense. Like tfmot, the returned model shares the layer
    objects (and so the weights) of `model`. Call inside `strategy.scope()`
    when training under a distribution strategy.
    """
    check_model(model)
    if not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)):
        raise TypeError(
            f"Model {model.name!r} is a subclassed tf_keras model; tfmot can only "
            "wrap the layers of Sequential or functional models. Rebuild it with "
            "the functional API (keras.Model(inputs, outputs)), or wrap the layers "
            "inside your model with tf_unilth.MonotonePruneLowMagnitude yourself.")
    exclude = set(exclude)
    unknown = exclude - {layer.name for layer in model.layers}
    if unknown:
        raise ValueError(f"exclude names layers not in the model: {sorted(unknown)}.")
    schedule_fn = schedule_fn or (lambda layer: schedules_lib.TriggeredSchedule())
    wrapped = []

    def wrap(layer):
        if isinstance(layer, _TfmotWrapper) or layer.name in exclude:
            return layer
        if isinstance(layer, keras.Model):
            raise TypeError(
                f"Layer {layer.name!r} is a nested model; flatten it into the outer "
                "functional model, or name it in exclude=[...] to keep it dense.")
        count = prunable_weight_count(layer)
        if count is None:
            if not layer.weights:
                return layer
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) has weights but tfmot "
                "cannot prune it (not in tfmot's PruneRegistry, no "
                "get_prunable_weights method). Keep it dense with "
                f"exclude=[{layer.name!r}] (flag --exclude={layer.name}), or make it "
                "a tfmot PrunableLayer.")
        if count == 0:
            return layer
        wrapped.append(layer.name)
        return MonotonePruneLowMagnitude(
            layer, pruning_schedule=schedule_fn(layer), block_size=block_size,
            block_pooling_type=block_pooling_type)

    pruned = keras.models.clone_model(model, input_tensors=None, clone_function=wrap)
    if not wrapped:
        raise ValueError(
            f"Model {model.name!r} has no prunable layer (Dense, Conv, Embedding, "
            "... with weights); there is nothing to make sparse.")
    return pruned


def wrappers(model):
    """The pruning wrappers of `model`, in layer order."""
    return pruning_wrapper.collect_prunable_layers(model)


def selection_fidelity(model):
    """Share of the selected weights that tfmot's magnitude criterion also chose
    at the last pruning event (1.0 = the regularizer fully extruded them)."""
    layers = wrappers(model)
    selected = sum(float(l.pruning_obj.selected_count.numpy()) for l in layers)
    agreed = sum(float(l.pruning_obj.agreed_count.numpy()) for l in layers)
    return agreed / selected if selected else 1.0


def strip(model):
    """A plain tf_keras model with the masks applied and the wrappers removed.

    The stripped model shares the wrapped layers (and so their variables); it
    is built in `model`'s distribution strategy scope, so it compiles and runs
    under the same strategy."""
    for layer in wrappers(model):
        layer.pruning_obj.weight_mask_op()
    with model.distribute_strategy.scope():
        return tfmot.sparsity.keras.strip_pruning(model)


CUSTOM_OBJECTS = {
    "MonotonePruneLowMagnitude": MonotonePruneLowMagnitude,
    "PruneLowMagnitude": _TfmotWrapper,
    "TriggeredSchedule": schedules_lib.TriggeredSchedule,
    "OneShotSchedule": schedules_lib.OneShotSchedule,
}
