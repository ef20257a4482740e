"""models.row_int8: int8 products with one activation scale per token, checked against numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.row_int8 import (
    MIGRATION,
    ZERO_POINT,
    channel_ranges,
    per_column_int8,
    quantise_rows,
    smoothing_factors,
)

K, N = 64, 48


def two_heads(path: Path, w1: np.ndarray, w2: np.ndarray) -> Path:
    """x -> (x @ w1 + b, x @ w2): two MatMuls reading one input, as Q, K and V do."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", K])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", "seq", N]) for n in ("y1", "y2")]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["xw1"], name="/layer.0/query/MatMul"),
            helper.make_node("Add", ["xw1", "b"], ["y1"]),
            helper.make_node("MatMul", ["x", "w2"], ["y2"], name="/layer.0/output/dense/MatMul"),
        ],
        "heads",
        [x],
        outs,
        initializer=[
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(np.linspace(-1, 1, N, dtype=np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [np.asarray(y) for y in session.run(None, {"x": x})]


def emulated(x: np.ndarray, w: np.ndarray, weight_max: int) -> np.ndarray:
    """What the rewritten MatMul computes, in numpy: per-row int8 x, per-column int8 w."""
    scale = np.maximum(np.abs(x).max(axis=-1, keepdims=True), 1e-12) / 127
    q = np.rint(x / scale)
    w8, w_scales = per_column_int8(w, weight_max)
    return (q @ w8.astype(np.float64)) * w_scales * scale


@pytest.fixture
def weights() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(K, N)).astype(np.float32), rng.normal(size=(K, N)).astype(np.float32)


def test_each_row_is_quantised_on_its_own_scale(
    tmp_path: Path, weights: tuple[np.ndarray, np.ndarray]
) -> None:
    w1, w2 = weights
    fp32 = two_heads(tmp_path / "fp32.onnx", w1, w2)
    info = quantise_rows(fp32, tmp_path / "rows.onnx", min_elements=1, weight_max=63)
    assert info["matmuls"] == 2
    graph = onnx.load(str(tmp_path / "rows.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("MatMulIntegerToFloat") == 2 and "MatMul" not in ops
    assert ops.count("ReduceMax") == 1  # both products read one quantisation of x
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 5, K)).astype(np.float32)
    x[1, 2] *= 50  # one loud token: on one scale per tensor it would coarsen every other token
    y1, y2 = run(tmp_path / "rows.onnx", x)
    np.testing.assert_allclose(y1, emulated(x, w1, 63) + np.linspace(-1, 1, N), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(y2, emulated(x, w2, 63), rtol=1e-4, atol=1e-4)
    reference = run(fp32, x)[1]
    quiet = np.ones(x.shape[:2], dtype=bool)
    quiet[1, 2] = False
    assert np.abs(y2 - reference)[quiet].max() < 0.05 * np.abs(reference).max()


def test_a_rows_result_does_not_depend_on_its_batch(
    tmp_path: Path, weights: tuple[np.ndarray, np.ndarray]
) -> None:
    rows = quantise_rows(two_heads(tmp_path / "fp32.onnx", *weights), tmp_path / "rows.onnx", min_elements=1)
    rng = np.random.default_rng(2)
    alone = rng.normal(size=(1, 7, K)).astype(np.float32)
    mates = (rng.normal(size=(4, 7, K)) * rng.uniform(0.1, 30, size=(4, 7, 1))).astype(np.float32)
    assert rows["mode"] == "rows"
    for y_alone, y_batch in zip(
        run(tmp_path / "rows.onnx", alone),
        run(tmp_path / "rows.onnx", np.concatenate([mates[:2], alone, mates[2:]])),
        strict=True,
    ):
        np.testing.assert_array_equal(y_alone[0], y_batch[2])


def test_named_matmuls_and_small_weights_stay_fp32(
    tmp_path: Path, weights: tuple[np.ndarray, np.ndarray]
) -> None:
    fp32 = two_heads(tmp_path / "fp32.onnx", *weights)
    info = quantise_rows(fp32, tmp_path / "kept.onnx", min_elements=1, keep_fp32=["/output/dense/"])
    assert info["matmuls"] == 1
    ops = {n.name: n.op_type for n in onnx.load(str(tmp_path / "kept.onnx")).graph.node}
    assert ops["/layer.0/output/dense/MatMul"] == "MatMul"
    assert quantise_rows(fp32, tmp_path / "none.onnx")["matmuls"] == 0  # 64 x 48 < MIN_WEIGHT_ELEMENTS
    with pytest.raises(ValueError, match="weight_max"):
        quantise_rows(fp32, tmp_path / "bad.onnx", weight_max=128)


def test_per_column_weights_stay_within_weight_max() -> None:
    w = np.array([[0.5, -2.0, 0.0], [-1.0, 1.0, 0.0]], dtype=np.float32)
    w8, scales = per_column_int8(w, 63)
    assert w8.dtype == np.int8 and np.abs(w8).max() == 63 and scales[2] == 1.0  # an all-zero column
    np.testing.assert_allclose(w8 * scales, w, atol=scales.max() / 2)
    assert ZERO_POINT == 128  # uint8 activations: round(x / s) in [-127, 127] shifted into [1, 255]


def test_seven_bit_weights_are_exact_where_avx2_would_saturate(tmp_path: Path) -> None:
    """All-positive activations against full-scale weights: each pair of u8 x s8 products AVX2
    adds in 16 bits reaches 255 x 127 x 2 with 8-bit weights (on the AVX2-only EPYC these tests
    ran on, the output was then off by 0.75 of its largest value); with |w| <= 63 it stays under
    32,767 on every CPU."""
    rng = np.random.default_rng(3)
    w = np.sign(rng.normal(size=(K, N))).astype(np.float32)
    fp32 = two_heads(tmp_path / "fp32.onnx", w, w)
    quantise_rows(fp32, tmp_path / "rows.onnx", min_elements=1)
    x = np.abs(rng.normal(size=(2, 5, K))).astype(np.float32) * 10
    y = run(tmp_path / "rows.onnx", x)[1]
    exact = emulated(x, w, 63)
    assert np.abs(y - exact).max() <= 1e-5 * np.abs(exact).max()


def test_smoothing_moves_an_outlier_channel_into_the_weights(tmp_path: Path) -> None:
    """One loud input channel (as transformer activations have) sets every token's scale; divided
    out per channel into the weights (SmoothQuant) it stops coarsening the others."""
    rng = np.random.default_rng(4)
    w = rng.normal(size=(K, N)).astype(np.float32)
    fp32 = two_heads(tmp_path / "fp32.onnx", w, w)
    x = rng.normal(size=(4, 6, K)).astype(np.float32)
    x[..., 7] *= 80
    ranges = channel_ranges(fp32, [{"x": x}], min_elements=1)
    assert set(ranges) == {"x"} and ranges["x"].shape == (K,) and ranges["x"][7] == np.abs(x[..., 7]).max()
    assert channel_ranges(fp32, [{"x": x}], min_elements=1, keep_fp32=["layer.0"]) == {}  # nothing to smooth
    factors = smoothing_factors(ranges["x"], [w, w], MIGRATION)
    assert factors.argmax() == 7 and (factors > 0).all()
    plain = quantise_rows(fp32, tmp_path / "plain.onnx", min_elements=1)
    smooth = quantise_rows(fp32, tmp_path / "smooth.onnx", min_elements=1, channel_ranges=ranges)
    assert "smoothing" in smooth and "smoothing" not in plain
    reference = run(fp32, x)[1]
    errors = {p: np.abs(run(tmp_path / f"{p}.onnx", x)[1] - reference).mean() for p in ("plain", "smooth")}
    assert errors["smooth"] < errors["plain"] / 2, errors
