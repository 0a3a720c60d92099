"""Every private Keras 3 API the Keras 3 path uses, in one place.

Keras 3 (the `keras` package >= 3) with any backend: JAX, TensorFlow or
PyTorch. Nothing here imports TensorFlow or tf_keras. The private parts are
a layer's cached call signature (so a hooked layer receives `training`), its
variable tracker lock (masks are added to a built layer), the JAX trainer's
state sync (variables written between steps) and the naming of optimizer
slots; an upgrade of Keras changes this one file.
"""

import contextlib
import inspect

import keras
from keras import ops  # noqa: F401

KERAS3_LAYERS = ("Dense", "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose",
                 "Conv2DTranspose", "Conv3DTranspose", "Embedding")


def is_keras3(obj):
    """True when `obj` is a Keras 3 object (not tf_keras)."""
    module = type(obj).__module__ or ""
    if module.startswith("tf_keras"):
        return False
    return any((c.__module__ or "").split(".")[0] == "keras" for c in type(obj).__mro__)


def backend():
    return keras.backend.backend()


@contextlib.contextmanager
def unlocked(layer):
    """Lets variables be added to a built layer (Keras 3 locks its state)."""
    tracker = getattr(layer, "_tracker", None)
    was = bool(tracker is not None and tracker.locked)
    if was:
        tracker.unlock()
    try:
        yield
    finally:
        if was:
            tracker.lock()


def refresh_call_signature(layer):
    """After the layer's class changed: Keras caches `call`'s signature at
    construction (whether it takes `training`); read it again."""
    had_training = bool(getattr(layer, "_call_has_training_arg", False))
    layer._call_signature = inspect.signature(layer.call)
    layer.call_signature_parameters = [p.name for p in layer._call_signature.parameters.values()]
    layer._call_has_training_arg = "training" in layer.call_signature_parameters
    context = getattr(layer, "_call_context_args", {"training"})
    layer._call_has_context_arg = {a: a in layer.call_signature_parameters for a in context}
    return had_training


def restore_call_signature(layer, had_training):
    refresh_call_signature(layer)
    layer._call_has_training_arg = had_training
    layer._call_has_context_arg = {a: (had_training if a == "training" else v)
                                   for a, v in layer._call_has_context_arg.items()}


def sync(model):
    """Writes the JAX trainer's in-flight state back to the variables (a no-op
    on the other backends, whose variables are always current); after it the
    trainer reads the variables again before its next step."""
    fn = getattr(model, "jax_state_sync", None)
    if fn is not None:
        fn()


def optimizer_slots(optimizer, variable):
    """The optimizer variables that shadow `variable` (momenta, velocities):
    Keras 3 names them `<variable path with _>_<slot>` and shapes them alike."""
    if optimizer is None or not getattr(optimizer, "built", False):
        return []
    prefix = variable.path.replace("/", "_") + "_"
    shape = tuple(variable.shape)
    return [v for v in optimizer.variables
            if v.name.startswith(prefix) and tuple(v.shape) == shape]


def build_optimizer(model):
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    return optimizer


def steps_per_execution(model):
    return int(getattr(model, "steps_per_execution", 1) or 1)
