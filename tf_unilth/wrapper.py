"""A tfmot pruning wrapper whose masks are monotone and whose removed weights stay 0.

tfmot's `PruneLowMagnitude` masks by assignment at every forward pass: the
optimizer still updates removed weights between passes (so Adam/momentum state
keeps moving them), the magnitude ranking then sees those stray values, and a
mask can grow back. Under MirroredStrategy the per-step assignment is also an
all-reduce of every masked weight. `MonotonePruneLowMagnitude` keeps tfmot's
wrapper, schedule protocol, magnitude criterion and weights (the same five
variables a Dense layer, so weights move between tfmot's models and ours), and
changes three things:

1. removed weights get exactly zero gradient (nothing leaks through gradient
   clipping, weight decay or optimizer slots): the layer computes with the
   stored weights, which are exactly 0 where removed (every path that writes
   weights -- an event, `masks.set_masks`, a rewind, a restore -- applies the
   mask), and the gradient is multiplied by the mask on its way back. That is
   one elementwise pass a step instead of two (`weight * mask` forward and
   back), a tenth of a small network's step time;
2. on a mask update the new mask is the magnitude mask of the *surviving*
   weights AND the old mask, and the weights and the optimizer slots of newly
   removed entries are set to 0 in the same step; a variable constraint
   (applied by every tf_keras optimizer after its update) keeps them at 0
   even when no optimizer slots were handed over (tfmot's own
   `UpdatePruningStep`). Masks therefore only shrink and removed weights stay
   exactly 0 at every step;
3. no per-step weight assignment before the forward pass (nor its all-reduce).

The wrapper owns all of a layer's pruning state: mask, threshold and step
(tfmot's), and the *removal plan*: per prunable weight, the entries the next
pruning event must remove (set by a controller; all zero = tfmot's magnitude
criterion decides). A growing penalty (`regularizers.attach`) reads the plan
and is attached to the wrapper, so `strip` leaves a plain tf_keras model.
"""

import inspect

from tf_unilth._compat import (TfmotPruneLowMagnitude, TfmotPruning, build_optimizer,
                               check_model, clone_model, collect_prunable_layers, keras,
                               is_subclassed_model, magnitude_mask, optimizer_slots,
                               prune_callback_error_message, pruning_parts, rename_layer,
                               set_variable_constraint, smart_cond, sparsity_m_by_n, sublayers,
                               tf, true_dtype_variables, tfmot, unwrapped_layer)
from tf_unilth import models as models_lib
from tf_unilth import prunable
from tf_unilth import schedules as schedules_lib
from tf_unilth.sparsity.mask import Mask


def _strategy_update(distribution, var, fn, *args):
    if distribution is None:
        return fn(var, *args)
    return distribution.extended.update(var, fn, args=args, group=False)


class RemovalPlan(tf.Module):
    """Per prunable weight of one wrapper: the entries the next pruning event
    removes (1 = remove), how far tfmot's magnitude criterion agreed at the
    last event, and the steps of the last `EVENTS_KEPT` events (written in the
    training step: proof that events land where the schedule planned them,
    whatever the steps per execution). Kept in a tf.Module, not as layer
    weights: checkpoints carry it, `get_weights`/`set_weights` stay tfmot's."""

    EVENTS_KEPT = 16

    def __init__(self, weights, name="removal_plan"):
        super().__init__(name=name)
        first = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.event_steps = tf.Variable(tf.fill([self.EVENTS_KEPT], tf.constant(-1, tf.int64)),
                                       trainable=False, name="event_steps", aggregation=first)
        self.event_count = tf.Variable(tf.constant(0, tf.int64), trainable=False,
                                       name="event_count", aggregation=first)
        self.plans = [tf.Variable(tf.zeros(w.shape, w.dtype), trainable=False,
                                  name=f"plan_{i}") for i, w in enumerate(weights)]
        self.selected_count = tf.Variable(
            0.0, trainable=False, name="selected_count",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.agreed_count = tf.Variable(
            0.0, trainable=False, name="agreed_count",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


class MonotonePruning(TfmotPruning):
    """tfmot's magnitude pruning, restricted to surviving weights and monotone.

    With a non-empty removal plan, an event still computes tfmot's magnitude
    mask, counts how many planned weights it agrees on, and then removes
    exactly the planned surviving weights ("the plan wins"). An all-zero plan
    leaves the magnitude mask in charge.
    """

    def __init__(self, *args, removal_plan, **kwargs):
        super().__init__(*args, **kwargs)
        self._m_by_n = sparsity_m_by_n(self)
        self.removal_plan = removal_plan
        self._slots = [[] for _ in pruning_parts(self)[0]]

    def set_optimizer_slots(self, slots_per_weight):
        """Optimizer variables shaped like each weight, zeroed where removed."""
        self._slots = [list(s) for s in slots_per_weight]

    def _new_mask(self, weight, mask, plan):
        threshold, by_magnitude = magnitude_mask(self, weight * mask)
        by_magnitude = by_magnitude * mask
        chosen = mask * tf.cast(plan, mask.dtype)
        n_planned = tf.reduce_sum(chosen)
        agreed = tf.reduce_sum(chosen * (1.0 - by_magnitude))
        new_mask = tf.where(n_planned > 0, mask * (1.0 - chosen), by_magnitude)
        return threshold, new_mask, n_planned, agreed

    def conditional_mask_update(self):
        pruning_vars, schedule, step_fn = pruning_parts(self)
        plan = self.removal_plan

        def apply(distribution):
            ops, planned, agreed = [], 0.0, 0.0
            assign = lambda v, value: v.assign(value)  # noqa: E731
            scale = lambda v, m: v.assign(v * tf.cast(m, v.dtype))  # noqa: E731
            for (weight, mask, threshold), slots, plan_i in zip(
                    pruning_vars, self._slots, plan.plans):
                new_threshold, new_mask, n_plan, n_agree = self._new_mask(weight, mask, plan_i)
                planned, agreed = planned + n_plan, agreed + n_agree
                ops.append(_strategy_update(distribution, mask, assign, new_mask))
                ops.append(_strategy_update(distribution, threshold, assign, new_threshold))
                ops.append(_strategy_update(distribution, weight, scale, new_mask))
                for slot in slots:
                    ops.append(_strategy_update(distribution, slot, scale, new_mask))
            ops.append(_strategy_update(distribution, plan.selected_count, assign,
                                        tf.cast(planned, tf.float32)))
            ops.append(_strategy_update(distribution, plan.agreed_count, assign,
                                        tf.cast(agreed, tf.float32)))
            slot = plan.event_count % plan.EVENTS_KEPT
            with tf.control_dependencies(ops):
                log = [_strategy_update(distribution, plan.event_steps,
                                        lambda v, i, t: v.scatter_nd_update([[i]], [t]),
                                        slot, tf.cast(step_fn(), tf.int64)),
                       _strategy_update(distribution, plan.event_count,
                                        lambda v, one: v.assign_add(one),
                                        tf.constant(1, tf.int64))]
            return tf.group(ops + log)

        def maybe_apply(distribution=None):
            if self._m_by_n:  # tfmot's rule: the m-by-n mask is made at step 1
                should_prune = tf.equal(step_fn(), 1)
            else:
                should_prune = schedule(step_fn())[0]
            return tf.cond(should_prune, lambda: apply(distribution), tf.no_op)

        if tf.distribute.has_strategy() and tf.distribute.in_cross_replica_context():
            return maybe_apply(tf.distribute.get_strategy())
        if tf.distribute.has_strategy():
            return tf.distribute.get_replica_context().merge_call(maybe_apply)
        return maybe_apply()

    def weight_mask_op(self):
        """weights <- weights * mask, outside the training step (no reduction)."""
        if tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context():
            return tf.distribute.get_replica_context().merge_call(self._mask_weights)
        return self._mask_weights(
            tf.distribute.get_strategy() if tf.distribute.has_strategy() else None)

    def _mask_weights(self, distribution):
        scale = lambda v, m: v.assign(v * tf.cast(m, v.dtype))  # noqa: E731
        return tf.group([_strategy_update(distribution, w, scale, m)
                         for w, m, _ in pruning_parts(self)[0]])


@tf.custom_gradient
def _gradient_masked(weight, mask):
    """`weight` forward (already 0 where `mask` is 0); the gradient times `mask`."""
    def grad(upstream):
        return upstream * mask, None
    return tf.identity(weight), grad


class _KeepRemovedAtZero:
    """Variable constraint: the user's constraint (if any), then weight * mask.

    tf_keras optimizers apply it after every update, in the training step.
    Survivors are multiplied by exactly 1.0, so training is bitwise unchanged;
    it only matters when the optimizer's slots were never handed to the
    wrapper (training driven by tfmot's own `UpdatePruningStep`). `shrink`, a
    callable giving a factor (`learning_rates.DecoupledDecay.factor`), adds
    decoupled weight decay on the surviving weights."""

    def __init__(self, mask, original=None):
        self.mask, self.original, self.shrink = mask, original, None

    def __call__(self, weight):
        if self.original is not None:
            weight = self.original(weight)
        weight = weight * tf.cast(self.mask, weight.dtype)
        if self.shrink is not None:
            weight = weight * tf.cast(self.shrink(), weight.dtype)
        return weight


def _weight_attributes(layer, weights):
    """(owner, attribute) pairs through which `layer.call` reads each weight:
    the attribute of `layer`, or of any layer inside it (an RNN's cell,
    Bidirectional's directions, MultiHeadAttention's projections, the layers
    of a nested model), that holds the weight itself."""
    owners = [layer] + sublayers(layer, recursive=True)
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


class _MaskedAttributes:
    """For one call: the layer reads `weight * mask` where it reads `weight`.

    object.__setattr__ bypasses Keras attribute tracking: the swap must not
    (un)track any variable."""

    def __init__(self, pairs, tensors):
        self.pairs, self.tensors, self.originals = pairs, tensors, []

    def __enter__(self):
        for pair, tensor in zip(self.pairs, self.tensors):
            if pair is None:
                continue
            owner, attr = pair
            self.originals.append((owner, attr, getattr(owner, attr)))
            object.__setattr__(owner, attr, tensor)

    def __exit__(self, *exc):
        for owner, attr, value in reversed(self.originals):
            object.__setattr__(owner, attr, value)
        self.originals = []


@keras.utils.register_keras_serializable(package="tf_unilth")
class MonotonePruneLowMagnitude(TfmotPruneLowMagnitude):
    """`tfmot.sparsity.keras.PruneLowMagnitude` with monotone masks (see module doc).

    Named like tfmot's wrapper (`prune_low_magnitude_<layer>`), so code that
    looks layers up by tfmot's names keeps working.
    """

    def __init__(self, layer, *args, skip=(), penalties=None, **kwargs):
        # A layer tfmot does not know but that holds prunable layers (see
        # tf_unilth.prunable) gets the get_prunable_weights tfmot asks for;
        # `skip` names the layers inside it kept dense (their paths).
        self._skip = tuple(skip)
        prunable.make_prunable(layer, self._skip)
        super().__init__(layer, *args, **kwargs)
        rename_layer(self, f"prune_low_magnitude_{self.layer.name}")
        self._penalty_configs = penalties  # rebuilt in build, from a saved config
        self.penalties = []

    def build(self, input_shape):
        super().build(input_shape)
        self._entries = [(e.owner, e.index) for e in prunable.entries(self.layer, self._skip)]
        weights = [w for w, _, _ in self.pruning_vars]
        self.removal_plan = RemovalPlan(weights)
        self.pruning_obj = MonotonePruning(
            removal_plan=self.removal_plan,
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
        for weight, mask, _ in self.pruning_vars:
            set_variable_constraint(weight, _KeepRemovedAtZero(mask, weight.constraint))
        if self._penalty_configs:
            from_config = self._penalty_configs
            self._penalty_configs = None
            self._rebuild_penalties(from_config)

    def call(self, inputs, training=None, **kwargs):
        if training is None:
            training = keras.backend.learning_phase()

        def train_updates():
            if training is True:
                self._check_step_callback()
            # The assert is kept for graphs traced before a callback reset the
            # step; XLA compiles it away, which is why _check_step_callback exists.
            with true_dtype_variables(), \
                    tf.control_dependencies([self.pruning_step.assign_add(1)]):
                with tf.control_dependencies([tf.debugging.assert_greater_equal(
                        self.pruning_step, tf.constant(1, tf.int64),
                        message=prune_callback_error_message(self))]):
                    return tf.group(self.pruning_obj.conditional_mask_update())

        self.add_update(smart_cond(training, train_updates, tf.no_op))
        for weight, mask in self._assign_masked:
            self.add_update(weight.assign(weight * mask))
        masked = [_gradient_masked(w, tf.cast(m, w.dtype)) for w, m, _ in self.pruning_vars]
        with _MaskedAttributes(self._weight_attrs, masked):
            if "training" in inspect.getfullargspec(self.layer.call).args:
                return self.layer.call(inputs, training=training, **kwargs)
            return self.layer.call(inputs, **kwargs)

    def _check_step_callback(self):
        """Raises, when a training step is traced, if no UpdatePruningStep set
        the step: tfmot starts it at -1 and its callback sets it before the
        first batch, so -1 here means training without the callback (no
        pruning would happen). A trace-time check, unlike tfmot's in-graph
        assert, holds under every execution setting, `jit_compile=True`
        included. A functional model's construction passes a symbolic
        `training`, never Python True, so it is not checked."""
        with tf.init_scope():  # the variable's value now, outside the traced graph
            step = int(keras.backend.get_value(self.pruning_step))
        if step < 0:
            raise ValueError(
                f"{self.name}: a pruned model trains only with the UpdatePruningStep "
                "callback (tf_unilth.callbacks.UpdatePruningStep or tfmot's), which drives "
                "the pruning step; add it to model.fit(callbacks=[...]). "
                + prune_callback_error_message(self))

    # -- what the wrapper exposes to its controllers --------------------------
    def mask_keys(self):
        """The `Mask` key of each prunable weight, in order: `<owner>/<index>`,
        the owner being this layer or the layer inside it the weight belongs to
        (see tf_unilth.prunable)."""
        return [Mask.key(prunable.join(self.layer.name, owner), index)
                for owner, index in self._entries]

    def set_removal_plan(self, plans):
        """The entries each prunable weight's next event removes (bool arrays,
        in prunable-weight order; None clears one)."""
        for var, plan in zip(self.removal_plan.plans, plans):
            var.assign(tf.zeros(var.shape, var.dtype) if plan is None
                       else tf.cast(plan, var.dtype))

    def clear_removal_plan(self):
        self.set_removal_plan([None] * len(self.removal_plan.plans))

    def link_optimizer(self, optimizer):
        """Hands the optimizer's slots of each prunable weight to the mask
        update, which zeroes them where it removes weights."""
        self.pruning_obj.set_optimizer_slots(
            [optimizer_slots(optimizer, w) for w, _, _ in self.pruning_vars])

    def pruning_state_variables(self):
        """Variables that belong to the pruning, not to the weights (a rewind
        keeps them): step, masks and thresholds; the plan and penalties are
        tf.Modules outside the layer's weights."""
        state = [self.pruning_step]
        for _, mask, threshold in self.pruning_vars:
            state += [mask, threshold]
        return state

    def attach_penalties(self, penalties):
        """Adds `penalties[i](weight_i)` to the training loss (a callable loss,
        as Keras does for `kernel_regularizer`); they live on the wrapper, so a
        stripped model carries none."""
        if self.penalties:
            raise ValueError(f"{self.name} already has penalties attached.")
        self.penalties = list(penalties)
        for penalty, (weight, _, _) in zip(self.penalties, self.pruning_vars):
            self.add_loss(_penalty_loss(penalty, weight))

    def _rebuild_penalties(self, configs):
        # Through Keras' registry (tf_unilth.regularizers registers the class):
        # the penalty reads this wrapper's plan, the wrapper does not import it.
        penalties = []
        for plan, config in zip(self.removal_plan.plans, configs):
            penalty = keras.regularizers.deserialize(config)
            penalty.read_selection_from(plan)
            penalties.append(penalty)
        self.attach_penalties(penalties)

    def get_config(self):
        config = super().get_config()
        if self._skip:
            config["skip"] = list(self._skip)
        if self.penalties:
            config["penalties"] = [keras.regularizers.serialize(p) for p in self.penalties]
        return config

    @classmethod
    def from_config(cls, config):
        # tfmot looks schedules up in its own module only; ours are registered
        # Keras serializables, so resolve them here, whatever form they come in.
        config = dict(config)
        config["pruning_schedule"] = schedules_lib.deserialize(config.pop("pruning_schedule"))
        config["layer"] = keras.layers.deserialize(config.pop("layer"))
        return cls(**config)


def _penalty_loss(penalty, weight):
    # A closure without arguments: Keras traces callable losses for SavedModel,
    # and default arguments would become (unencodable) function inputs.
    def loss():
        return penalty(weight)
    return loss


# --------------------------------------------------------------------------
# Wrapping a whole model

def prune(model, schedule_fn=None, *, exclude=(), block_size=(1, 1),
          block_pooling_type="AVG", printer=None):
    """Wraps every prunable layer of a tf_keras model (see tf_unilth.prunable
    for what is pruned in each kind of layer).

    `schedule_fn(layer) -> PruningSchedule` gives each layer its own schedule
    (each schedule holds its own run-time state); by default a frozen
    `TriggeredSchedule` (no pruning until a controller starts it). Layers named
    in `exclude` (names, or paths such as 'block/dense' for a layer inside
    another) stay dense. A layer holding others (Bidirectional,
    TimeDistributed, a nested model) is one wrapper pruning every weight
    inside it; a subclassed model is first put in a functional model
    (`models.functional`). Like tfmot, the returned model shares the layer
    objects (and so the weights) of `model`. Call inside `strategy.scope()`
    when training under a distribution strategy. `printer` gets the line
    listing the layers kept dense.
    """
    check_model(model)
    if is_subclassed_model(model):
        model = models_lib.functional(model)
    found = prunable.plan(model, exclude)
    if not found.wrapped():
        raise ValueError(
            f"Model {model.name!r} has no prunable layer (Dense, Conv, Embedding, "
            "... with weights); there is nothing to make sparse.")
    if printer is not None and found.kept:
        printer(prunable.describe_kept(found.kept))
    schedule_fn = schedule_fn or (lambda layer: schedules_lib.TriggeredSchedule())

    def wrap(layer):
        if isinstance(layer, TfmotPruneLowMagnitude) or not found.layers.get(layer.name):
            return layer
        return MonotonePruneLowMagnitude(
            layer, pruning_schedule=schedule_fn(layer), block_size=block_size,
            block_pooling_type=block_pooling_type, skip=found.skip.get(layer.name, ()))

    return clone_model(model, wrap)


def wrappers(model):
    """The pruning wrappers of `model` (ours or tfmot's), in layer order."""
    return collect_prunable_layers(model)


def ours(model, what="this"):
    """`wrappers(model)`, checking they are tf_unilth's (a clear error naming
    `tf_unilth.prune` otherwise, before anything is changed)."""
    layers = wrappers(model)
    if not layers:
        raise ValueError(
            "The model has no pruning wrappers; wrap it first with tf_unilth.prune(model).")
    foreign = [l.name for l in layers if not isinstance(l, MonotonePruneLowMagnitude)]
    if foreign:
        raise TypeError(
            f"{what} needs tf_unilth's pruning wrappers, but {foreign} are tfmot's "
            "PruneLowMagnitude (from tfmot.sparsity.keras.prune_low_magnitude). Wrap the "
            "unpruned model with tf_unilth.prune(model, schedule_fn) instead: the same "
            "tfmot schedules work there, and the masks stay monotone.")
    return layers


def weight_keys(layer):
    """The mask keys of one wrapper's prunable weights (tfmot's wrapper:
    `<layer>/<index>`)."""
    if isinstance(layer, MonotonePruneLowMagnitude):
        return layer.mask_keys()
    return [Mask.key(layer.layer.name, i) for i in range(len(layer.pruning_vars))]


def mask_keys(model):
    """Mask keys of the wrapped model's prunable weights, in order."""
    return [key for layer in wrappers(model) for key in weight_keys(layer)]


def link_optimizer(model, optimizer=None):
    """Builds the optimizer's slots (in the model's strategy scope) and lets each
    of our wrappers zero the slots of the weights it removes. tfmot's wrappers
    mask by assignment at every step instead and need no slots."""
    optimizer = optimizer or getattr(model, "optimizer", None)
    if optimizer is None:
        return
    with model.distribute_strategy.scope():
        build_optimizer(optimizer, model.trainable_variables)
    for layer in wrappers(model):
        if isinstance(layer, MonotonePruneLowMagnitude):
            layer.link_optimizer(optimizer)


def decay_weights(model, factor):
    """Multiplies every prunable weight of our wrappers by `factor()` after each
    optimizer update (decoupled weight decay; None turns it off). Set it before
    the model's training step is traced."""
    for layer in wrappers(model):
        if isinstance(layer, MonotonePruneLowMagnitude):
            for weight, _, _ in layer.pruning_vars:
                if isinstance(weight.constraint, _KeepRemovedAtZero):
                    weight.constraint.shrink = factor


def pruning_state_variables(model):
    """Every variable of `model`'s wrappers that belongs to the pruning (step,
    masks, thresholds): what a rewind of the weights must leave alone."""
    state = []
    for layer in wrappers(model):
        if isinstance(layer, MonotonePruneLowMagnitude):
            state += layer.pruning_state_variables()
        else:  # tfmot's wrapper: the same variables, by its attributes
            state.append(layer.pruning_step)
            for _, mask, threshold in layer.pruning_vars:
                state += [mask, threshold]
    return state


def event_steps(model):
    """Training steps at which the first of our wrappers pruned, oldest first
    (the last `RemovalPlan.EVENTS_KEPT` events)."""
    layers = [l for l in wrappers(model) if isinstance(l, MonotonePruneLowMagnitude)]
    if not layers:
        return []
    plan = layers[0].removal_plan
    count, steps = int(plan.event_count.numpy()), plan.event_steps.numpy()
    kept = min(count, plan.EVENTS_KEPT)
    return [int(steps[(count - kept + i) % plan.EVENTS_KEPT]) for i in range(kept)]


def selection_fidelity(model):
    """Share of the planned weights that tfmot's magnitude criterion also chose
    at the last pruning event (1.0 = the regularizer fully extruded them)."""
    layers = [l for l in wrappers(model) if isinstance(l, MonotonePruneLowMagnitude)]
    selected = sum(float(l.removal_plan.selected_count.numpy()) for l in layers)
    agreed = sum(float(l.removal_plan.agreed_count.numpy()) for l in layers)
    return agreed / selected if selected else 1.0


def strip(model):
    """A plain tf_keras model with the masks applied and the wrappers removed.

    The stripped model shares the wrapped layers (and so their variables); it
    is built in `model`'s distribution strategy scope, so it compiles and runs
    under the same strategy. Its config holds no tf_unilth object, so it loads
    anywhere tf_keras does; the constraint that kept removed weights at 0 is
    taken off its variables (a stripped ticket trains like any model)."""
    for layer in wrappers(model):
        layer.pruning_obj.weight_mask_op()
        if isinstance(layer, MonotonePruneLowMagnitude):
            for weight, _, _ in layer.pruning_vars:
                constraint = weight.constraint
                if isinstance(constraint, _KeepRemovedAtZero):
                    set_variable_constraint(weight, constraint.original)
    def unwrap(layer):  # tfmot's strip_pruning, through clone_model (nested models)
        if isinstance(layer, TfmotPruneLowMagnitude):
            return unwrapped_layer(layer)
        if isinstance(layer, keras.Model) and collect_prunable_layers(layer):
            return tfmot.sparsity.keras.strip_pruning(layer)
        return layer

    with model.distribute_strategy.scope():
        return clone_model(model, unwrap)
