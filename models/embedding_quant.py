"""Weight-only int8 for large embedding tables, one scale per block of 32 values of a row.

The word embeddings are half of a MiniLM's bytes but cost no compute, so they gain nothing
from int8 kernels; quantising them the usual way (QDQ on the Gather's output, one calibrated
scale for all tokens) moved decisions past the parity gate. Here the table is stored as int8
with a symmetric scale per row and only the gathered rows are dequantised:

    Gather(table) -> Reshape(Cast(Gather(table_int8)) * Gather(block_scales))

so each value carries at most half a step of its own block's range as error (one scale per
whole row let a few outlier dimensions coarsen all the others, and moved decisions), and the
result does not depend on anything else in the batch. The scales add 1/8 to the int8 table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MIN_TABLE_ELEMENTS = 1_000_000  # smaller tables (positions, token types) stay fp32
BLOCK = 32  # dimensions sharing one scale: outlier dimensions then cost only their own block


def quantise_embedding_tables(
    model_path: Path, out_path: Path, *, min_elements: int = MIN_TABLE_ELEMENTS
) -> list[str]:
    """Rewrite every large constant Gather table as int8 + per-row scales; returns their names."""
    model = onnx.load(str(model_path))
    graph = model.graph
    tables = {t.name: t for t in graph.initializer}
    done: list[str] = []
    new_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        table = tables.get(node.input[0]) if node.op_type == "Gather" else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if table is None or len(table.dims) != 2 or axis != 0 or np.prod(table.dims) < min_elements:
            new_nodes.append(node)
            continue
        new_nodes.extend(_dequantising_gather(graph, node, numpy_helper.to_array(table)))
        done.append(table.name)
    if not done:
        onnx.save(model, str(out_path))
        return done
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
    rows, width = table.shape
    block = BLOCK if width % BLOCK == 0 else width
    blocks = table.reshape(rows, width // block, block)
    scales = np.abs(blocks).max(axis=2) / 127.0
    scales[scales == 0] = 1.0
    quantised = np.clip(np.rint(blocks / scales[:, :, None]), -127, 127).astype(np.int8)
    ids, out = node.input[1], node.output[0]
    base = node.name or out
    q, sc, axes, width_name = (f"{name}_int8", f"{name}_block_scale", f"{base}_axes", f"{base}_width")
    graph.initializer.extend(
        [
            numpy_helper.from_array(quantised, q),
            numpy_helper.from_array(scales.astype(np.float32), sc),
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
