"""Saving and loading pruned models: every custom object in one place.

`load_model(path)` loads a model saved with wrappers (ours or tfmot's), our
schedules and regularizers, in .keras, .h5 or SavedModel form;
`custom_object_scope()` is the scope for Keras' own loaders. A stripped
ticket needs neither: it is a plain tf_keras model.
"""

from tf_unilth._compat import TfmotPruneLowMagnitude, keras, tfmot
from tf_unilth import regularizers, schedules, wrapper

CUSTOM_OBJECTS = {
    "MonotonePruneLowMagnitude": wrapper.MonotonePruneLowMagnitude,
    "PruneLowMagnitude": TfmotPruneLowMagnitude,
    "TriggeredSchedule": schedules.TriggeredSchedule,
    "OneShotSchedule": schedules.OneShotSchedule,
    "GrowingRegularizer": regularizers.GrowingRegularizer,
    "ConstantSparsity": tfmot.sparsity.keras.ConstantSparsity,
    "PolynomialDecay": tfmot.sparsity.keras.PolynomialDecay,
}

deserialize_schedule = schedules.deserialize


def custom_object_scope():
    """A Keras custom-object scope holding every object a pruned model may hold."""
    return keras.utils.custom_object_scope(CUSTOM_OBJECTS)


def load_model(path, compile=True):  # pylint: disable=redefined-builtin
    """`keras.models.load_model` with every tf_unilth and tfmot object known."""
    with custom_object_scope():
        return keras.models.load_model(path, compile=compile)
