"""Keras 2 set-up shared by every module: tfmot only works with `tf_keras`.

TensorFlow >= 2.16 resolves `tf.keras` to Keras 3 unless TF_USE_LEGACY_KERAS is
set *before* `tf.keras` is first touched. tfmot 0.8.1 itself falls back to
`tf_keras` when `tf.keras` is Keras 3, so the one thing that matters is that
every object we create or accept comes from `tf_keras`. We therefore import
`tf_keras` directly (never `tf.keras`) and set the variable for users who have
not touched `tf.keras` yet, so their `tf.keras` agrees with ours too.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402

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
