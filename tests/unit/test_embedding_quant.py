"""models.embedding_quant: int8 blocks of an embedding table, dequantised after the Gather."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from models.embedding_quant import BLOCK, quantise_embedding_tables


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
