"""The event loop's time for one request through the scheduler, the model taken out.

On one core the event loop's time per request is taken from inference (docs/benchmarks.md,
"The rate within budget by the median step"): this times what the scheduler adds. One request
at a time goes through `BatchScheduler.submit` to a `ThreadRunner` whose predict answers at
once, and back (admission, the queue, a worker's turn, the hop to the inference thread and
back, the cost estimate, the fan-out), with the served observer writing its Prometheus series.
For reference, the least any server with an inference thread does: `run_in_executor` to a
one-thread pool and back. Both in turn, `--rounds` times, in this process; per request the
median round's microseconds (the process's CPU time, which on one pinned core is the wall time).
Pin it to one core (`taskset -c 1`) as the server is. Not a test: figures go into notes and docs.

    taskset -c 1 python bench/scheduler_turnaround.py
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.batching.clock import MonotonicClock  # noqa: E402
from service.batching.policy import Priority  # noqa: E402
from service.batching.runner import ThreadRunner  # noqa: E402
from service.batching.scheduler import BatchScheduler  # noqa: E402
from service.config import Settings  # noqa: E402
from service.metrics import ServerMetrics  # noqa: E402
from service.runtime.encoding import Window  # noqa: E402

TOKENS = 128
ROW = np.array([0.3, 0.7], np.float32)


def answer_at_once(windows: Sequence[Window]) -> np.ndarray:
    return np.stack([ROW for _ in windows])


async def per_request_us(requests: int, one: Callable[[], Awaitable[object]]) -> float:
    start = time.process_time()
    for _ in range(requests):
        await one()
    return 1e6 * (time.process_time() - start) / requests


async def measure(requests: int, rounds: int) -> dict[str, list[float]]:
    settings = Settings()
    limits = dataclasses.replace(settings.batching.limits(), max_batch_rows=1)  # as calibrated here
    scheduler = BatchScheduler(
        [ThreadRunner(answer_at_once, "turnaround")],
        clock=MonotonicClock(),
        limits=limits,
        admission=settings.admission.limits(),
        observer=ServerMetrics(CollectorRegistry()).observer("turnaround"),
    )
    scheduler.cost_per_token_s = 1e-5
    scheduler.start()
    pool = ThreadPoolExecutor(max_workers=1)
    loop = asyncio.get_running_loop()
    windows = [Window(input_ids=np.ones(TOKENS, np.int64), token_type_ids=np.zeros(TOKENS, np.int64))]

    def through_scheduler() -> Awaitable[object]:
        return scheduler.submit(windows, Priority.OBSERVABILITY, time.monotonic() + 10.0)

    def bare_hop() -> Awaitable[object]:
        return loop.run_in_executor(pool, answer_at_once, windows)

    figures: dict[str, list[float]] = {"scheduler": [], "bare_hop": []}
    await per_request_us(requests // 10, through_scheduler)  # warm
    await per_request_us(requests // 10, bare_hop)
    for _ in range(rounds):
        figures["scheduler"].append(await per_request_us(requests, through_scheduler))
        figures["bare_hop"].append(await per_request_us(requests, bare_hop))
    await scheduler.stop()
    pool.shutdown()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=5000, help="per round and side")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if args.requests < 10 or args.rounds < 1:
        parser.error("--requests must be at least 10 and --rounds at least 1")
    figures = asyncio.run(measure(args.requests, args.rounds))
    medians = {side: round(statistics.median(us), 1) for side, us in figures.items()}
    print(json.dumps({"per_request_us": medians, "rounds_us": figures,
                      "scheduler_beyond_bare_hop_us": round(medians["scheduler"] - medians["bare_hop"], 1)},
                     indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
