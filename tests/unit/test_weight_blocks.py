"""models.weight_blocks: int8 blocks of embedding tables and MatMul weights, and what they cost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from models.weight_blocks import BLOCK, block_int8, quantise_embedding_tables, quantise_matmul_weights


def gather_model(path: Path, table: np.ndarray) -> Path:
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])
    out = helper.make_tensor_value_info("vectors", TensorProto.FLOAT, ["batch", "seq", table.shape[1]])
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["vectors"], name="embed", axis=0)],
        "embed",
        [ids],
        [out],
        initializer=[numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def run(path: Path, ids: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"ids": ids})[0])


def test_embedding_quant_error_within_half_a_step_of_each_block(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    table = rng.normal(size=(300, 4 * BLOCK)).astype(np.float32)
    table[:, 5] *= 40  # an outlier dimension: only its own block may lose precision
    original = gather_model(tmp_path / "fp32.onnx", table)
    quantised = tmp_path / "int8.onnx"
    assert quantise_embedding_tables(original, quantised, min_elements=1) == ["table"]
    ids = rng.integers(0, 300, size=(3, 7))
    exact, approx = run(original, ids), run(quantised, ids)
    assert approx.shape == exact.shape == (3, 7, 4 * BLOCK)
    step = np.abs(table.reshape(300, 4, BLOCK)).max(axis=2) / 127  # per row and block
    bound = np.repeat(step[ids], BLOCK, axis=-1) / 2 + 1e-6
    assert np.all(np.abs(approx - exact) <= bound)
    assert np.abs(approx - exact)[..., BLOCK:].max() < 0.05  # other blocks keep fine steps
    assert quantised.stat().st_size < original.stat().st_size / 3


def test_embedding_quant_leaves_small_tables_alone(tmp_path: Path) -> None:
    table = np.ones((10, 8), np.float32)
    original = gather_model(tmp_path / "fp32.onnx", table)
    assert quantise_embedding_tables(original, tmp_path / "same.onnx") == []
    ids = np.zeros((1, 2), np.int64)
    assert np.array_equal(run(tmp_path / "same.onnx", ids), run(original, ids))


def matmul_model(path: Path, weight: np.ndarray) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", weight.shape[0]])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", weight.shape[1]])
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="first"),
        helper.make_node("MatMul", ["h", "w2"], ["y"], name="second"),
    ]
    w2 = np.eye(weight.shape[1], dtype=np.float32)
    initializers = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(w2, "w2")]
    graph = helper.make_graph(nodes, "mm", [x], [out], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_matmul_weights_within_half_a_step_and_folded_at_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(4 * BLOCK, 48)).astype(np.float32)
    weight[7, :] *= 30  # an outlier input row: only the first block along K coarsens
    original = matmul_model(tmp_path / "fp32.onnx", weight)
    quantised = tmp_path / "int8.onnx"
    assert quantise_matmul_weights(original, quantised, min_elements=weight.size) == ["w"]  # w2 is smaller
    q, scales = block_int8(weight, axis=0)
    rebuilt = (q * scales).reshape(weight.shape)
    step = np.repeat(scales[:, 0, :], BLOCK, axis=0)
    assert np.all(np.abs(rebuilt - weight) <= step / 2 + 1e-6)
    assert np.abs(rebuilt - weight)[BLOCK:].max() < 0.05  # other blocks keep fine steps
    x = rng.normal(size=(5, 4 * BLOCK)).astype(np.float32)
    served = ort.InferenceSession(str(quantised), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(served, x @ rebuilt, rtol=1e-4, atol=1e-4)
    assert quantised.stat().st_size < original.stat().st_size / 2
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(quantised), options, providers=["CPUExecutionProvider"])
    optimised = onnx.load(str(tmp_path / "optimised.onnx")).graph
    assert [n.op_type for n in optimised.node] == ["MatMul", "MatMul"]  # Cast, Mul, Reshape folded away


def test_block_int8_takes_the_whole_axis_when_blocks_do_not_divide_it() -> None:
    values = np.arange(-10, 10, dtype=np.float32).reshape(4, 5)
    q, scales = block_int8(values, axis=1)
    assert q.shape == (4, 1, 5) and scales.shape == (4, 1, 1)
    np.testing.assert_allclose((q * scales).reshape(4, 5), values, atol=np.abs(values).max() / 254 + 1e-6)
