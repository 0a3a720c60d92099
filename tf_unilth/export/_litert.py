"""LiteRT (`ai_edge_litert`), imported on first use.

`import tf_unilth` must not load LiteRT: only reading a .tflite file (its
flatbuffer schema) or running one needs it. A missing or broken install
raises `MissingLiteRTError`, an ImportError that says how to fix it.
"""

import importlib

INSTALL = 'pip install "tf_unilth[export]"'


class MissingLiteRTError(ImportError):
    """LiteRT (ai-edge-litert) could not be imported; the message names the fix."""


def _module(name):
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise MissingLiteRTError(
            f"Reading and running .tflite files needs LiteRT: {name} could not be imported "
            f"({type(err).__name__}: {err}). Install it with: {INSTALL} "
            "(the ai-edge-litert package).") from err


def schema():
    """The TFLite flatbuffer schema (object API): `ai_edge_litert.schema_py_generated`."""
    return _module("ai_edge_litert.schema_py_generated")


def interpreter():
    """`ai_edge_litert.interpreter` (Interpreter, OpResolverType)."""
    return _module("ai_edge_litert.interpreter")
