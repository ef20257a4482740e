"""Model instances: does a second session on a second core double the throughput of batch 1?

Offline, on the runtime the server runs (`MetricModel.forward` on pre-encoded windows, the
part an instance's thread does; ONNX Runtime releases the GIL while it runs). For a fixed
time each configuration runs closed loops of one-row batches, one loop per instance:

    one instance, 1 thread | one instance, all usable CPUs as threads | N instances, 1 thread each

interleaved over several rounds so machine noise hits each alike, and reports rows/s and the
ratios. From the measured per-row service times it then projects, with the multi-server queue
model (bench/queue_model.py), the Poisson rate within a p99 budget for 8 and 32 cores, taking
the scaling efficiency measured here as the efficiency there (stated, not measured). Not a
test: figures go into docs/benchmarks.md and the issue note.

    python bench/instances.py repository/context_adherence/2 --tokens 128 --seconds 8 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.queue_model import highest_rate_within  # noqa: E402
from models.latency_probe import item_of_tokens  # noqa: E402
from service.runtime.classifier import MetricModel  # noqa: E402
from service.runtime.cpus import usable_cpus  # noqa: E402
from service.runtime.encoding import EncodedItem, Window  # noqa: E402


def closed_loops(models: list[MetricModel], window: Window, seconds: float) -> tuple[float, list[float]]:
    """Rows/s of one closed batch-1 loop per model, all started together; every row's time."""
    times: list[list[float]] = [[] for _ in models]
    start = threading.Barrier(len(models) + 1)
    stop_at = [0.0]

    def loop(index: int) -> None:
        model, own = models[index], times[index]
        start.wait()
        while (now := time.perf_counter()) < stop_at[0]:
            model.forward([window])
            own.append(time.perf_counter() - now)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(models))]
    for thread in threads:
        thread.start()
    stop_at[0] = time.perf_counter() + seconds
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    every = [t for own in times for t in own]
    return len(every) / elapsed, every


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "artifact", type=Path, nargs="?", default=ROOT / "repository" / "context_adherence" / "2"
    )
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--instances", type=int, default=0, help="default: the usable CPUs")
    parser.add_argument("--p99-budget-ms", type=float, default=100.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    cpus = usable_cpus()
    count = args.instances or cpus
    one_thread = MetricModel.load(args.artifact, intra_op_threads=1, check_layout=False)
    all_threads = MetricModel.load(args.artifact, intra_op_threads=cpus, check_layout=False)
    several = [one_thread] + [one_thread.another_instance() for _ in range(count - 1)]
    (encoded,) = one_thread.encode([item_of_tokens(one_thread, args.tokens)])
    assert isinstance(encoded, EncodedItem)
    window = encoded.windows[0]
    configs = {
        "1 instance x 1 thread": [one_thread],
        f"1 instance x {cpus} threads": [all_threads],
        f"{count} instances x 1 thread": several,
    }
    for models in configs.values():  # warm-up
        closed_loops(models, window, 1.0)
    rates: dict[str, list[float]] = {name: [] for name in configs}
    service: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.rounds):
        for name, models in configs.items():
            rate, every = closed_loops(models, window, args.seconds)
            rates[name].append(rate)
            service[name].extend(every)
    names = list(configs)
    base, wide, multi = (statistics.median(rates[n]) for n in names)
    efficiency = multi / (count * base)
    budget = args.p99_budget_ms / 1000
    # Per-row service time of one instance when every instance is busy: what each core sees.
    busy_service = np.asarray(service[names[2]])
    projection = {
        str(cores): round(highest_rate_within(busy_service, budget, servers=cores), 1)
        for cores in (count, 8, 32)
    }
    # The same budget on this machine with one instance using every thread (the default).
    one_wide = round(highest_rate_within(np.asarray(service[names[1]]), budget, servers=1), 1)
    result = {
        "artifact": str(args.artifact),
        "tokens": len(window),
        "usable_cpus": cpus,
        "rows_per_s": {n: [round(r, 1) for r in rates[n]] for n in names},
        "median_rows_per_s": {n: round(statistics.median(rates[n]), 1) for n in names},
        "instances_over_one_instance_one_thread": round(multi / base, 3),
        "instances_over_one_instance_all_threads": round(multi / wide, 3),
        "scaling_efficiency": round(efficiency, 3),
        "busy_instance_service_ms": {
            "p50": round(float(np.percentile(busy_service, 50)) * 1000, 2),
            "p99": round(float(np.percentile(busy_service, 99)) * 1000, 2),
        },
        "projected_rate_within_p99_budget": projection,
        "one_instance_all_threads_rate_within_p99_budget": one_wide,
        "p99_budget_ms": args.p99_budget_ms,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
