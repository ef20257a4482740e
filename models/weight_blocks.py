"""Weight-only int8 storage: large constant tables kept as int8 blocks of 32 values, each with its own scale.

These modes shrink the file and change nothing else about how the model runs. Compute stays fp32.

**Word embeddings.** The table is half of a MiniLM's bytes but costs no compute, so int8 kernels
gain nothing there. Quantising it the usual way (QDQ on the Gather's output, one calibrated scale
for all tokens) moved decisions past the parity gate. Here the table is stored as int8 with a
symmetric scale per block of a row, and only the gathered rows are dequantised:

    Gather(table) -> Reshape(Cast(Gather(table_int8)) * Gather(block_scales))

**MatMul weights.** The other half of the bytes. A weight W (K x N) is stored as int8 in blocks
of 32 along K, with one scale per block and output column, and rebuilt as

    W = Reshape(Cast(W_int8) * scales)

Every input of that expression is a constant, so ONNX Runtime folds it into one fp32 initializer
when the session loads. Serving then runs the same fp32 MatMul on weights within half a step of
their originals: no dequantisation per call, no int8 kernel whose rounding could move decisions
(version 2's int8 encoder failed the parity gate).

Blocks keep an outlier dimension's coarse step to its own block. One scale per whole row let a
few outlier dimensions coarsen all the others, and moved decisions. Nothing depends on the rest
of the batch. The scales add 1/8 to the int8 bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MIN_TABLE_ELEMENTS = 1_000_000  # smaller tables (positions, token types) stay fp32
MIN_WEIGHT_ELEMENTS = 65_536  # smaller MatMul weights (a classifier head) stay fp32
BLOCK = 32  # values sharing one scale: outlier dimensions then cost only their own block


def block_int8(values: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """`values` as int8 in blocks of BLOCK along `axis` (the whole axis if it does not divide).

    Returns (quantised, scales): quantised has the block split out as a new axis right after
    `axis` (length BLOCK), scales has length 1 there, so `quantised * scales` is the approximation.
    """
    size = values.shape[axis]
    block = BLOCK if size % BLOCK == 0 else size
    shape = (*values.shape[:axis], size // block, block, *values.shape[axis + 1 :])
    blocks = values.astype(np.float32).reshape(shape)
    scales = np.abs(blocks).max(axis=axis + 1, keepdims=True) / 127.0
    scales[scales == 0] = 1.0
    quantised = np.clip(np.rint(blocks / scales), -127, 127).astype(np.int8)
    return quantised, scales.astype(np.float32)


def quantise_embedding_tables(
    model_path: Path, out_path: Path, *, min_elements: int = MIN_TABLE_ELEMENTS
) -> list[str]:
    """Rewrite every large constant Gather table as int8 + per-row block scales; returns their names."""
    return _rewrite(model_path, out_path, "Gather", 0, min_elements, _dequantising_gather)


def quantise_matmul_weights(
    model_path: Path, out_path: Path, *, min_elements: int = MIN_WEIGHT_ELEMENTS
) -> list[str]:
    """Rewrite every large constant MatMul weight as int8 blocks along K; returns their names."""
    return _rewrite(model_path, out_path, "MatMul", 1, min_elements, _folded_weight)


Rewrite = Callable[[onnx.GraphProto, onnx.NodeProto, np.ndarray], list[onnx.NodeProto]]


def _rewrite(
    model_path: Path, out_path: Path, op_type: str, position: int, min_elements: int, rewrite: Rewrite
) -> list[str]:
    """Replace each large 2-D constant read at `position` by `op_type` nodes with `rewrite`'s nodes."""
    model = onnx.load(str(model_path))
    graph = model.graph
    tables = {t.name: t for t in graph.initializer}
    done: list[str] = []
    new_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        table = tables.get(node.input[position]) if node.op_type == op_type else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if (
            table is None
            or table.name in done
            or len(table.dims) != 2
            or axis != 0
            or np.prod(table.dims) < min_elements
        ):
            new_nodes.append(node)
            continue
        new_nodes.extend(rewrite(graph, node, numpy_helper.to_array(table)))
        done.append(table.name)
    if done:
        kept = [t for t in graph.initializer if t.name not in done]
        del graph.initializer[:]
        graph.initializer.extend(kept)
        del graph.node[:]
        graph.node.extend(new_nodes)
        onnx.checker.check_model(model)
    onnx.save(model, str(out_path))
    return done


def _dequantising_gather(
    graph: onnx.GraphProto, node: onnx.NodeProto, table: np.ndarray
) -> list[onnx.NodeProto]:
    name = node.input[0]
    width = table.shape[1]
    quantised, scales = block_int8(table, axis=1)  # (rows, blocks, block), (rows, blocks, 1)
    ids, out = node.input[1], node.output[0]
    base = node.name or out
    q, sc, axes, width_name = (f"{name}_int8", f"{name}_block_scale", f"{base}_axes", f"{base}_width")
    graph.initializer.extend(
        [
            numpy_helper.from_array(quantised, q),
            numpy_helper.from_array(scales[:, :, 0], sc),
            numpy_helper.from_array(np.array([-1], np.int64), axes),
            numpy_helper.from_array(np.array([width], np.int64), width_name),
        ]
    )
    return [
        helper.make_node("Gather", [q, ids], [f"{base}_q"], name=f"{base}_gather_int8", axis=0),
        helper.make_node("Cast", [f"{base}_q"], [f"{base}_qf"], name=f"{base}_cast", to=TensorProto.FLOAT),
        helper.make_node("Gather", [sc, ids], [f"{base}_s"], name=f"{base}_gather_scale", axis=0),
        helper.make_node("Unsqueeze", [f"{base}_s", axes], [f"{base}_s2"], name=f"{base}_unsqueeze"),
        helper.make_node("Mul", [f"{base}_qf", f"{base}_s2"], [f"{base}_blocks"], name=f"{base}_dequantise"),
        helper.make_node("Shape", [ids], [f"{base}_ids_shape"], name=f"{base}_shape"),
        helper.make_node(
            "Concat", [f"{base}_ids_shape", width_name], [f"{base}_out_shape"], name=f"{base}_concat", axis=0
        ),
        helper.make_node("Reshape", [f"{base}_blocks", f"{base}_out_shape"], [out], name=f"{base}_reshape"),
    ]


def _folded_weight(graph: onnx.GraphProto, node: onnx.NodeProto, weight: np.ndarray) -> list[onnx.NodeProto]:
    """Nodes that rebuild the fp32 weight from constants only (ORT folds them at load), then the MatMul."""
    name = node.input[1]
    quantised, scales = block_int8(weight, axis=0)  # (K/32, 32, N), (K/32, 1, N)
    q, sc, shape = f"{name}_int8", f"{name}_block_scale", f"{name}_shape"
    graph.initializer.extend(
        [
            numpy_helper.from_array(quantised, q),
            numpy_helper.from_array(scales, sc),
            numpy_helper.from_array(np.array(weight.shape, np.int64), shape),
        ]
    )
    return [
        helper.make_node("Cast", [q], [f"{name}_qf"], name=f"{name}_cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", [f"{name}_qf", sc], [f"{name}_blocks"], name=f"{name}_dequantise"),
        helper.make_node("Reshape", [f"{name}_blocks", shape], [name], name=f"{name}_reshape"),
        node,
    ]
