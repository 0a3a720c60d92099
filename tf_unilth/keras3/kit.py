"""The Keras 3 kit: the verbs a method uses, for a Keras 3 model (any
backend), under the same names as the tfmot kit (`tf_unilth.kit`)."""

from tf_unilth.keras3._compat import keras  # noqa: F401
from tf_unilth.keras3 import core as _core
from tf_unilth.keras3.callbacks import (PlateauTrigger, RegularizerGrowth, Rewind,  # noqa: F401
                                        UpdatePruningStep, current_step)
from tf_unilth.keras3.core import (attach_regularizers, choose, choose_among,  # noqa: F401
                                   get_masks, output_layers, plain_mask, pruned_weights,
                                   remove, selection_fidelity, set_masks, set_selection,
                                   sparsity, strip, wrappers, zeros_mask)
from tf_unilth.keras3.schedules import OneShotSchedule, TriggeredSchedule  # noqa: F401

NAME = "keras3"
Callback = keras.callbacks.Callback
EarlyStopping = keras.callbacks.EarlyStopping


def prune(model, schedule_fn=None, exclude=(), strategy=None):
    """Hooks `model`'s prunable layers in place (`strategy` is unused: Keras 3
    places variables through keras.distribution)."""
    del strategy
    return _core.prune(model, schedule_fn, exclude=exclude)


def learning_rate_value(model):
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


def stage_learning_rate(model, base, weight_decay):
    raise NotImplementedError(
        "lr_schedule other than constant and weight_decay are not on the Keras 3 path yet "
        "(docs/KERAS3.md); use --lr_schedule=constant --weight_decay=0, or the tf_keras path.")


_CALLBACK_CLASSES = {}


def callback_class(logic):
    if logic not in _CALLBACK_CLASSES:
        _CALLBACK_CLASSES[logic] = type(logic.__name__, (logic, Callback),
                                        {"__module__": logic.__module__})
    return _CALLBACK_CLASSES[logic]
