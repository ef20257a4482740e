"""Overload: offered 2.5x what it can serve, the server sheds with 503 and keeps serving near capacity.

Pass criteria, against a live server on a tiny metric whose cost grows with its tokens as an
encoder's does (short, long and windowed items; one request in four guardrail; every request with
a 500 ms timeout; the queue bounded at 100 requests): its capacity is measured first (16 clients
in a closed loop), then it gets Poisson arrivals at a quarter of that (the baseline), at 2.5x it
for `LUNASERVE_RELIABILITY_OVERLOAD_S` seconds (4 in CI, 20 in the longer run), and at a quarter
again. During the overload every answer is 200, or 503 with Retry-After (no 422, no other error,
no dropped connection); the queue depth and queued tokens, scraped every 0.25 s, stay within their
bounds; and the server's RSS after the run is within 10% of before the overload. Figures: goodput
(answers per second during the overload) over capacity, accepted p99 against the timeout (counted
from when the request was sent, as `timeout_ms` is; the generator's own lag in sending, at ~400
req/s from one Python loop, is shown beside it), and how long after the load drops a 1-second
window's p99 is back within 1.5x the baseline's plus 5 ms for good. In the longer run
(`LUNASERVE_RELIABILITY_STRICT=1`) those are pass criteria too: goodput >= 0.8 of capacity,
accepted p99 within the timeout, p99 back within 10 s. CI, on shared machines, records them
without judging (speed is judged by benchmarks, never by timed assertions in CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import aiohttp
import numpy as np
import pytest

from loadtest.arrivals import arrival_offsets
from loadtest.server import LocalServer
from tests.conftest import counting_spec
from tests.e2e.test_server_e2e import metric_value
from tests.tiny_models import write_counting_artifact

OVERLOAD_S = float(os.environ.get("LUNASERVE_RELIABILITY_OVERLOAD_S", "4"))
STRICT = os.environ.get("LUNASERVE_RELIABILITY_STRICT") == "1"
PHASE_S = 3.0 if OVERLOAD_S <= 5 else 6.0  # capacity and baseline
RECOVERY_S = 6.0 if OVERLOAD_S <= 5 else 15.0
TIMEOUT_MS = 500
MAX_QUEUE_REQUESTS = 100
BUSY = 64  # per-token MatMuls: a request costs a few ms, as a small encoder's does
SCORE = "/v1/metrics/context_adherence/score"
ITEMS = [  # ~10, ~60 and ~150 tokens (max_tokens 64: the last is read in three windows)
    {"output": "good good", "context": "the city " * n} for n in (4, 28, 70)
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    root = tmp_path_factory.mktemp("overload")
    (root / "work").mkdir()
    write_counting_artifact(root / "repo", counting_spec(), root / "work", busy_matmuls=BUSY)
    args = ["--log_level", "warning", "--admission.max_queue_requests", str(MAX_QUEUE_REQUESTS)]
    with LocalServer(root / "repo", root / "server.log", args) as running:
        yield running


@dataclass
class Answer:
    sent: float  # perf_counter when it was due
    seconds: float  # from when it was sent: what its timeout_ms promises
    status: int  # 0: no answer (connection error or client timeout)
    retry_after: bool
    lag: float = 0.0  # how late this generator sent it (its own event loop, at 400 req/s)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def body(rng: random.Random) -> dict[str, object]:
    traffic = "guardrail" if rng.random() < 0.25 else "observability"
    return {"items": [rng.choice(ITEMS)], "traffic_class": traffic, "timeout_ms": TIMEOUT_MS}


async def post(session: aiohttp.ClientSession, payload: dict[str, object], due: float) -> Answer:
    sent = time.perf_counter()
    try:
        async with session.post(SCORE, json=payload) as response:
            await response.read()
            status, retry_after = response.status, "retry-after" in response.headers
    except (aiohttp.ClientError, TimeoutError):
        status, retry_after = 0, False
    return Answer(due, time.perf_counter() - sent, status, retry_after, sent - due)


async def closed_loop(session: aiohttp.ClientSession, clients: int, seconds: float) -> float:
    """Answers per second with `clients` each sending its next request when the last is answered."""
    rng, end, answered = random.Random(1), time.perf_counter() + seconds, 0

    async def client() -> None:
        nonlocal answered
        while time.perf_counter() < end:
            payload = {**body(rng), "timeout_ms": 10_000}
            answer = await post(session, payload, time.perf_counter())
            assert answer.status == 200, answer
            answered += 1

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return answered / (time.perf_counter() - start)


async def open_loop(session: aiohttp.ClientSession, rate: float, seconds: float, seed: int) -> list[Answer]:
    """Poisson arrivals at `rate`, each sent when due whatever the server is doing."""
    rng, tasks, start = random.Random(seed), [], time.perf_counter()
    for offset in arrival_offsets(rng, rate, seconds):
        delay = start + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(post(session, body(rng), start + offset)))
    return list(await asyncio.gather(*tasks))


async def watch_queue(session: aiohttp.ClientSession, stop: asyncio.Event) -> dict[str, float]:
    """Scraped every 0.25 s until `stop`: the largest queue depth and queued tokens, and the
    range of admission's cost per token for waits (its lowest measured, for 422s, at the end)."""
    seen = {"depth": 0.0, "tokens": 0.0, "wait_low": float("inf"), "wait_high": 0.0, "idle": 0.0}
    while not stop.is_set():
        async with session.get("/metrics") as response:
            text = await response.text()

        def value(name: str, text: str = text, **labels: str) -> float:
            return metric_value(text, name, metric="context_adherence", **labels)

        wait = value("lunaserve_cost_per_token_seconds", reading="wait")
        seen = {
            "depth": max(seen["depth"], value("lunaserve_queue_depth")),
            "tokens": max(seen["tokens"], value("lunaserve_queued_tokens")),
            "wait_low": min(seen["wait_low"], wait),
            "wait_high": max(seen["wait_high"], wait),
            "idle": value("lunaserve_cost_per_token_seconds", reading="idle"),
        }
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)
    return seen


def p99_ms(answers: list[Answer]) -> float:
    ok = [a.seconds * 1000 for a in answers if a.status == 200]
    return float(np.percentile(ok, 99)) if ok else float("inf")


def window_p99s(answers: list[Answer], start: float) -> list[float]:
    """p99 (ms) of the requests sent in each second from `start`."""
    seconds = range(int(RECOVERY_S))
    return [p99_ms([a for a in answers if start + i <= a.sent < start + i + 1]) for i in seconds]


def recovery_s(p99s: list[float], bound_ms: float) -> float | None:
    """Seconds to the first 1-s window from which every window's p99 is within the bound."""
    for i in range(len(p99s)):
        if all(p <= bound_ms for p in p99s[i:]):
            return float(i)
    return None


async def run(server: LocalServer) -> dict[str, object]:
    assert server.process is not None
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(server.url, connector=connector, timeout=timeout) as session:
        await closed_loop(session, 4, 1.0)  # warm-up: the cost estimate learns the machine
        capacity = await closed_loop(session, 16, PHASE_S)
        baseline = await open_loop(session, capacity / 4, PHASE_S, seed=2)
        rss_before = rss_bytes(server.process.pid)
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_queue(session, stop))
        overload = await open_loop(session, capacity * 2.5, OVERLOAD_S, seed=3)
        stop.set()
        seen = await watcher
        dropped = time.perf_counter()
        recovery = await open_loop(session, capacity / 4, RECOVERY_S, seed=4)
        rss_after = rss_bytes(server.process.pid)
    bound_ms = 1.5 * p99_ms(baseline) + 5
    p99s = window_p99s(recovery, dropped)
    return {
        "capacity": capacity,
        "baseline": baseline,
        "overload": overload,
        "goodput": sum(a.status == 200 for a in overload) / OVERLOAD_S,
        "seen": seen,
        "rss": (rss_before, rss_after),
        "recovery_s": recovery_s(p99s, bound_ms),
        "recovery_p99s": p99s,
        "bound_ms": bound_ms,
    }


def test_overload_is_shed_with_503_and_goodput_stays_near_capacity(
    server: LocalServer, record_property: Callable[[str, object], None]
) -> None:
    figures = asyncio.run(run(server))
    overload: list[Answer] = figures["overload"]  # type: ignore[assignment]
    capacity: float = figures["capacity"]  # type: ignore[assignment]
    goodput: float = figures["goodput"]  # type: ignore[assignment]
    seen: dict[str, float] = figures["seen"]  # type: ignore[assignment]
    depth, tokens = seen["depth"], seen["tokens"]
    rss_before, rss_after = figures["rss"]  # type: ignore[misc]
    statuses = [a.status for a in overload]
    accepted_p99 = p99_ms(overload)
    recovered = figures["recovery_s"]
    record_property("capacity (answers/s, 16 clients closed loop)", round(capacity, 1))
    record_property("overload offered (req/s, s)", f"{capacity * 2.5:.1f} for {OVERLOAD_S:g}")
    record_property("overload answers 200 / 503 / other", f"{statuses.count(200)} / {statuses.count(503)}"
                    f" / {len(statuses) - statuses.count(200) - statuses.count(503)}")  # fmt: skip
    record_property("goodput over capacity (>= 0.8)", round(goodput / capacity, 2))
    record_property(f"accepted p99 from the send (ms, timeout {TIMEOUT_MS})", round(accepted_p99, 1))
    late = [dataclasses.replace(a, seconds=a.seconds + a.lag) for a in overload]
    record_property("accepted p99 from the scheduled arrival (ms)", round(p99_ms(late), 1))
    record_property(
        f"largest queue: requests (<= {MAX_QUEUE_REQUESTS}) / tokens",
        f"{depth:.0f} / {tokens:.0f}",
    )
    record_property(
        "cost per token during the overload (us): waits low-high / idle",
        f"{seen['wait_low'] * 1e6:.1f}-{seen['wait_high'] * 1e6:.1f} / {seen['idle'] * 1e6:.1f}",
    )
    record_property("RSS before / after (MB)", f"{rss_before / 2**20:.0f} / {rss_after / 2**20:.0f}")
    p99s: list[float] = figures["recovery_p99s"]  # type: ignore[assignment]
    record_property("p99 by second after the drop (ms)", " ".join(f"{p:.0f}" for p in p99s))
    record_property(
        "p99 back within baseline bound (s after the drop, <= 10)",
        "not within the run" if recovered is None else f"{recovered:g} (bound {figures['bound_ms']:.1f} ms)",
    )
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    assert all(a.retry_after for a in overload if a.status == 503)
    assert statuses.count(503) > 0  # it was overloaded: something had to be shed
    assert depth <= MAX_QUEUE_REQUESTS and tokens > 0
    assert abs(rss_after - rss_before) <= 0.10 * rss_before
    if STRICT:
        assert goodput >= 0.8 * capacity
        assert accepted_p99 <= TIMEOUT_MS
        assert recovered is not None and recovered <= 10
