"""The offline ceiling of served artifacts beside this CPU's measured GEMM peaks, in one run.

The ceiling is what `bench/server_load.py` calls it: items/s of the runtime alone (tokenise,
window, ONNX, decide) on the ~64-256-token mix, best of a few batch sizes, length-sorted
batches, on one pinned CPU with one ONNX Runtime thread. Beside it, the same ONNX Runtime's
GEMM peak on that CPU, fp32 (MatMul) and int8 (MatMulInteger, uint8 x int8: what dynamic
quantisation runs), on transformer-shaped products and on a large square one; and each
artifact's share of the peak its compute runs at: the model's multiply-adds per item (every
product in its graph, attention's included, by shape inference) times items/s.

    python bench/ceiling.py repository/context_adherence/2 build/ceiling/dynamic/context_adherence/2

Not a test: figures go into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.server_load import length_mix, offline_ceiling  # noqa: E402
from service.runtime.classifier import MetricModel  # noqa: E402

LENGTHS = [64, 96, 128, 192, 256]


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def gemm_gops(m: int, k: int, n: int, *, int8: bool, seconds: float = 2.0) -> float:
    """Measured giga multiply-adds x2 (GOPS) of one [m,k] x [k,n] product in ONNX Runtime."""
    rng = np.random.default_rng(0)
    if int8:
        a = helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])
        b = helper.make_tensor(
            "b", TensorProto.INT8, [k, n], rng.integers(-127, 127, (k, n), dtype=np.int8).tobytes(), raw=True
        )
        node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
        y = helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])
        feed: np.ndarray = rng.integers(0, 255, (m, k), dtype=np.uint8)
    else:
        a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])
        b = helper.make_tensor(
            "b", TensorProto.FLOAT, [k, n], rng.standard_normal((k, n), dtype=np.float32).tobytes(), raw=True
        )
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])
        feed = rng.standard_normal((m, k), dtype=np.float32)
    graph = helper.make_graph([node], "gemm", [a], [y], initializer=[b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    session = _session(model)
    for _ in range(3):
        session.run(None, {"a": feed})
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:  # the fastest run: noise only ever slows one down
        start = time.perf_counter()
        session.run(None, {"a": feed})
        best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / best / 1e9


PRODUCTS = ("MatMul", "MatMulInteger", "Gemm")


def model_macs(model_path: Path, tokens: int) -> tuple[float, str]:
    """Multiply-adds of one item of `tokens` tokens (every product, attention's included, from
    ORT's symbolic shape inference at batch 1), and what the weight products compute in."""
    model = onnx.load(str(model_path))
    for graph_input in model.graph.input:
        for dim, value in zip(graph_input.type.tensor_type.shape.dim, (1, tokens), strict=False):
            dim.ClearField("dim_param")
            dim.dim_value = value
    inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*inferred.graph.value_info, *inferred.graph.input]
    }
    shapes.update({t.name: list(t.dims) for t in inferred.graph.initializer})
    macs = 0
    for node in inferred.graph.node:
        if node.op_type not in PRODUCTS:
            continue
        a, b = shapes[node.input[0]], shapes[node.input[1]]
        transposed = any(at.name == "transB" and at.i for at in node.attribute)
        macs += int(np.prod(a)) * (b[0] if transposed else b[-1])
    # dynamic int8 (MatMulInteger) or static QDQ (activations quantised: ORT runs QLinearMatMul)
    int8 = any(node.op_type in ("MatMulInteger", "QuantizeLinear") for node in inferred.graph.node)
    return float(macs), "int8" if int8 else "fp32"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("artifacts", nargs="+", type=Path, help="version folders (model.onnx, manifest.json)")
    parser.add_argument("--cpu", type=int, default=None, help="the CPU to pin to (default: the last one)")
    parser.add_argument(
        "--macs-like",
        type=Path,
        default=None,
        help="a version folder of the same architecture whose multiply-adds stand for those of artifacts"
        " ORT's symbolic shape inference cannot read (per-token int8: --quantization rows)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "ceiling.json")
    args = parser.parse_args()
    for folder in args.artifacts:
        if not (folder / "model.onnx").is_file():
            parser.error(f"{folder}: no model.onnx (give a version folder)")
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    shapes = {"128x384x384": (128, 384, 384), "128x384x1536": (128, 384, 1536), "1024^3": (1024, 1024, 1024)}
    peaks: dict[str, dict[str, float]] = {"fp32": {}, "int8": {}}
    for name, (m, k, n) in shapes.items():
        peaks["fp32"][name] = round(gemm_gops(m, k, n, int8=False), 1)
        peaks["int8"][name] = round(gemm_gops(m, k, n, int8=True), 1)
    print("GEMM GOPS, 1 thread:", json.dumps(peaks), flush=True)
    figures: dict[str, object] = {"cpu": cpu, "gemm_gops": peaks, "artifacts": {}}
    reference: float | None = None
    for folder in args.artifacts:
        model = MetricModel.load(folder, intra_op_threads=1)
        items = length_mix(model, LENGTHS)
        ceiling = offline_ceiling(model, items)
        ceiling.pop("service_s")
        rate = float(ceiling["best_items_per_s"])  # type: ignore[arg-type]
        reference = reference or rate
        rows = model.artifact.manifest.export.get("quantization", {}).get("mode") == "rows"
        counted = args.macs_like / "model.onnx" if rows and args.macs_like else model.artifact.model_path
        macs = float(np.mean([model_macs(counted, n)[0] for n in LENGTHS]))
        kind = "int8" if rows else model_macs(model.artifact.model_path, 128)[1]
        peak = max(peaks["int8" if kind == "int8" else "fp32"].values())
        gops = 2 * macs * rate / 1e9
        entry = {
            **ceiling,
            "weight_products_in": kind,
            "gops_achieved": round(gops, 1),
            "share_of_measured_peak": round(gops / peak, 3),
            "over_first": round(rate / reference, 3),
        }
        print(folder, json.dumps(entry), flush=True)
        figures["artifacts"][str(folder)] = entry  # type: ignore[index]
        del model
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
