"""Batch-1 latency and best-batch throughput of the serving runtime on one artifact.

Measures what a guardrail call costs inside the runtime (tokenise + window + ONNX + decide), at
fixed token lengths, with lengths interleaved round-robin so machine noise hits every length
alike. Not a test: figures go into docs and closing notes.

    python bench/runtime_latency.py repository/context_adherence/1 --lengths 128 512 --runs 200
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from models.latency_probe import item_of_tokens, percentile
from service.runtime.classifier import MetricModel


def measure(model: MetricModel, lengths: list[int], runs: int, batch_sizes: list[int]) -> dict[str, object]:
    items = {n: item_of_tokens(model, n) for n in lengths}
    actual = {n: len(model.encoder.encode(items[n]).windows[0]) for n in lengths}
    for n in lengths:  # warm-up
        for _ in range(5):
            model.score([items[n]])
    latency: dict[int, list[float]] = {n: [] for n in lengths}
    for _ in range(runs):
        for n in lengths:
            start = time.perf_counter()
            model.score([items[n]])
            latency[n].append((time.perf_counter() - start) * 1000)
    throughput: dict[str, float] = {}
    for n in lengths:
        for b in batch_sizes:
            batch = [items[n]] * b
            model.score(batch, max_batch_rows=b, max_batch_tokens=b * n + 1)
            reps = max(3, 64 // b)
            start = time.perf_counter()
            for _ in range(reps):
                model.score(batch, max_batch_rows=b, max_batch_tokens=b * n + 1)
            throughput[f"{n}x{b}"] = reps * b / (time.perf_counter() - start)
    return {
        "tokens": actual,
        "batch1_ms": {
            n: {
                "p50": statistics.median(v),
                "p90": percentile(v, 90),
                "p99": percentile(v, 99),
                "mean": statistics.fmean(v),
            }
            for n, v in latency.items()
        },
        "items_per_s": throughput,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: all cores)")
    args = parser.parse_args()
    model = MetricModel.load(args.artifact, intra_op_threads=args.threads, check_layout=False)
    print(json.dumps(measure(model, args.lengths, args.runs, args.batch_sizes), indent=2))


if __name__ == "__main__":
    main()
