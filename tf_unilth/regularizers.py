"""DLTH's growing L2 penalty on the weights that are about to be removed.

penalty = 0.5 * lambda * sum((w * s)^2), where s marks the selected weights.
Attached to a pruned model (`attach`), s is the wrapper's removal plan (the
weights its next pruning event removes) and the penalty lives on the wrapper:
a stripped ticket carries no regularizer. Lambda's growth runs inside the
training step: `LambdaGrowth` evaluates the curve from the wrappers' step
counter, so raising lambda costs neither a per-batch Python callback nor a
retrace; controllers only move the plan and the curve's start.
"""

import weakref

import numpy as np

from tf_unilth._compat import keras, module_ignoring, tf
from tf_unilth import wrapper as wrapper_lib


@keras.utils.register_keras_serializable(package="tf_unilth")
class GrowingRegularizer(keras.regularizers.Regularizer, tf.Module):
    """0.5 * lambda * ||w * s||^2 with lambda and the selection s in variables.

    Standalone (`GrowingRegularizer(shape)`), s is its own `selection`
    variable and lambda its `lambda_value`. Attached to a pruned model by
    `attach`, s is the wrapper's removal plan and lambda comes from the
    model's shared `LambdaGrowth`.
    """

    def __init__(self, shape=None, lambda_value=0.0, name="growing_regularizer",
                 selection=None):
        tf.Module.__init__(self, name=name)
        self.lambda_value = tf.Variable(float(lambda_value), trainable=False,
                                        dtype=tf.float32, name="lambda")
        self.selection = None
        self.shape = None
        if selection is not None:
            self.read_selection_from(selection)
        elif shape is not None:
            self.shape = tuple(int(d) for d in shape)
            self.selection = tf.Variable(tf.zeros(self.shape), trainable=False,
                                         dtype=tf.float32, name="selection")
        self.growth = None

    def read_selection_from(self, variable):
        """Uses `variable` (a wrapper's removal plan) as the selection s."""
        self.selection = variable
        self.shape = tuple(int(d) for d in variable.shape)

    def current_lambda(self):
        return self.lambda_value if self.growth is None else self.growth()

    def __call__(self, weight):
        # l2_loss(x) = sum(x^2) / 2 in one fused kernel (and a cheap gradient).
        selected = weight * tf.cast(self.selection, weight.dtype)
        return tf.cast(self.current_lambda(), weight.dtype) * tf.nn.l2_loss(selected)

    def select(self, chosen):
        """Marks the weights to penalize (a bool/0-1 array of the weight's shape)."""
        chosen = np.asarray(chosen, dtype=np.float32)
        if chosen.shape != self.shape:
            raise ValueError(f"Selection shape {chosen.shape} != weight shape {self.shape}.")
        self.selection.assign(chosen)

    def get_config(self):
        # The selection and lambda are state, restored with the weights of a
        # checkpoint; the config rebuilds an equivalent, empty regularizer.
        return {"shape": list(self.shape) if self.shape else None,
                "lambda_value": float(self.lambda_value.numpy()), "name": self.name}


class LambdaGrowth(tf.Module):
    """Lambda as a function of the training step, evaluated in the step itself.

    One per model, shared by its GrowingRegularizers. Held (the default):
    lambda = `held`. Growing: lambda = lambda_max * min(1, r * floor(t / K))^gamma
    with t the steps since `start`; this one formula covers both curves of
    ALGORITHMS.md (PowerGrowth: K = 1, r = 1/G; LinearStepGrowth: K = every,
    r = delta / lambda_max, gamma = 1). Every parameter is a variable, so
    `start`/`hold` take effect at the next step, without retracing.
    """

    # Not part of the module's variables/submodules: the step belongs to the
    # wrapper, the cache holds graph tensors.
    _TF_MODULE_IGNORED_PROPERTIES = module_ignoring("_step", "_per_graph")

    def __init__(self, step, name="lambda_growth"):
        super().__init__(name=name)
        object.__setattr__(self, "_step", step)
        # Lambda computed once per traced graph, shared by every regularizer's
        # penalty (it is ~15 scalar ops; per-op dispatch dominates at this size).
        object.__setattr__(self, "_per_graph", weakref.WeakKeyDictionary())
        new = lambda value, dtype, n: tf.Variable(  # noqa: E731
            value, trainable=False, dtype=dtype, name=n)
        self.start_step = new(-1, tf.int64, "start_step")
        self.held = new(0.0, tf.float32, "held")
        self.lambda_max = new(0.0, tf.float32, "lambda_max")
        self.every = new(1.0, tf.float32, "every")
        self.rate = new(0.0, tf.float32, "rate")
        self.gamma = new(1.0, tf.float32, "gamma")

    def __call__(self):
        if tf.executing_eagerly():
            return self._lambda()
        graph = tf.compat.v1.get_default_graph()
        if graph not in self._per_graph:
            self._per_graph[graph] = self._lambda()
        return self._per_graph[graph]

    def _lambda(self):
        t = tf.cast(tf.maximum(self._step - self.start_step, 0), tf.float32)
        x = tf.minimum(1.0, self.rate * tf.floor(t / self.every))
        return tf.where(self.start_step >= 0, self.lambda_max * tf.pow(x, self.gamma),
                        self.held)

    def start(self, curve, step):
        """Grows lambda along `curve`, t = 0 at the step after `step` steps done.

        (The wrappers count a step before the loss reads the counter.)
        """
        every, rate, gamma = curve.step_form()
        self.lambda_max.assign(curve.lambda_max)
        self.every.assign(float(every))
        self.rate.assign(float(rate))
        self.gamma.assign(float(gamma))
        self.start_step.assign(int(step) + 1)

    def hold(self, value):
        """Stops growth; lambda stays `value`."""
        self.held.assign(float(value))
        self.start_step.assign(-1)

    def value(self):
        """Lambda at the current step (Python float)."""
        return float(self())


def attach(model):
    """Gives every prunable weight of a wrapped model a GrowingRegularizer.

    The penalty is a callable loss of the wrapper (what Keras itself does for
    `kernel_regularizer`), reading the wrapper's removal plan, so each pruning
    event removes exactly the penalized weights (and reports how far magnitude
    agreed). Works on built or unbuilt models; call it before the first `fit`
    (the penalty is part of the traced step). Returns {key: regularizer};
    attaching twice returns the existing ones. A model wrapped by tfmot's own
    `prune_low_magnitude` is refused before anything changes.
    """
    layers = wrapper_lib.ours(model, "regularizers.attach")
    found = regularizers(model)
    if found:
        return found
    with model.distribute_strategy.scope():
        for layer in layers:
            if not layer.built:
                raise ValueError(f"Layer {layer.name} is not built; build the model (call it "
                                 "on an input or give it an Input) before attach.")
        growth = LambdaGrowth(layers[0].pruning_step)
        for layer in layers:
            penalties = []
            for i, plan in enumerate(layer.removal_plan.plans):
                penalty = GrowingRegularizer(selection=plan, name=f"growing_regularizer_{i}")
                penalty.growth = growth
                penalties.append(penalty)
            layer.attach_penalties(penalties)
    return regularizers(model)


def regularizers(model):
    """{key: GrowingRegularizer} attached to `model` (by `attach` or a config)."""
    found = {}
    for layer in wrapper_lib.wrappers(model):
        for key, penalty in zip(wrapper_lib.weight_keys(layer),
                                getattr(layer, "penalties", None) or []):
            found[key] = penalty
    return found


def set_selection(model, selection):
    """Sets the weights each pruned weight's penalty (and next event) targets;
    keys missing from `selection` target nothing."""
    layers = wrapper_lib.ours(model, "regularizers.set_selection")
    if not regularizers(model):
        raise ValueError("No GrowingRegularizer attached; call tf_unilth.regularizers.attach(model).")
    for layer in layers:
        layer.set_removal_plan([selection.get(key) for key in wrapper_lib.weight_keys(layer)])


def growth(model):
    """The model's shared LambdaGrowth (None if its regularizers stand alone)."""
    regs = list(regularizers(model).values())
    return regs[0].growth if regs else None


def set_lambda(model, value):
    """Holds lambda at `value` (stops any growth)."""
    regs = regularizers(model)
    if not regs:
        raise ValueError("No GrowingRegularizer attached; call tf_unilth.regularizers.attach(model).")
    for reg in regs.values():
        reg.lambda_value.assign(float(value))
        if reg.growth is not None:
            reg.growth.hold(value)


def current_lambda(model):
    """Lambda of the model's regularizers at the current step (0.0 if none)."""
    regs = list(regularizers(model).values())
    return float(regs[0].current_lambda()) if regs else 0.0


# Growth curves (lambda as a function of the steps since growth started) live in
# the numpy core, shared with the Keras 3 path.
from tf_unilth.sparsity.growth import LinearStepGrowth, PowerGrowth  # noqa: E402,F401
