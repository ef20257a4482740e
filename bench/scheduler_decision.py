"""What one batching decision costs with a long queue: the worker's turn, without the model.

A turn drops abandoned and late requests, reads the head of the queue, chooses a batch with
`policy.choose_batch` and takes it out of the queue (`service.batching.queue.RequestQueue`).
Its cost must not grow with the queue: a model runs a batch in milliseconds, so a turn that
reads every waiting window would cost more than the inference it schedules once thousands
wait. This bench keeps a queue at a fixed number of waiting windows (one per request, 10%
guardrail with 50-200 ms deadlines, the rest observability with 1-10 s, 16-512 tokens),
times each turn, refills what it took, and prints the figures per queue size. The mix is
harsher than admission allows (it keeps guardrail work ahead within reach of its deadlines):
the windows due within a long window's run time are the part of a turn that grows. For reference
it also times what each turn cost before the queue kept its order: the whole service order
rebuilt as a list and `policy.decide` over it, then `list.remove` per window taken.
Not a test: figures go into notes and docs.

    python bench/scheduler_decision.py                  # 1,000 / 10,000 / 100,000 windows
    python bench/scheduler_decision.py --sizes 10000 --turns 5000
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.batching.policy import Priority, QueuedWindow, choose_batch, decide  # noqa: E402
from service.batching.queue import RequestQueue, RequestResult  # noqa: E402
from service.config import BatchingSettings  # noqa: E402
from service.runtime.encoding import Window  # noqa: E402

COST_PER_TOKEN_S = 1e-4  # the scheduler's starting estimate: a 512-token window is due 51 ms early
LIMITS = BatchingSettings().limits()  # served defaults: 1024 padded tokens, 32 rows, 128 windows looked at
BUDGET_MS = 1.0


class Traffic:
    """Requests of one window each, with the mix described in the module docstring."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.loop = asyncio.new_event_loop()  # futures only; nothing runs on it
        self.windows = {n: Window(np.zeros(n, np.int64), np.zeros(n, np.int64)) for n in range(16, 513)}

    def request(self, now: float) -> tuple[Window, Priority, float]:
        rng = self.rng
        if rng.random() < 0.1:
            return self.windows[rng.randint(16, 512)], Priority.GUARDRAIL, now + rng.uniform(0.05, 0.2)
        return self.windows[rng.randint(16, 512)], Priority.OBSERVABILITY, now + rng.uniform(1.0, 10.0)

    def add(self, queue: RequestQueue, now: float) -> None:
        window, priority, deadline = self.request(now)
        future: asyncio.Future[RequestResult] = self.loop.create_future()
        queue.add([window], priority, deadline, now, future)


def turn(queue: RequestQueue, now: float) -> int:
    """One worker turn without the model; returns how many windows left the queue."""
    before = queue.windows
    queue.remove_abandoned()
    for request in queue.late(now, COST_PER_TOKEN_S):
        queue.remove(request)
    head, head_is_all = queue.head(LIMITS.lookahead_rows)
    decision = choose_batch(
        now, head, LIMITS, head_is_all=head_is_all, model_was_idle=False, cost_per_token_s=COST_PER_TOKEN_S
    )
    for request, _ in queue.take(decision.run):
        queue.remove(request)  # answered: one window per request here
    return before - queue.windows


def measure(size: int, turns: int, seed: int) -> list[float]:
    traffic, queue, now = Traffic(seed), RequestQueue(), 1000.0
    for _ in range(size):
        traffic.add(queue, now)
    seconds = []
    for _ in range(turns):
        now += 0.002  # a batch later
        start = time.perf_counter()
        gone = turn(queue, now)
        seconds.append(time.perf_counter() - start)
        for _ in range(gone):  # refill: the queue stays at `size`
            traffic.add(queue, now)
    return seconds


def measure_rebuilt_order(size: int, turns: int, seed: int) -> list[float]:
    """The turn before the queue kept its order: a list of the whole queue, decide, list.remove."""
    traffic, now, key = Traffic(seed), 1000.0, 0
    waiting: dict[int, QueuedWindow] = {}
    order: dict[Priority, list[tuple[float, int]]] = {p: [] for p in Priority}

    def add() -> None:
        nonlocal key
        window, priority, deadline = traffic.request(now)
        waiting[key] = QueuedWindow(key, len(window), priority, deadline, now, request=key)
        bisect.insort(order[priority], (deadline, key))
        key += 1

    for _ in range(size):
        add()
    seconds = []
    for _ in range(turns):
        now += 0.002
        start = time.perf_counter()
        queue = [waiting[k] for p in Priority for _, k in order[p]]
        decision = decide(now, queue, LIMITS, model_was_idle=False, cost_per_token_s=COST_PER_TOKEN_S)
        for k in (*decision.expired, *decision.run):
            window = waiting.pop(k)
            order[window.priority].remove((window.deadline, k))
        seconds.append(time.perf_counter() - start)
        for _ in range(len(decision.expired) + len(decision.run)):
            add()
    return seconds


def report(label: str, size: int, seconds: list[float]) -> float:
    """Print the figures of one run; returns its p99 in ms."""
    ms = sorted(s * 1000 for s in seconds)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    print(
        f"{label:<16} {size:>8,} windows  {len(ms):>6} turns  median {statistics.median(ms):7.3f} ms"
        f"  p99 {p99:7.3f} ms  max {ms[-1]:7.3f} ms"
    )
    return p99


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--turns", type=int, default=2_000, help="timed turns per size")
    parser.add_argument("--rebuilt-turns", type=int, default=200, help="timed turns of the reference")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"cost per token {COST_PER_TOKEN_S * 1e6:.0f} us; {LIMITS}")
    p99s = {size: report("heap queue", size, measure(size, args.turns, args.seed)) for size in args.sizes}
    for size in args.sizes:
        if args.rebuilt_turns:
            report("rebuilt order", size, measure_rebuilt_order(size, args.rebuilt_turns, args.seed))
    at = 10_000 if 10_000 in p99s else max(p99s)
    verdict = "within" if p99s[at] < BUDGET_MS else "OVER"
    print(f"{verdict} budget: p99 turn at {at:,} windows {p99s[at]:.3f} ms (budget {BUDGET_MS} ms)")
    return 0 if p99s[at] < BUDGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
