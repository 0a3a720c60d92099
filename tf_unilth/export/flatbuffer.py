"""Reading and re-encoding the .tflite flatbuffer (TFLite schema, object API).

`inspect_tflite` reads back how the converter stored each weight (dense, CSR,
1xk blocks) and which op reads it; `smallest_encoding` rewrites float 1xk
block-sparse FULLY_CONNECTED weights as CSR + DENSIFY where that is smaller.
The schema comes from LiteRT, imported on first use (`_litert`).
"""

import os

import numpy as np

from tf_unilth.export import _litert

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
    schema = _litert.schema()

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
    schema = _litert.schema()

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
