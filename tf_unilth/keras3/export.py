"""A Keras 3 ticket to TFLite / LiteRT, its sparsity kept, checked in the interpreter.

The ticket (hooked or stripped) is stripped to a plain Keras 3 model, exported
as a TensorFlow SavedModel by Keras 3 itself (`model.export(...,
format="tf_saved_model")`: on the JAX backend through jax2tf), and converted
by `TFLiteConverter.from_saved_model` with `Optimize.EXPERIMENTAL_SPARSITY`
(zeros stored sparse). Then the file is read back: its weights' encoding
(`tf_unilth.export.inspect_tflite`) and its outputs in the LiteRT interpreter
against the Keras model's on `sample` inputs. Needs TensorFlow (the converter)
and LiteRT (the check), the `[export]` extra.
"""

import os
import tempfile

import numpy as np

from tf_unilth.keras3 import core
from tf_unilth.keras3._compat import keras


class ExportCheckError(AssertionError):
    """The .tflite file does not compute what the Keras 3 ticket computes."""


def convert(model, sparse=True):
    """The .tflite bytes of a Keras 3 model (stripped first if hooked)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    plain = core.strip(model) if core.wrappers(model) else model
    with tempfile.TemporaryDirectory(prefix="tf_unilth_k3_export_") as tmp:
        saved = os.path.join(tmp, "saved_model")
        plain.export(saved, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparse else []
        return converter.convert()


def to_tflite(model, path, sparse=True, sample=None, atol=1e-4):
    """Writes the ticket as a .tflite file at `path` and checks it: returns a
    report (sizes, the ticket's sparsity, the weights' encoded sparsity, the
    largest output difference in the interpreter). Raises ExportCheckError,
    writing nothing, when the interpreter's outputs differ by more than `atol`."""
    from tf_unilth.export import inspect_tflite  # pylint: disable=import-outside-toplevel
    from tf_unilth.export.interpreter import predict  # pylint: disable=import-outside-toplevel
    if not isinstance(model, keras.Model):
        raise TypeError(f"Expected a Keras 3 model, got {type(model).__name__}.")
    plain = core.strip(model) if core.wrappers(model) else model
    content = convert(plain, sparse=sparse)
    if sample is None:
        shape = (16,) + tuple(plain.inputs[0].shape[1:])
        sample = np.random.default_rng(0).random(shape, dtype=np.float32)
    expected = np.asarray(plain.predict(sample, verbose=0))
    got, resolver, _ = predict(content, sample)
    got = np.asarray(got)
    difference = float(np.max(np.abs(got - expected)))
    if not difference <= atol:
        raise ExportCheckError(f"The .tflite outputs differ from the Keras 3 ticket's by "
                               f"{difference:.3g} (> {atol}); nothing written.")
    info = inspect_tflite(content)
    with open(path, "wb") as f:
        f.write(content)
    return {"path": os.fspath(path), "size_bytes": len(content),
            "ticket_sparsity": float(core.zeros_mask(plain).sparsity),
            "encoded_sparsity": info["encoded_sparsity"],
            "sparse_kernel_fraction": info["sparse_kernel_fraction"],
            "weights": info["weights"], "max_abs_difference": difference,
            "agreement": float(np.mean(got.argmax(-1) == expected.argmax(-1))),
            "resolver": resolver}
