"""Export tickets to TFLite with sparse weight encoding, and check the file.

`to_tflite` strips pruning wrappers (ours or tfmot's), converts with
`TFLiteConverter.from_keras_model` and `Optimize.EXPERIMENTAL_SPARSITY` (plus
`Optimize.DEFAULT` for dynamic-range int8), writes the file, then runs it in the
LiteRT interpreter on a batch of inputs and compares with the Keras model.

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

Check tolerances (on `ExportReport.relative_error` = max|tflite - keras| /
max|keras logits| over the check batch):

* float: <= 1e-5 (only float summation order differs);
* dynamic int8: <= 0.05 and argmax agreement >= 0.98 (weights are rounded to
  int8 and activations quantized on the fly). Measured on the first 1,000
  MNIST test images for LeNet-300-100 and its UniLTH tickets (dense, CSR and
  1x4 encodings): relative error 0.26-0.38%, argmax agreement >= 99.9%, so
  the bound leaves ~10x headroom. The exception it exists for: int8 1x16
  block-sparse kernels (96.5% block tickets) gave 20-24% (builtin kernels) and
  NaN (XNNPACK), and the check fails (benchmarks/tflite_export.py).
"""

import dataclasses
import logging
import os
import statistics
import tempfile
import time

import numpy as np

from tf_unilth._compat import check_model, is_keras3_object, keras, tf
from tf_unilth import serialization, wrapper

_log = logging.getLogger(__name__)

QUANTIZE = (None, "dynamic_int8")
# Maximum relative error and minimum argmax agreement a check accepts.
TOLERANCES = {None: (1e-5, 1.0), "dynamic_int8": (0.05, 0.98)}

RESOLVER_DEFAULT = "default (XNNPACK delegate)"
RESOLVER_BUILTIN = "BUILTIN_WITHOUT_DEFAULT_DELEGATES"


class ExportCheckError(RuntimeError):
    """The exported file's outputs differ from the Keras model beyond tolerance."""


@dataclasses.dataclass
class ExportReport:
    """What `to_tflite` wrote and measured (`to_dict()` for JSON)."""
    path: str
    sparse: bool
    quantize: str
    size_bytes: int
    stripped: str            # which wrappers were removed: "none", "tf_unilth", "tfmot"
    model_sparsity: float    # zeros in the Keras kernels (ticket_sparsity)
    encoded: dict            # `inspect_tflite` of the file (weights, formats, encoded sparsity)
    resolver: str            # op resolver the check ran with (use it to run the file)
    fallback_reason: str     # why the default (XNNPACK) was not used ("" if it was)
    check_inputs: str        # what the check batch was
    check_examples: int
    max_abs_diff: float
    logit_scale: float       # max |keras output| on the check batch
    relative_error: float    # max_abs_diff / logit_scale
    argmax_agreement: float
    tolerance: float
    min_argmax_agreement: float
    prefer: str = "speed"         # "size": block weights re-encoded CSR where smaller
    reencoded: int = 0            # how many weights `smallest_encoding` re-encoded
    dense_size_bytes: int = None  # the same model converted without sparsity
    latency_us: dict = None       # median per example ("exported", "dense"), "speedup"

    @property
    def passed(self):
        """Whether the check met the tolerances (with the reported resolver)."""
        return _passes(self.relative_error, self.argmax_agreement, self.tolerance,
                       self.min_argmax_agreement)

    @property
    def size_ratio(self):
        """This file's size over the dense (non-sparse) conversion's."""
        return self.size_bytes / self.dense_size_bytes if self.dense_size_bytes else None

    def to_dict(self):
        out = dataclasses.asdict(self)
        out["size_ratio"] = self.size_ratio
        out["passed"] = self.passed
        return out

    def summary(self):
        lines = [f"wrote {self.path} ({self.quantize or 'float'}, sparse={self.sparse}, "
                 f"prefer={self.prefer}): {self.size_bytes:,} bytes"
                 + (f"; {self.reencoded} block-sparse weight(s) re-encoded as CSR"
                    if self.reencoded else "")]
        if self.dense_size_bytes:
            lines.append(f"  dense conversion {self.dense_size_bytes:,} bytes; "
                         f"ratio {self.size_ratio:.3f}")
        enc = self.encoded
        lines.append(f"  model sparsity {self.model_sparsity:.4f}; encoded sparsity "
                     f"{enc['encoded_sparsity']:.4f} (weight values not stored in the file); "
                     f"read by sparse kernels: {enc['sparse_kernel_fraction']:.2f} of weights")
        for w in enc["weights"]:
            lines.append(f"    {w['name']} {w['shape']} {w['dtype']}: {w['format']}, "
                         f"{w['stored_values']}/{w['dense_values']} stored, {w['use']}")
        lines.append(f"  check on {self.check_examples} {self.check_inputs}: max|diff| "
                     f"{self.max_abs_diff:.3g}, logit scale {self.logit_scale:.3g}, relative "
                     f"{self.relative_error:.3g} (tolerance {self.tolerance:g}), argmax "
                     f"agreement {self.argmax_agreement:.4f}")
        lines.append(f"  interpreter: {self.resolver}"
                     + (f" (fallback: {self.fallback_reason})" if self.fallback_reason else ""))
        if self.latency_us:
            lines.append("  latency per example (median, batch 1, 1 thread): " + ", ".join(
                f"{k} {v:.2f} us" for k, v in self.latency_us.items() if k != "speedup")
                + (f"; speed-up {self.latency_us['speedup']:.2f}x"
                   if "speedup" in self.latency_us else ""))
        return "\n".join(lines)


# ---------------------------------------------------------------------------
# Inputs

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


def _check_quantize(quantize):
    if quantize not in QUANTIZE:
        raise ValueError(f"Unknown quantize={quantize!r}; use None (float32) or "
                         "'dynamic_int8' (dynamic-range int8 weights).")


def _check_path(path):
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"Output path {path!r} is a directory; give a file name such as "
                         f"{os.path.join(path, 'ticket.tflite')!r}.")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"The output directory {parent!r} does not exist; create it "
                                "first (mkdir -p) or choose another output path.")
    return path


# ---------------------------------------------------------------------------
# Conversion

def convert(model, sparse=True, quantize=None):
    """The .tflite bytes of a plain (unwrapped) tf_keras model."""
    _check_quantize(quantize)
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


# ---------------------------------------------------------------------------
# Reading the flatbuffer

_ITEM_BYTES = {"FLOAT32": 4, "FLOAT16": 2, "INT8": 1, "UINT8": 1, "INT32": 4}


def _enum_names(enum_cls):
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_")}


def inspect_tflite(content):
    """The weight tensors of a .tflite file and how their zeros are stored.

    `content`: file bytes or a path. Weights are constant tensors of rank >= 2.
    A weight with sparsity parameters stores only its non-zeros (CSR,
    "unstructured") or its non-zero blocks ("block RxC", zeros inside kept
    blocks stored too). `use` says whether FULLY_CONNECTED reads it sparse
    ("sparse kernel") or a DENSIFY op expands it at load ("densified at load").
    `encoded_sparsity` = 1 - stored values / dense values over all weights;
    `sparse_kernel_fraction` = share of weight values (dense count) read by a
    sparse kernel.
    """
    from ai_edge_litert import schema_py_generated as schema  # pylint: disable=import-outside-toplevel

    if isinstance(content, (str, os.PathLike)):
        with open(content, "rb") as f:
            content = f.read()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(content), 0))
    op_names, type_names = _enum_names(schema.BuiltinOperator), _enum_names(schema.TensorType)
    ops, weights = [], []
    for subgraph in model.subgraphs:
        consumers = {}
        for op in subgraph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            name = op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")
            ops.append(name)
            for i in (op.inputs if op.inputs is not None else []):
                consumers.setdefault(int(i), []).append(name)
        for index, tensor in enumerate(subgraph.tensors):
            buffer = model.buffers[tensor.buffer] if tensor.buffer else None
            nbytes = 0
            if buffer is not None:
                nbytes = len(buffer.data) if buffer.data is not None else int(buffer.size or 0)
            shape = [int(d) for d in (tensor.shape if tensor.shape is not None else [])]
            if nbytes == 0 or len(shape) < 2:
                continue
            dtype = type_names.get(tensor.type, str(tensor.type))
            dense_values = int(np.prod(shape))
            stored = nbytes // _ITEM_BYTES.get(dtype, 1)
            users = consumers.get(index, [])
            sp = tensor.sparsity
            if sp is None:
                fmt, use = "dense", "dense"
            else:
                block_map = [int(d) for d in (sp.blockMap if sp.blockMap is not None else [])]
                block = [1] * len(shape)  # block shape in the TFLite layout [out, in]
                for j, dim in enumerate(block_map):
                    block[dim] = int(sp.dimMetadata[len(shape) + j].denseSize)
                fmt = ("block " + "x".join(map(str, block))) if block_map \
                    else "unstructured (CSR)"
                use = "densified at load" if "DENSIFY" in users else "sparse kernel"
            weights.append({"name": tensor.name.decode() if isinstance(tensor.name, bytes)
                            else str(tensor.name), "shape": shape, "dtype": dtype,
                            "format": fmt, "use": use, "consumers": users,
                            "stored_values": int(stored), "dense_values": dense_values})
    dense_total = sum(w["dense_values"] for w in weights)
    stored_total = sum(w["stored_values"] for w in weights)
    sparse_read = sum(w["dense_values"] for w in weights if w["use"] == "sparse kernel")
    return {"ops": ops, "weights": weights,
            "encoded_sparsity": 1.0 - stored_total / dense_total if dense_total else 0.0,
            "sparse_kernel_fraction": sparse_read / dense_total if dense_total else 0.0,
            "size_bytes": len(content)}


# ---------------------------------------------------------------------------
# Rewriting: smallest encoding

PREFER = ("speed", "size")


def _index_vector(schema, values, limit):
    """The smallest SparseIndexVector holding `values` (< limit)."""
    for bound, kind, cls, dtype in ((256, "Uint8Vector", "Uint8VectorT", np.uint8),
                                    (65536, "Uint16Vector", "Uint16VectorT", np.uint16),
                                    (None, "Int32Vector", "Int32VectorT", np.int32)):
        if bound is None or limit <= bound:
            vector = getattr(schema, cls)()
            vector.values = np.asarray(values).astype(dtype)
            return getattr(schema.SparseIndexVector, kind), vector
    raise AssertionError("unreachable")


def _decode_row_blocks(schema, tensor, data):
    """Dense float32 [rows, cols] of a 1xk block-sparse FC weight, or None."""
    sp, shape = tensor.sparsity, [int(d) for d in tensor.shape]
    dims = sp.dimMetadata if sp.dimMetadata is not None else []
    if (tensor.type != schema.TensorType.FLOAT32 or len(shape) != 2 or len(dims) != 3
            or list(sp.traversalOrder) != [0, 1, 2] or list(sp.blockMap) != [1]
            or dims[0].format != schema.DimensionType.DENSE
            or dims[1].format != schema.DimensionType.SPARSE_CSR):
        return None
    block = int(dims[2].denseSize)
    segments = np.asarray(dims[1].arraySegments.values).astype(np.int64)
    indices = np.asarray(dims[1].arrayIndices.values).astype(np.int64)
    values = np.frombuffer(np.asarray(data, np.uint8).tobytes(), np.float32).reshape(-1, block)
    dense = np.zeros((shape[0], -(-shape[1] // block) * block), np.float32)
    rows = np.repeat(np.arange(shape[0]), np.diff(segments))
    for j in range(block):
        dense[rows, indices * block + j] = values[:, j]
    return dense[:, :shape[1]]


def smallest_encoding(content):
    """Re-encodes float 1xk block-sparse FULLY_CONNECTED weights as CSR + DENSIFY
    where that stores fewer bytes. Returns (bytes, number of weights changed).

    The converter picks 1x4 blocks whenever nearly all blocks are zero -- also
    for unstructured tickets at ~96% sparsity, where the kept blocks are mostly
    zeros that get stored too. CSR stores only the non-zeros (the file the
    converter would write for slightly less sparse weights); a DENSIFY op
    expands them at load, so the file runs at dense speed instead of the
    sparse kernel's.
    """
    import flatbuffers  # pylint: disable=import-outside-toplevel
    from ai_edge_litert import schema_py_generated as schema  # pylint: disable=import-outside-toplevel

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(content), 0))
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    changed = 0
    for subgraph in model.subgraphs:
        operators = []
        for op in subgraph.operators:
            index = int(op.inputs[1]) if codes[op.opcodeIndex] == \
                schema.BuiltinOperator.FULLY_CONNECTED else -1
            tensor = subgraph.tensors[index] if index >= 0 else None
            dense = None
            if tensor is not None and tensor.sparsity is not None and tensor.sparsity.blockMap is not None:
                dense = _decode_row_blocks(schema, tensor, model.buffers[tensor.buffer].data)
            if dense is not None:
                nonzero = dense != 0
                index_bytes = 1 if dense.shape[1] <= 256 else 2 if dense.shape[1] <= 65536 else 4
                csr_bytes = int(nonzero.sum()) * (4 + index_bytes) + 4 * (dense.shape[0] + 1)
                if csr_bytes < len(model.buffers[tensor.buffer].data):
                    if schema.BuiltinOperator.DENSIFY not in codes:
                        code = schema.OperatorCodeT()
                        code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.DENSIFY
                        code.version = 1
                        model.operatorCodes.append(code)
                        codes.append(schema.BuiltinOperator.DENSIFY)
                    row_dim, csr_dim = schema.DimensionMetadataT(), schema.DimensionMetadataT()
                    row_dim.format, row_dim.denseSize = schema.DimensionType.DENSE, dense.shape[0]
                    csr_dim.format = schema.DimensionType.SPARSE_CSR
                    csr_dim.arraySegmentsType, csr_dim.arraySegments = _index_vector(
                        schema, np.concatenate([[0], np.cumsum(nonzero.sum(1))]), 2 ** 31)
                    csr_dim.arrayIndicesType, csr_dim.arrayIndices = _index_vector(
                        schema, np.nonzero(nonzero)[1], dense.shape[1])
                    sparsity = schema.SparsityParametersT()
                    sparsity.traversalOrder, sparsity.dimMetadata = [0, 1], [row_dim, csr_dim]
                    tensor.sparsity = sparsity
                    model.buffers[tensor.buffer].data = np.frombuffer(
                        dense[nonzero].astype(np.float32).tobytes(), np.uint8)
                    out = schema.TensorT()
                    out.shape, out.type = np.array(dense.shape, np.int32), tensor.type
                    out.name = (tensor.name or b"") + b"/densified"
                    model.buffers.append(schema.BufferT())
                    out.buffer = len(model.buffers) - 1
                    subgraph.tensors.append(out)
                    densify = schema.OperatorT()
                    densify.opcodeIndex = codes.index(schema.BuiltinOperator.DENSIFY)
                    densify.inputs = np.array([index], np.int32)
                    densify.outputs = np.array([len(subgraph.tensors) - 1], np.int32)
                    operators.append(densify)
                    op.inputs[1] = len(subgraph.tensors) - 1
                    changed += 1
            operators.append(op)
        subgraph.operators = operators
    if not changed:
        return content, 0
    builder = flatbuffers.Builder(len(content))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), changed


# ---------------------------------------------------------------------------
# Running

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
    from ai_edge_litert.interpreter import Interpreter, OpResolverType  # pylint: disable=import-outside-toplevel

    source = ({"model_path": os.fspath(content)} if isinstance(content, (str, os.PathLike))
              else {"model_content": bytes(content)})

    def make(resolver):
        interpreter = Interpreter(num_threads=num_threads,
                                  experimental_op_resolver_type=resolver, **source)
        if batch_size is not None:
            detail = interpreter.get_input_details()[0]
            interpreter.resize_tensor_input(
                detail["index"], [batch_size] + list(detail["shape"][1:]))
        interpreter.allocate_tensors()
        return interpreter

    if resolver == RESOLVER_BUILTIN:
        return make(OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES), RESOLVER_BUILTIN, ""
    try:
        return make(OpResolverType.AUTO), RESOLVER_DEFAULT, ""
    except RuntimeError as err:
        if resolver == RESOLVER_DEFAULT or not _is_delegate_failure(err):
            raise
        reason = " ".join(str(err).split())
    _log.warning("The XNNPACK delegate failed in allocate_tensors() (%s); using the builtin "
                 "kernels without default delegates (%s).", reason, RESOLVER_BUILTIN)
    return make(OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES), RESOLVER_BUILTIN, reason


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


def latency(contents, x=None, rounds=20, runs=100, warmup=50, num_threads=1, resolvers=None):
    """Median latency per example (microseconds, batch 1) of several files.

    `contents`: {name: bytes or path}. All interpreters are loaded first and
    measured round robin -- each round runs every file `runs` times, each
    invoke timed with perf_counter -- so machine noise hits all alike. Returns
    {name: {"median_us", "round_medians_us", "resolver"}}. `resolvers`:
    {name: resolver} for files that must run with a given resolver (see
    `load_interpreter`; e.g. `ExportReport.resolver`).
    """
    resolvers = resolvers or {}
    loaded = {}
    for name, content in contents.items():
        interpreter, resolver, _ = load_interpreter(content, num_threads, batch_size=1,
                                                    resolver=resolvers.get(name))
        inp = interpreter.get_input_details()[0]
        sample = (np.random.default_rng(0).random(inp["shape"]) if x is None
                  else np.asarray(x)[:1]).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], sample)
        for _ in range(warmup):
            interpreter.invoke()
        loaded[name] = (interpreter, resolver)
    times = {name: [] for name in loaded}
    rounds_med = {name: [] for name in loaded}
    for _ in range(rounds):
        for name, (interpreter, _) in loaded.items():
            invoke, clock = interpreter.invoke, time.perf_counter
            spent = []
            for _ in range(runs):
                start = clock()
                invoke()
                spent.append(clock() - start)
            times[name].extend(spent)
            rounds_med[name].append(statistics.median(spent) * 1e6)
    return {name: {"median_us": statistics.median(times[name]) * 1e6,
                   "round_medians_us": rounds_med[name], "resolver": loaded[name][1]}
            for name in loaded}


def speedup(latencies, reference, name):
    """Median over rounds of reference time / name time (paired per round)."""
    ref, other = latencies[reference]["round_medians_us"], latencies[name]["round_medians_us"]
    return statistics.median(r / o for r, o in zip(ref, other))


# ---------------------------------------------------------------------------
# The one call

def _compare(got, expected):
    """(max |diff|, max |expected|, relative error, argmax agreement); NaN-safe."""
    if not np.all(np.isfinite(got)):
        diff = float("nan")
    else:
        diff = float(np.max(np.abs(got - expected)))
    scale = float(np.max(np.abs(expected)))
    relative = diff / scale if scale > 0 else diff
    agreement = float(np.mean(np.argmax(got, -1) == np.argmax(expected, -1)))
    return diff, scale, relative, agreement


def _passes(relative, agreement, tolerance, min_agreement):
    return bool(np.isfinite(relative) and relative <= tolerance and agreement >= min_agreement)


def _check_batch(model, sample, examples=64):
    if sample is not None:
        x = np.asarray(sample)
        if isinstance(sample, tuple) or x.dtype == object:
            raise TypeError("sample must be an array of model inputs (not an (x, y) pair).")
        return x.astype("float32"), "given inputs"
    shape = model.inputs[0].shape[1:]
    if any(d is None for d in shape):
        raise ValueError(f"The model input shape {tuple(shape)} has unknown dimensions: "
                         "pass sample=<a batch of real inputs> to check the export.")
    rng = np.random.default_rng(0)
    return rng.random((examples,) + tuple(shape)).astype("float32"), "random inputs in [0, 1)"


def to_tflite(model, path, sparse=True, quantize=None, *, prefer="speed", sample=None,
              check=True, compare_dense=True, latency_runs=0, num_threads=1):
    """Exports a tf_keras model (or a saved ticket path) to a .tflite file.

    Strips pruning wrappers, converts (`sparse`: EXPERIMENTAL_SPARSITY;
    `quantize`: None or "dynamic_int8"), writes `path`, then runs the file in
    the LiteRT interpreter on `sample` (a batch of real inputs; random inputs
    in [0, 1) when None) and compares with the Keras model. With `check`, a
    difference beyond `TOLERANCES` raises ExportCheckError (the file stays).
    `prefer="size"` re-encodes float block-sparse weights as CSR where that is
    smaller (`smallest_encoding`: smaller file, dense speed); "speed" keeps the
    converter's choice. `compare_dense` also converts without sparsity to
    report the size ratio;
    `latency_runs` > 0 measures batch-1 latency of both files (interleaved,
    `latency_runs` invokes per round, 10 rounds). Returns an ExportReport.
    """
    _check_quantize(quantize)
    if prefer not in PREFER:
        raise ValueError(f"Unknown prefer={prefer!r}; use 'speed' (the converter's encoding) "
                         "or 'size' (re-encode block-sparse weights as CSR where smaller).")
    path = _check_path(path)
    if isinstance(model, (str, os.PathLike)):
        model = load_ticket(model)
    check_model(model)
    model, stripped = strip_wrappers(model)
    # Local import: ticket imports the methods, which export does not need otherwise.
    from tf_unilth.ticket import ticket_sparsity  # pylint: disable=import-outside-toplevel

    content = convert(model, sparse=sparse, quantize=quantize)
    reencoded = 0
    if sparse and prefer == "size":
        content, reencoded = smallest_encoding(content)
    directory = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".tflite.tmp", delete=False) as f:
        f.write(content)
    os.replace(f.name, path)
    dense = convert(model, sparse=False, quantize=quantize) if (compare_dense and sparse) \
        else (content if not sparse else None)

    x, what = _check_batch(model, sample)
    expected = np.concatenate([model(x[i:i + 256], training=False).numpy()
                               for i in range(0, len(x), 256)])
    tolerance, min_agreement = TOLERANCES[quantize]
    got, resolver, reason = predict(content, x, num_threads=num_threads)
    diff, scale, relative, agreement = _compare(got, expected)
    passed = _passes(relative, agreement, tolerance, min_agreement)
    if not passed and resolver == RESOLVER_DEFAULT:
        # The XNNPACK delegate can be wrong where the builtin kernels are right
        # (seen: NaN outputs for int8 1x16 block-sparse kernels): try those.
        got2, _, _ = predict(content, x, num_threads=num_threads, resolver=RESOLVER_BUILTIN)
        stats2 = _compare(got2, expected)
        passed2 = _passes(stats2[2], stats2[3], tolerance, min_agreement)
        closer = np.isfinite(stats2[2]) and not stats2[2] >= relative  # NaN-aware
        if passed2 or closer:
            reason = (f"with the XNNPACK delegate the outputs differ from Keras (relative "
                      f"error {relative:.3g}, {int(np.sum(~np.isfinite(got)))} non-finite "
                      f"values, argmax agreement {agreement:.4f}); the builtin kernels "
                      + ("match" if passed2 else f"are closer (relative error {stats2[2]:.3g})"))
            _log.warning("%s: %s. Run this file with BUILTIN_WITHOUT_DEFAULT_DELEGATES.",
                         path, reason)
            (diff, scale, relative, agreement), resolver, passed = stats2, RESOLVER_BUILTIN, passed2
    report = ExportReport(
        path=path, sparse=sparse, quantize=quantize or "float32", size_bytes=len(content),
        stripped=stripped, model_sparsity=ticket_sparsity(model), encoded=inspect_tflite(content),
        resolver=resolver, fallback_reason=reason, check_inputs=what, check_examples=len(x),
        prefer=prefer, reencoded=reencoded,
        max_abs_diff=diff, logit_scale=scale, relative_error=relative,
        argmax_agreement=agreement, tolerance=tolerance, min_argmax_agreement=min_agreement,
        dense_size_bytes=len(dense) if dense is not None else None)
    if latency_runs > 0:
        files = {"exported": content}
        if sparse and dense is not None:
            files["dense"] = dense
        measured = latency(files, x, rounds=10, runs=latency_runs, num_threads=num_threads,
                           resolvers={"exported": resolver})
        report.latency_us = {k: v["median_us"] for k, v in measured.items()}
        if "dense" in measured:
            report.latency_us["speedup"] = speedup(measured, "dense", "exported")
    if check and not passed:
        raise ExportCheckError(
            f"{path}: the TFLite outputs differ from the Keras model: relative error "
            f"{relative:.3g} (max|diff| {diff:.3g} / max|logits| {scale:.3g}; tolerance "
            f"{tolerance:g}), argmax agreement {agreement:.4f} (minimum {min_agreement})."
            + (f" Interpreter: {resolver} ({reason})." if reason else "")
            + " The file was written; pass check=False to accept it.")
    return report
