"""Export tickets to TFLite with sparse weight encoding, and check the file.

`to_tflite` strips pruning wrappers (ours or tfmot's), converts with
`TFLiteConverter.from_keras_model` and `Optimize.EXPERIMENTAL_SPARSITY` (plus
`Optimize.DEFAULT` for dynamic-range int8), writes the file, then runs it in the
LiteRT interpreter on a batch of inputs and compares with the Keras model.

One module per concern: `conversion` (Keras -> .tflite bytes), `flatbuffer`
(reading the file back, re-encoding), `interpreter` (running it in LiteRT, the
XNNPACK fallback), `report` (the checked export, tolerances) and `timing`
(latency, for benchmarks only). LiteRT is imported on first use, so
`import tf_unilth` does not load it; without it, reading or running a file
raises `MissingLiteRTError` (an ImportError naming the fix).

What the converter does with zeros (read back by `inspect_tflite`):

* A Dense kernel whose zeros come in 1x4 blocks of the TFLite layout
  [out, in] -- 4 consecutive *input* rows of the Keras kernel [in, out], i.e.
  `block_size=(4, 1)` in tfmot/`masks.select(..., "block")` -- is stored block
  sparse and FULLY_CONNECTED reads it with its sparse kernel: fewer bytes *and*
  fewer multiply-adds.
* Unstructured zeros are stored in a CSR-like format and a DENSIFY op expands
  them once when the interpreter is prepared: a smaller file, dense speed.
  When most 1x4 blocks are all-zero anyway (seen at 96.5% unstructured
  sparsity) the converter picks the 1x4 block format instead: the sparse
  kernel runs, but the zeros inside kept blocks are stored too.
* Dynamic-range int8 stores int8 kernels: unstructured zeros as CSR + DENSIFY,
  very sparse 1x16 blocks (TFLite layout) block sparse. For the CSR case the
  XNNPACK delegate fails in `allocate_tensors()`, so `load_interpreter` falls
  back to the builtin kernels without default delegates and says so. For the
  1x16 case XNNPACK loads the file but was seen to return NaN; `to_tflite`
  then checks the builtin kernels and, when they match, reports that resolver
  (`ExportReport.resolver`, `fallback_reason`) with a warning.

Check tolerances: see `report`.
"""

from tf_unilth.export._litert import MissingLiteRTError
from tf_unilth.export.conversion import QUANTIZE, convert, load_ticket, strip_wrappers
from tf_unilth.export.flatbuffer import inspect_tflite, smallest_encoding
from tf_unilth.export.interpreter import (RESOLVER_BUILTIN, RESOLVER_DEFAULT, load_interpreter,
                                          predict)
from tf_unilth.export.report import (PREFER, TOLERANCES, ExportCheckError, ExportReport,
                                     to_tflite)

__all__ = [
    "ExportCheckError", "ExportReport", "MissingLiteRTError", "PREFER", "QUANTIZE",
    "RESOLVER_BUILTIN", "RESOLVER_DEFAULT", "TOLERANCES", "convert", "inspect_tflite",
    "load_interpreter", "load_ticket", "predict", "smallest_encoding", "strip_wrappers",
    "to_tflite",
]
