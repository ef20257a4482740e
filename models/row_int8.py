"""Int8 products with one activation scale per token: dynamic int8 that keeps batch invariance.

ONNX Runtime's dynamic quantisation (`DynamicQuantizeLinear`) takes one scale over a whole
activation tensor, i.e. over the padded batch. A row's score then moves with its batch-mates
(0.10 on a version-2 encoder, 20x the gate), and one outlier token coarsens every other token
(decision agreement 0.989). Here every token, a row of a MatMul's input, gets its own symmetric
scale, so nothing depends on the rest of the batch:

    s = max(|x| along the row) / 127            (one scale per token)
    q = uint8(round(x / s) + 128)               (zero point 128: ONNX Runtime's fast u8 x s8 kernels)
    y = MatMulIntegerToFloat(q, W8, b_scale=w_scales, a_zero_point=128) * s

W8 is the weight as int8 with one scale per output column, at most `weight_max` in size. The
products of two activations inside attention (Q.K^T, P.V), LayerNorm, softmax and GELU stay fp32;
MatMuls that read the same input (Q, K and V) share its quantisation.

`weight_max` 63 (7-bit weights) keeps AVX2 CPUs without VNNI exact: their u8 x s8 instruction
(`vpmaddubsw`) adds two products in 16 bits and saturates above 32,767, which 255 x 127 x 2
exceeds and 255 x 63 x 2 does not.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.weight_blocks import MIN_WEIGHT_ELEMENTS

ZERO_POINT = 128
WEIGHT_MAX = 63  # see the module docstring: no saturation on AVX2 without VNNI
MIGRATION = 0.5  # SmoothQuant's alpha: how much of an input's range moves into its weights


def quantise_rows(
    model_path: Path,
    out_path: Path,
    *,
    weight_max: int = WEIGHT_MAX,
    min_elements: int = MIN_WEIGHT_ELEMENTS,
    keep_fp32: Collection[str] = (),
    channel_ranges: Mapping[str, np.ndarray] | None = None,
    migration: float = MIGRATION,
) -> dict[str, Any]:
    """Rewrite every MatMul with a constant weight of at least `min_elements` values as a
    per-token int8 product, save those whose name holds one of `keep_fp32`; returns what was
    done, for the manifest.

    With `channel_ranges` (each quantised input's largest |value| per channel on calibration
    windows: `channel_ranges`), each input is first divided by per-channel factors that its
    weights' rows are multiplied by (SmoothQuant, Xiao et al. 2023; `smoothing_factors`): the
    product is unchanged, and an outlier channel no longer decides every token's scale.
    """
    if not 1 <= weight_max <= 127:
        raise ValueError(f"weight_max must be from 1 to 127, not {weight_max}")
    model = onnx.load(str(model_path))
    graph = model.graph
    targets = quantisable_matmuls(graph, min_elements=min_elements, keep_fp32=keep_fp32)
    smoothing: dict[str, np.ndarray] = {}
    if channel_ranges is not None:
        by_input: dict[str, list[np.ndarray]] = {}
        for node in graph.node:
            if node.output[0] in targets:
                by_input.setdefault(node.input[0], []).append(targets[node.output[0]])
        smoothing = {x: smoothing_factors(channel_ranges[x], ws, migration) for x, ws in by_input.items()}
    quantised_inputs: dict[str, tuple[str, str]] = {}  # activation -> (uint8 tensor, its row scales)
    new_nodes: list[onnx.NodeProto] = []
    used = {name for node in graph.node for name in node.input}
    for node in graph.node:
        if node.output[0] not in targets:
            new_nodes.append(node)
            continue
        activation = node.input[0]
        if activation not in quantised_inputs:
            quantised_inputs[activation] = _quantise_activation(
                activation, new_nodes, graph, smoothing.get(activation)
            )
        q, row_scales = quantised_inputs[activation]
        values = targets[node.output[0]]
        if activation in smoothing:
            values = values * smoothing[activation][:, None]
        w8, w_scales = per_column_int8(values, weight_max)
        prefix = f"{node.output[0]}_rows"
        graph.initializer.extend(
            [
                numpy_helper.from_array(w8, f"{prefix}_w8"),
                numpy_helper.from_array(w_scales, f"{prefix}_w_scales"),
            ]
        )
        one = _constant(graph, "rows_one", np.float32(1.0))
        zero_point = _constant(graph, "rows_zero_point", np.uint8(ZERO_POINT))
        unscaled = f"{prefix}_unscaled"
        new_nodes += [
            helper.make_node(
                "MatMulIntegerToFloat", [q, f"{prefix}_w8", one, f"{prefix}_w_scales", zero_point],
                [unscaled], name=f"{prefix}_matmul", domain="com.microsoft",
            ),
            helper.make_node("Mul", [unscaled, row_scales], [node.output[0]], name=f"{prefix}_scale"),
        ]  # fmt: skip
    del graph.node[:]
    graph.node.extend(new_nodes)
    still_used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in still_used or t.name not in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(out_path))
    info: dict[str, Any] = {
        "mode": "rows",
        "activations": "uint8, one symmetric scale per token (row), zero point 128",
        "weights": f"int8 per output column, |w| <= {weight_max}",
        "matmuls": len(targets),
        "kept_fp32": "attention products between activations, LayerNorm, softmax, GELU",
    }
    if smoothing:
        info["smoothing"] = f"per-channel factors on {len(smoothing)} inputs, migration {migration}"
    return info


def quantisable_matmuls(
    graph: onnx.GraphProto, *, min_elements: int, keep_fp32: Collection[str] = ()
) -> dict[str, np.ndarray]:
    """Output -> weight of every MatMul whose second input is a 2-D constant of at least
    `min_elements` values, save those whose node name holds one of `keep_fp32`."""
    weights = {t.name: t for t in graph.initializer}
    found: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in weights or any(k in node.name for k in keep_fp32):
            continue
        values = numpy_helper.to_array(weights[node.input[1]])
        if values.ndim == 2 and values.size >= min_elements:
            found[node.output[0]] = values
    return found


def smoothing_factors(
    channel_range: np.ndarray, weights: Sequence[np.ndarray], migration: float
) -> np.ndarray:
    """SmoothQuant's per-channel factors s = max|x|^a / max|w|^(1-a) (a = `migration`): x / s
    and s * w then have their ranges balanced, channel by channel."""
    weight_range = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
    factors = np.power(np.maximum(channel_range, 1e-5), migration) / np.power(
        np.maximum(weight_range, 1e-5), 1 - migration
    )
    return np.asarray(np.clip(factors, 1e-5, None), dtype=np.float32)


def channel_ranges(
    model_path: Path,
    feeds: Iterable[Mapping[str, np.ndarray]],
    *,
    min_elements: int = MIN_WEIGHT_ELEMENTS,
    keep_fp32: Collection[str] = (),
) -> dict[str, np.ndarray]:
    """Largest |value| per channel (last axis) of every quantisable MatMul's input over `feeds`
    (those `keep_fp32` leaves out are not measured: nothing smooths them)."""
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    targets = quantisable_matmuls(model.graph, min_elements=min_elements, keep_fp32=keep_fp32)
    inputs = sorted({n.input[0] for n in model.graph.node if n.output[0] in targets})
    if not inputs:
        return {}
    model.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in inputs)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ranges: dict[str, np.ndarray] = {}
    for feed in feeds:
        for name, value in zip(inputs, session.run(inputs, dict(feed)), strict=True):
            largest = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
            ranges[name] = np.maximum(ranges[name], largest) if name in ranges else largest
    return ranges


def per_column_int8(values: np.ndarray, weight_max: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weight, float32 scale per output column) with |int8| <= weight_max."""
    scales = np.abs(values).max(axis=0) / weight_max
    scales[scales == 0] = 1.0
    quantised = np.clip(np.rint(values / scales), -weight_max, weight_max).astype(np.int8)
    return quantised, scales.astype(np.float32)


def _quantise_activation(
    name: str,
    nodes: list[onnx.NodeProto],
    graph: onnx.GraphProto,
    smoothing: np.ndarray | None,
) -> tuple[str, str]:
    """Append the nodes that quantise `name` per row (divided by `smoothing` first, if given);
    returns (uint8 tensor, row scales)."""
    p = f"{name}_rows"
    if smoothing is not None:
        inverse = _constant(graph, f"{p}_smoothing", (1 / smoothing).astype(np.float32))
        nodes.append(helper.make_node("Mul", [name, inverse], [f"{p}_smoothed"]))
        name = f"{p}_smoothed"
    last_axis = _constant(graph, "rows_last_axis", np.array([-1], dtype=np.int64))
    tiny = _constant(graph, "rows_tiny", np.float32(1e-12))
    per_step = _constant(graph, "rows_per_step", np.float32(1 / 127))
    offset = _constant(graph, "rows_offset", np.float32(ZERO_POINT))
    nodes += [
        helper.make_node("Abs", [name], [f"{p}_abs"]),
        helper.make_node("ReduceMax", [f"{p}_abs", last_axis], [f"{p}_max"], keepdims=1),
        helper.make_node("Max", [f"{p}_max", tiny], [f"{p}_max_safe"]),
        helper.make_node("Mul", [f"{p}_max_safe", per_step], [f"{p}_scale"]),
        helper.make_node("Div", [name, f"{p}_scale"], [f"{p}_steps"]),
        helper.make_node("Round", [f"{p}_steps"], [f"{p}_rounded"]),
        helper.make_node("Add", [f"{p}_rounded", offset], [f"{p}_shifted"]),
        helper.make_node("Cast", [f"{p}_shifted"], [f"{p}_u8"], to=TensorProto.UINT8),
    ]
    return f"{p}_u8", f"{p}_scale"


def _constant(graph: onnx.GraphProto, name: str, value: np.generic | np.ndarray) -> str:
    """`name`, added to the graph's initializers once."""
    if not any(t.name == name for t in graph.initializer):
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    return name
