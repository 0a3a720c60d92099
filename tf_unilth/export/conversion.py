"""Keras -> .tflite bytes: load a saved ticket, strip pruning wrappers, convert.

`convert` uses `TFLiteConverter.from_keras_model` with
`Optimize.EXPERIMENTAL_SPARSITY` (zeros stored sparse) and, for dynamic-range
int8, `Optimize.DEFAULT`. Needs TensorFlow only, not LiteRT.
"""

import os

from tf_unilth._compat import check_model, is_keras3_object, tf
from tf_unilth import serialization, wrapper

QUANTIZE = (None, "dynamic_int8")


def load_ticket(path):
    """Loads a saved tf_keras model (e.g. find_ticket.py's ticket.keras)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"Expected a path to a .keras/.h5 file, got {type(path).__name__}.")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No model file at {path!r}. Pass the ticket.keras that "
            "examples/find_ticket.py wrote to its --output_dir (e.g. "
            "--ticket=runs/unilth_mnist/ticket.keras).")
    try:
        return serialization.load_model(path, compile=False)
    except Exception as err:  # pylint: disable=broad-except
        raise ValueError(
            f"Could not load {path!r} with tf_keras ({type(err).__name__}: {err}). A file "
            "saved by Keras 3 cannot be read by tf_keras: rebuild and save the model with "
            "`import tf_keras as keras`.") from err


def strip_wrappers(model):
    """(plain model, which wrappers were removed: "none", "tf_unilth", "tfmot", ...).

    Masks are applied first, so the stripped weights are what the wrapped model
    computes with."""
    layers = wrapper.wrappers(model)
    if not layers:
        return model, "none"
    kinds = sorted({"tf_unilth" if isinstance(layer, wrapper.MonotonePruneLowMagnitude)
                    else "tfmot" for layer in layers})
    return wrapper.strip(model), "+".join(kinds)


def check_quantize(quantize):
    """Raises ValueError unless `quantize` is one of QUANTIZE."""
    if quantize not in QUANTIZE:
        raise ValueError(f"Unknown quantize={quantize!r}; use None (float32) or "
                         "'dynamic_int8' (dynamic-range int8 weights).")


def convert(model, sparse=True, quantize=None):
    """The .tflite bytes of a plain (unwrapped) tf_keras model."""
    check_quantize(quantize)
    if is_keras3_object(model):
        check_model(model)
    if wrapper.wrappers(model):
        raise ValueError("The model still has pruning wrappers; strip them first "
                         "(tf_unilth.strip / export.strip_wrappers) or use to_tflite.")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    optimizations = []
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    if quantize == "dynamic_int8":
        optimizations.append(tf.lite.Optimize.DEFAULT)
    converter.optimizations = optimizations
    return converter.convert()
