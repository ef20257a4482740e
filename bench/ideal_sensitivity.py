"""What the ideal queue's rate asks of a server, and how well a capacity search can tell.

`bench/server_load.py` states the server's target against an ideal FIFO queue fed by the
runtime's service times (each item's fastest pass). This measures, on this machine, three things
that decide what that ratio can mean:

1. fixed cost: the ideal rate within the p99 budget when every request costs `d` ms more (what
   serving work on the inference core does) or every pass is `x` times slower;
2. the runtime's own spread: the ideal rate fed every measured pass instead of the fastest, i.e.
   a server with no overhead at all that runs at the runtime's typical speed;
3. a step's luck: the p99 of one capacity-search step (600 requests by default) of the ideal
   queue itself, at fractions of its long-run rate, over many seeds: how often a zero-overhead
   server would fail a step it should pass.

    python bench/ideal_sensitivity.py --passes 7 --out build/bench/ideal_sensitivity.json

Measured on the server's CPUs with its thread count (as server_load's ceiling). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.queue_model import fifo_p99_s, highest_rate_within  # noqa: E402
from bench.server_load import METRIC, SLO_P99_S, benchmarked_version, length_mix  # noqa: E402
from loadtest.placement import place  # noqa: E402
from service.runtime.classifier import MetricModel  # noqa: E402


def measured_passes(model: MetricModel, items: list[dict[str, str]], passes: int) -> np.ndarray:
    """Seconds `MetricModel.score` takes for each item alone, one row per pass."""
    model.score(items[:32])  # warm
    times = np.empty((passes, len(items)))
    for p in range(passes):
        for i, item in enumerate(items):
            start = time.perf_counter()
            model.score([item])
            times[p, i] = time.perf_counter() - start
    return times


def step_p99s_ms(service_s: np.ndarray, rate: float, requests: int, seeds: int) -> np.ndarray:
    """The p99 of one `requests`-long step of the ideal queue at `rate`, for each of `seeds` seeds."""
    return np.array(
        [1000 * fifo_p99_s(service_s, rate, arrivals=requests, seed=seed) for seed in range(seeds)]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=ROOT / "repository")
    parser.add_argument("--version", help="default: the newest, as the server")
    parser.add_argument("--passes", type=int, default=7, help="passes over the items (the ideal takes 3)")
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--step-requests", type=int, default=600, help="requests in one search step")
    parser.add_argument("--seeds", type=int, default=400)
    parser.add_argument("--budget-ms", type=float, default=SLO_P99_S * 1000)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "ideal_sensitivity.json")
    args = parser.parse_args()
    version = benchmarked_version(parser, args.repository, args.version)
    placement = place()
    if placement.pinned:
        os.sched_setaffinity(0, set(placement.server_cpus))
    model = MetricModel.load(args.repository / METRIC / version, intra_op_threads=placement.server_threads)
    items = length_mix(model, [64, 96, 128, 192, 256])[: args.items]
    passes = measured_passes(model, items, args.passes)
    budget = args.budget_ms / 1000
    fastest = passes[:3].min(axis=0)  # the ideal's service times, as server_load takes them
    ideal = highest_rate_within(fastest, budget)

    def ratio(service_s: np.ndarray) -> float:
        return round(highest_rate_within(service_s, budget) / ideal, 3)

    figures = {
        "metric": f"{METRIC}/{version}",
        "placement": placement.describe(),
        "pass_mean_ms": [round(1000 * float(p.mean()), 2) for p in passes],
        "fastest_of_3_mean_ms": round(1000 * float(fastest.mean()), 2),
        "ideal_rps": round(ideal, 2),
        "fixed_cost_ms": {str(d): ratio(fastest + d / 1000) for d in (0.25, 0.5, 1.0, 1.5, 2.0)},
        "slower_passes": {str(x): ratio(fastest * x) for x in (1.01, 1.02, 1.05)},
        "every_pass": ratio(passes.ravel()),
        "median_pass": ratio(np.median(passes, axis=0)),
    }
    steps: dict[str, object] = {}
    for fraction in (0.85, 0.9, 0.95, 1.0):
        p99 = step_p99s_ms(fastest, ideal * fraction, args.step_requests, args.seeds)
        steps[str(fraction)] = {
            "median_p99_ms": round(float(np.median(p99)), 1),
            "p10_p90_ms": [round(float(v), 1) for v in np.percentile(p99, [10, 90])],
            "fails": round(float(np.mean(p99 > args.budget_ms)), 3),
        }
    figures["step_of_the_ideal_at_a_fraction_of_its_rate"] = steps
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
