"""The tfmot kit: the verbs a method uses, for a tf_keras model (tfmot's
pruning wrappers). `tf_unilth.kits.of(model)` picks this kit or the Keras 3
one (`tf_unilth.keras3.kit`); both offer the same names, so a method's
`run()` never knows which Keras it runs on (docs/KERAS3.md)."""

from tf_unilth._compat import keras, tf  # noqa: F401
from tf_unilth import learning_rates as _learning_rates
from tf_unilth import wrapper as _wrapper
from tf_unilth.callbacks import (PlateauTrigger, RegularizerGrowth, Rewind,  # noqa: F401
                                 UpdatePruningStep, current_step)
from tf_unilth.masks import (choose, choose_among, get_masks, output_layers,  # noqa: F401
                             plain_mask, pruned_weights, remove, set_masks, sparsity,
                             zeros_mask)
from tf_unilth.regularizers import attach as attach_regularizers  # noqa: F401
from tf_unilth.regularizers import set_selection  # noqa: F401
from tf_unilth.schedules import OneShotSchedule, TriggeredSchedule  # noqa: F401
from tf_unilth.wrapper import selection_fidelity, strip, wrappers  # noqa: F401

NAME = "tfmot"
Callback = keras.callbacks.Callback
EarlyStopping = keras.callbacks.EarlyStopping


def prune(model, schedule_fn=None, exclude=(), strategy=None):
    """Wraps `model`'s prunable layers (in `strategy`'s scope, default the model's)."""
    with (strategy or model.distribute_strategy).scope():
        return _wrapper.prune(model, schedule_fn, exclude=exclude)


def learning_rate_value(model):
    """The compiled optimizer's current learning rate (a float)."""
    return float(keras.backend.get_value(model.optimizer.learning_rate))


def stage_learning_rate(model, base, weight_decay):
    """UniLTH's stage learning rate at `base`, with decoupled weight decay wired
    into the wrappers when `weight_decay` (rate 0 until stage 2)."""
    layers = _wrapper.wrappers(model)
    with model.distribute_strategy.scope():
        rate = _learning_rates.StageLearningRate(base, layers[0].pruning_step)
        decay = _learning_rates.DecoupledDecay(rate) if weight_decay else None
    rate.decay = decay  # the controller starts it with stage 2
    _wrapper.decay_weights(model, decay.factor if decay else None)
    return rate


_CALLBACK_CLASSES = {}


def callback_class(logic):
    """`logic` (a class with Keras callback hooks) as a callback of this Keras."""
    if logic not in _CALLBACK_CLASSES:
        _CALLBACK_CLASSES[logic] = type(logic.__name__, (logic, Callback),
                                        {"__module__": logic.__module__})
    return _CALLBACK_CLASSES[logic]
