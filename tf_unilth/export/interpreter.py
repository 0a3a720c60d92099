"""Running .tflite files in the LiteRT interpreter, with the XNNPACK fallback.

The default op resolver applies the XNNPACK delegate. For dynamic-range int8
weights with unstructured sparsity (CSR + DENSIFY) the delegate fails in
`allocate_tensors()`; `load_interpreter` then falls back to the builtin
kernels without default delegates and says so. LiteRT is imported on first
use (`_litert`).
"""

import logging
import os

import numpy as np

from tf_unilth.export import _litert

_log = logging.getLogger(__name__)

RESOLVER_DEFAULT = "default (XNNPACK delegate)"
RESOLVER_BUILTIN = "BUILTIN_WITHOUT_DEFAULT_DELEGATES"


def _is_delegate_failure(err):
    text = str(err)
    return "XNNPack" in text or "XNNPACK" in text or "delegate" in text.lower()


def load_interpreter(content, num_threads=1, batch_size=None, resolver=None):
    """(interpreter, resolver, fallback_reason) for .tflite bytes or a path.

    With `resolver=None`, tries the default op resolver (XNNPACK delegate
    applied). If the delegate fails in `allocate_tensors()` -- as it does for
    dynamic-range int8 with unstructured sparsity -- falls back to
    `BUILTIN_WITHOUT_DEFAULT_DELEGATES`, logs a warning and returns the reason.
    `resolver=RESOLVER_BUILTIN` or `RESOLVER_DEFAULT` uses that one only (e.g.
    the one `to_tflite` reported). `batch_size` resizes the first input.
    """
    if resolver not in (None, RESOLVER_DEFAULT, RESOLVER_BUILTIN):
        raise ValueError(f"Unknown resolver {resolver!r}; use None (default with fallback), "
                         f"{RESOLVER_DEFAULT!r} or {RESOLVER_BUILTIN!r}.")
    litert = _litert.interpreter()
    resolver_type = litert.OpResolverType

    source = ({"model_path": os.fspath(content)} if isinstance(content, (str, os.PathLike))
              else {"model_content": bytes(content)})

    def make(resolver):
        interpreter = litert.Interpreter(num_threads=num_threads,
                                  experimental_op_resolver_type=resolver, **source)
        if batch_size is not None:
            detail = interpreter.get_input_details()[0]
            interpreter.resize_tensor_input(
                detail["index"], [batch_size] + list(detail["shape"][1:]))
        interpreter.allocate_tensors()
        return interpreter

    if resolver == RESOLVER_BUILTIN:
        return make(resolver_type.BUILTIN_WITHOUT_DEFAULT_DELEGATES), RESOLVER_BUILTIN, ""
    try:
        return make(resolver_type.AUTO), RESOLVER_DEFAULT, ""
    except RuntimeError as err:
        if resolver == RESOLVER_DEFAULT or not _is_delegate_failure(err):
            raise
        reason = " ".join(str(err).split())
    _log.warning("The XNNPACK delegate failed in allocate_tensors() (%s); using the builtin "
                 "kernels without default delegates (%s).", reason, RESOLVER_BUILTIN)
    return make(resolver_type.BUILTIN_WITHOUT_DEFAULT_DELEGATES), RESOLVER_BUILTIN, reason


def predict(content, x, batch_size=256, num_threads=1, resolver=None):
    """Runs a .tflite file (bytes or path) on `x`; returns (outputs, resolver, reason).

    `resolver` as in `load_interpreter`."""
    x = np.asarray(x)
    batch_size = max(1, min(batch_size, len(x)))
    interpreter, resolver, reason = load_interpreter(content, num_threads, batch_size, resolver)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    outputs = []
    for start in range(0, len(x), batch_size):
        chunk = x[start:start + batch_size].astype(inp["dtype"])
        n = len(chunk)
        if n < batch_size:  # pad the last batch, keep the interpreter's shape
            chunk = np.concatenate([chunk, np.zeros((batch_size - n,) + chunk.shape[1:],
                                                    chunk.dtype)])
        interpreter.set_tensor(inp["index"], chunk)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(out["index"])[:n].copy())
    return np.concatenate(outputs), resolver, reason
