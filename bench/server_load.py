"""Server benchmark: offline ceiling, open-loop capacity, guardrail isolation, overload.

Runs everything in one go so the ratios compare numbers taken on the same machine in the same
minutes. Built on the sign-off's parts (`loadtest/`): CPU placement (`placement`: the server
and the load generator on separate CPUs when there are at least two), Poisson arrivals
(`arrivals`), per-request samples and their percentiles (`samples`), and the capacity step
search (`search`). The offline ceiling is measured with the server's thread count, on its CPUs.
The generator is aiohttp in one event loop rather than Locust: at these rates its per-request
cost must stay far below the server's.

    python bench/server_load.py --repository repository --out docs/benchmarks.json   # newest version
    python bench/server_load.py --quick --step-s 5 --out build/bench/quick.json   # a few minutes

Not a test: figures go into docs/benchmarks.md and closing notes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.floor_server import FloorServer, floor_request  # noqa: E402
from bench.queue_model import fifo_p99_s, fifo_sojourn_s, highest_rate_within  # noqa: E402
from loadtest.arrivals import arrival_offsets  # noqa: E402
from loadtest.placement import Placement, place  # noqa: E402
from loadtest.samples import Sample, SpanFigures, span_figures  # noqa: E402
from loadtest.search import Probe, step_search  # noqa: E402
from loadtest.server import LocalServer  # noqa: E402
from models.latency_probe import item_of_tokens  # noqa: E402
from service.registry import version_key  # noqa: E402
from service.runtime.classifier import MetricModel  # noqa: E402

METRIC = "context_adherence"
SLO_P99_S = 0.100


@dataclass
class RunResult:
    """One constant-rate run: a `loadtest.samples.Sample` per request (latency counted from its
    scheduled arrival, so a late send counts against the server as in an open loop) and the
    server's own queue and inference times of each answered one."""

    offered_rps: float
    duration_s: float
    started_at: float = 0.0  # wall clock of the first scheduled arrival
    samples: list[Sample] = field(default_factory=list)
    rejected_with_retry_after: int = 0
    server_ms: list[tuple[float, float]] = field(default_factory=list)  # (queue, inference) per ok
    steal_share: float | None = None  # CPU time the hypervisor gave to other guests meanwhile
    schedule: list[tuple[float, dict[str, str]]] = field(default_factory=list)  # (offset s, item) sent

    @property
    def figures(self) -> SpanFigures:
        return span_figures(self.samples, self.started_at, self.started_at + self.duration_s)

    @property
    def achieved_rps(self) -> float:
        return self.figures.achieved_qps

    @property
    def sent(self) -> int:
        return len(self.samples)

    @property
    def rejected_503(self) -> int:
        return sum(s.status == 503 for s in self.samples)

    @property
    def other_errors(self) -> int:
        return sum(s.status not in (200, 503) for s in self.samples)

    def p(self, q: float) -> float:
        figures = self.figures
        value = {50: figures.p50_ms, 95: figures.p95_ms, 99: figures.p99_ms}[int(q)]
        return float("nan") if value is None else value

    def tail(self, q: float = 99) -> dict[str, float]:
        """Where the time of the requests at or past the q-th percentile went, in mean ms: the
        scheduler queue and the forward pass (the server's timing headers) and everything else
        (HTTP, the event loop, the load generator)."""
        latency = np.asarray([s.latency_ms for s in self.samples if s.ok])
        if not latency.size or len(self.server_ms) != latency.size:  # a peer sends no timing headers
            return {}
        slow = latency >= np.percentile(latency, q)
        queue, infer = np.asarray(self.server_ms)[slow].T
        return {"queue_ms": round(float(queue.mean()), 2), "inference_ms": round(float(infer.mean()), 2),
                "other_ms": round(float((latency[slow] - queue - infer).mean()), 2)}  # fmt: skip

    def summary(self) -> dict[str, object]:
        figures = self.figures
        return {
            "offered_rps": round(self.offered_rps, 1), "achieved_rps": round(figures.achieved_qps, 1),
            "sent": figures.sent, "ok": figures.ok, "rejected_503": self.rejected_503,
            "rejected_with_retry_after": self.rejected_with_retry_after, "other_errors": self.other_errors,
            "p50_ms": round(self.p(50), 2), "p95_ms": round(self.p(95), 2), "p99_ms": round(self.p(99), 2),
            "p99_tail": self.tail(99), "steal_share": self.steal_share,
        }  # fmt: skip


def length_mix(model: MetricModel, lengths: list[int], seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    cache = {n: item_of_tokens(model, n) for n in sorted(set(lengths))}
    return [cache[rng.choice(lengths)] for _ in range(512)]


def offline_ceiling(
    model: MetricModel, items: list[dict[str, str]], repeats: int = 2, count: int = 256
) -> dict[str, object]:
    """Items/s of the runtime alone at the best of a few batch sizes (length-sorted batches),
    and each item's own time alone, the fastest of a few passes (the ideal queue's service
    times: one noisy pass would put its spikes into 1% of the simulated jobs, i.e. the p99)."""
    best: dict[str, float] = {}
    for rows in (1, 4, 8, 16, 32):
        model.score(items[:64], max_batch_rows=rows, max_batch_tokens=rows * 512)
        for _ in range(repeats):  # the fastest pass: machine noise only ever slows one down
            start = time.perf_counter()
            model.score(items[:count], max_batch_rows=rows, max_batch_tokens=rows * 512)
            best[str(rows)] = max(best.get(str(rows), 0.0), count / (time.perf_counter() - start))
    passes = []
    for _ in range(repeats + 1):  # each item's fastest time alone, as for the batches above
        times = []
        for item in items[:count]:
            start = time.perf_counter()
            model.score([item])
            times.append(time.perf_counter() - start)
        passes.append(times)
    service_s = np.min(passes, axis=0).tolist()
    return {"best_items_per_s": max(best.values()), "by_batch_rows": best, "service_s": service_s,
            "service_passes_s": passes}  # fmt: skip


def lunaserve_request(
    item: dict[str, str], traffic_class: str, timeout_ms: float
) -> tuple[str, dict[str, object]]:
    """The path and JSON body of one scoring request to lunaserve."""
    body = {"items": [item], "traffic_class": traffic_class, "timeout_ms": timeout_ms}
    return f"/v1/metrics/{METRIC}/score", body


def schedule(
    items: list[dict[str, str]], rps: float, duration_s: float, seed: int
) -> list[tuple[float, dict[str, str]]]:
    """The arrival offsets (Poisson at `rps` over `duration_s`) and the item each sends: what
    `open_loop` sends, drawn the same way, so a step can be replayed through the ideal queue."""
    rng = random.Random(seed)
    return [(offset, rng.choice(items)) for offset in arrival_offsets(rng, rps, duration_s)]


async def open_loop(
    url: str, items: list[dict[str, str]], rps: float, duration_s: float, *, traffic_class: str,
    timeout_ms: float, seed: int, request: Callable[..., tuple[str, object]] = lunaserve_request,
) -> RunResult:  # fmt: skip
    """Poisson arrivals at `rps` for `duration_s` (`loadtest.arrivals`); each request is sent at
    its scheduled time. `request` shapes it (another server's path and body: bench/peers).

    aiohttp rather than httpx: on the generator's one CPU httpx spends ~1.5 ms per request
    against aiohttp's ~0.3 ms, and that time (and its queueing in a burst) would count as server
    latency."""
    result = RunResult(
        offered_rps=rps, duration_s=duration_s, schedule=schedule(items, rps, duration_s, seed)
    )
    before = _cpu_times()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as client:

        async def one(item: dict[str, str], due: float) -> None:
            path, body = request(item, traffic_class, timeout_ms)
            lag_ms = max(0.0, (time.perf_counter() - due) * 1000)
            try:
                async with client.post(path, json=body) as response:
                    await response.read()
                    status, headers = response.status, response.headers
            except (aiohttp.ClientError, TimeoutError):
                status, headers = 0, None
            latency_ms = (time.perf_counter() - due) * 1000
            sent_at = result.started_at + (due - start) + lag_ms / 1000
            result.samples.append(Sample(sent_at, latency_ms, status, lag_ms, 0, 0))
            if status == 200 and headers is not None and "x-queue-time-ms" in headers:
                result.server_ms.append(
                    (float(headers["x-queue-time-ms"]), float(headers["x-inference-time-ms"]))
                )
            elif status == 503 and headers is not None:
                result.rejected_with_retry_after += "retry-after" in headers

        tasks = []
        result.started_at = time.time()
        start = time.perf_counter()
        for offset, item in result.schedule:
            delay = start + offset - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(item, start + offset)))
        await asyncio.gather(*tasks)
    result.steal_share = _steal_share(before, _cpu_times())
    return result


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as info:
            models = (line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
            return next(models, None)
    except OSError:
        return None


def _cpu_times() -> list[int] | None:
    """The machine's CPU time counters (/proc/stat's first line), None where there are none."""
    try:
        with open("/proc/stat") as stat:
            return [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None


def _steal_share(before: list[int] | None, after: list[int] | None) -> float | None:
    """Share of CPU time stolen by the hypervisor between two readings: a shared machine's
    noise, recorded beside each step so a run's outliers can be told from the server's."""
    if not before or not after or len(before) < 8:
        return None
    delta = [a - b for a, b in zip(after, before, strict=True)]
    total = sum(delta[:8])
    return round(delta[7] / total, 4) if total else None


def search_rates(
    step: Callable[[float, int], Probe], start_rps: float, ceiling: float, max_steps: int
) -> None:
    """The capacity search the server and the ideal queue both go through: `step(rps, seed)`
    runs the k-th step (seed k) at `rps` and says whether it passed."""
    seeds = iter(range(1, max_steps + 1))
    step_search(
        lambda rps: step(rps, next(seeds)),
        start_rps, growth=1.25, resolution=0.05, max_steps=max_steps, max_qps=1.1 * ceiling,
    )  # fmt: skip


def step_seconds(rps: float, step_s: float, min_requests: int) -> float:
    return max(step_s, min_requests / rps)


async def capacity_search(
    url: str, items: list[dict[str, str]], ceiling: float, step_s: float, max_steps: int = 8,
    budget_s: float = SLO_P99_S, start_rps: float | None = None, min_requests: int = 0,
    request: Callable[..., tuple[str, object]] = lunaserve_request,
) -> list[RunResult]:  # fmt: skip
    """`loadtest.search.step_search` from `start_rps` (default half the ceiling): a step passes
    when its p99 is within the budget (100 ms) with no error and no 503; the answer is the highest
    rate achieved by a passing step. The search divides by at most 1.25^6 below its start, so a
    start far above the answer never reaches it: `bench` starts at the ideal queue's rate. A
    step lasts `step_s`, or long enough to send `min_requests` at its rate."""
    runs: list[RunResult] = []
    loop = asyncio.get_running_loop()

    def probe(rps: float, seed: int) -> Probe:
        run = asyncio.run_coroutine_threadsafe(
            open_loop(url, items, rps, step_seconds(rps, step_s, min_requests), traffic_class="observability",
                      timeout_ms=30_000, seed=seed, request=request),
            loop,
        ).result()  # fmt: skip
        runs.append(run)
        print(f"  {rps / ceiling:.0%} of ceiling: {run.summary()}", flush=True)
        passed = run.p(99) <= budget_s * 1000 and run.other_errors == 0 and run.rejected_503 == 0
        return Probe(rps, passed, p99_ms=run.p(99), achieved_qps=run.achieved_rps)

    await asyncio.to_thread(search_rates, probe, start_rps or 0.5 * ceiling, ceiling, max_steps)
    return runs


class MeasuredService:
    """The runtime's measured service times by item (each item's fastest pass, as the ideal
    queue's): what the ideal queue serves a replayed step's arrivals with."""

    def __init__(self, items: list[dict[str, str]], service_s: list[float]) -> None:
        self.by_item: dict[str, list[float]] = {}
        for item, seconds in zip(items, service_s, strict=False):
            self.by_item.setdefault(_key(item), []).append(seconds)

    def p99_ms(self, plan: list[tuple[float, dict[str, str]]], seed: int) -> float:
        """p99 time in system of the ideal FIFO queue fed exactly `plan`'s arrivals and items."""
        rng = np.random.default_rng(seed)
        arrive = np.asarray([offset for offset, _ in plan])
        service = np.asarray([rng.choice(self.by_item[_key(item)]) for _, item in plan])
        return 1000 * float(np.percentile(fifo_sojourn_s(arrive, service), 99))


def _key(item: dict[str, str]) -> str:
    return json.dumps(item, sort_keys=True)


def ideal_capacity_search(
    service: MeasuredService, items: list[dict[str, str]], ceiling: float, step_s: float, max_steps: int,
    budget_s: float, start_rps: float, min_requests: int,
) -> list[dict[str, float]]:  # fmt: skip
    """The server's capacity search run on the ideal queue instead: the same steps (rates chosen
    by the same rule, each step's arrivals and items drawn from the same seed, the same length)
    with no server at all. Its answer is what a zero-overhead server would have scored by this
    benchmark's own procedure, whose 600-request steps put a p99 on a few answers: the search's
    luck is then the same on both sides of the ratio."""
    steps: list[dict[str, float]] = []

    def probe(rps: float, seed: int) -> Probe:
        seconds = step_seconds(rps, step_s, min_requests)
        plan = schedule(items, rps, seconds, seed)
        p99_ms = service.p99_ms(plan, seed)
        achieved = len(plan) / seconds
        steps.append(
            {"offered_rps": round(rps, 2), "achieved_rps": round(achieved, 2), "p99_ms": round(p99_ms, 1)}
        )
        return Probe(rps, p99_ms <= budget_s * 1000, p99_ms=p99_ms, achieved_qps=achieved)

    search_rates(probe, start_rps, ceiling, max_steps)
    return steps


async def guardrail_isolation(
    url: str, items: list[dict[str, str]], capacity: float, step_s: float, min_requests: int = 0
) -> dict[str, object]:
    """Guardrail p99 at a low rate: idle, then while observability saturates the server."""
    guard_rps = 5.0
    seconds = max(step_s, min_requests / guard_rps)
    idle = await open_loop(url, items, guard_rps, seconds, traffic_class="guardrail", timeout_ms=1000, seed=1)
    noise = asyncio.create_task(
        open_loop(
            url, items, capacity * 1.5, seconds + 1, traffic_class="observability", timeout_ms=30_000, seed=2
        )
    )
    await asyncio.sleep(0.5)
    loaded = await open_loop(
        url, items, guard_rps, seconds, traffic_class="guardrail", timeout_ms=1000, seed=3
    )
    background = await noise
    return {
        "guardrail_idle": idle.summary(), "guardrail_under_load": loaded.summary(),
        "observability_background": background.summary(), "p99_ratio": loaded.p(99) / idle.p(99),
    }  # fmt: skip


async def overload(
    url: str, items: list[dict[str, str]], capacity: float, step_s: float
) -> dict[str, object]:
    """2x capacity with a 500 ms deadline: accepted p99 must stay within it; the rest 503 + Retry-After."""
    run = await open_loop(
        url, items, capacity * 2, step_s, traffic_class="observability", timeout_ms=500, seed=4
    )
    return {**run.summary(), "deadline_ms": 500, "accepted_p99_within_deadline": run.p(99) <= 500}


async def bench(args: argparse.Namespace) -> dict[str, object]:
    placement = place()  # as the sign-off: generator on the first quarter of the CPUs, server on the rest
    threads = placement.server_threads
    model = MetricModel.load(args.repository / METRIC / args.version, intra_op_threads=threads)
    if placement.pinned:
        # measure the ceiling on the server's CPUs with the server's threads
        os.sched_setaffinity(0, set(placement.server_cpus))
    mixes = {"64-256": length_mix(model, [64, 96, 128, 192, 256])}
    if not args.quick:
        mixes["512"] = length_mix(model, [512])
    repeats, count = (1, 128) if args.quick else (2, 256)
    ceilings = {name: offline_ceiling(model, items, repeats, count) for name, items in mixes.items()}
    service_s = np.asarray(ceilings["64-256"].pop("service_s"))
    every_pass_s = np.asarray(ceilings["64-256"].pop("service_passes_s")).ravel()
    for other in ceilings.values():
        other.pop("service_s", None)
        other.pop("service_passes_s", None)
    measured = MeasuredService(mixes["64-256"], service_s.tolist())
    print("offline ceiling:", json.dumps(ceilings), flush=True)
    budget_s = args.budget_ms / 1000
    ideal = highest_rate_within(service_s, budget_s)
    ideal_every_pass = highest_rate_within(every_pass_s, budget_s)
    print(
        f"ideal FIFO queue on the runtime's service times: {ideal:.1f} req/s within p99 {args.budget_ms:g} ms"
    )
    if placement.pinned:
        os.sched_setaffinity(0, set(placement.generator_cpus))
    del model
    args.out.parent.mkdir(parents=True, exist_ok=True)
    server = LocalServer(
        args.repository, args.out.with_suffix(".server.log"),
        ["--log_level", "warning", "--deadlines.max_timeout_ms", "60000", *args.server_arg],
        cpus=placement.server_cpus if placement.pinned else (), threads=threads,
    ).start()  # fmt: skip
    url = server.url
    try:
        mix = mixes["64-256"]
        ceiling = float(ceilings["64-256"]["best_items_per_s"])  # type: ignore[arg-type]
        # from the ideal queue's rate, the best any server can do within the budget (the ratio
        # the target is stated in); half the ceiling where no rate meets the budget
        runs = []
        max_steps = 5 if args.quick else 8
        start_rps = ideal if ideal > 0 else 0.5 * ceiling
        if args.capacity is None:
            runs = await capacity_search(
                url, mix, ceiling, args.step_s, max_steps=max_steps, budget_s=budget_s,
                start_rps=start_rps, min_requests=args.min_requests,
            )  # fmt: skip
        within = [
            r for r in runs if r.p(99) <= budget_s * 1000 and r.other_errors == 0 and r.rejected_503 == 0
        ]
        sustainable = args.capacity or max((r.achieved_rps for r in within), default=0.0)
        isolation = await guardrail_isolation(
            url, mix, max(sustainable, ceiling * 0.5), args.step_s, args.min_requests
        )
        print("guardrail isolation:", json.dumps(isolation), flush=True)
        over = await overload(url, mix, max(sustainable, ceiling * 0.5), args.step_s)
        print("overload:", json.dumps(over), flush=True)
        scrape = httpx.get(url + "/metrics").text
    finally:
        server.stop(60)
    padding = _padding(scrape)
    floor = None
    if args.floor and args.capacity is None:
        floor = await floor_capacity(args, placement, mix, ceiling, max_steps, budget_s, start_rps)
        floor["p99_over_ideal"] = against_ideal(floor.pop("runs"), service_s, measured)
    same_steps: list[dict[str, float]] = []
    same_rate = None  # the ideal queue's answer to the same search
    if args.capacity is None:
        same_steps = ideal_capacity_search(
            measured, mix, ceiling, args.step_s, max_steps, budget_s, start_rps, args.min_requests
        )
        same_rate = max(
            (st["achieved_rps"] for st in same_steps if st["p99_ms"] <= budget_s * 1000), default=0.0
        )
    if floor is not None:
        floor["over_ideal"] = floor["sustainable_rps_within_budget"] / ideal
        floor["over_ideal_same_search"] = (
            floor["sustainable_rps_within_budget"] / same_rate if same_rate else None
        )
    return {
        "metric": f"{METRIC}/{args.version}",
        "machine": {
            "cpu_model": _cpu_model(),
            "cpus": os.cpu_count(),
            "placement": placement.describe(),
            "threads": threads,
        },
        "offline_ceiling": ceilings,
        "capacity_runs": [r.summary() for r in runs],
        "p99_budget_ms": args.budget_ms,
        "step_s": args.step_s,
        "min_requests_per_step": args.min_requests,
        "sustainable_rps_within_budget": sustainable,  # within p99_budget_ms (or --capacity as given)
        "capacity_given": args.capacity,
        "server_args": args.server_arg,
        # the same rates through the ideal queue: the server's p99 over the ideal's, per step
        "server_p99_over_ideal_at_the_same_rate": against_ideal(runs, service_s, measured),
        "sustainable_over_ceiling": None if args.capacity else sustainable / ceiling,
        "ideal_queue": {
            "rate_p99_100ms": ideal,
            "over_ceiling": ideal / ceiling,
            "mean_service_ms": float(service_s.mean() * 1000),
            "server_over_ideal": None if args.capacity else sustainable / ideal,
            # the same search (rates, seeds, step lengths) on the ideal queue: the ratio the
            # search's own luck cancels out of (docs/benchmarks.md, "Server against the ideal")
            "same_search": {"rate_p99_100ms": same_rate, "steps": same_steps},
            "server_over_ideal_same_search": sustainable / same_rate if same_rate else None,
            # fed every measured pass rather than each item's fastest: what typical runtime
            # speed (no server at all) reaches against the ideal above
            "rate_p99_100ms_every_pass": ideal_every_pass,
        },
        "guardrail_isolation": isolation,
        "overload_2x": over,
        # the same search on bench/serving_floor.py (--floor): the least a Python server can do
        "floor": floor,
        "padding_fraction": padding,
    }


async def floor_capacity(
    args: argparse.Namespace, placement: Placement, mix: list[dict[str, str]], ceiling: float,
    max_steps: int, budget_s: float, start_rps: float,
) -> dict[str, Any]:  # fmt: skip
    """The capacity search (same rates rule, seeds and steps) on the floor server, placed as
    lunaserve was: how far below the ideal a server doing nothing but the work itself lands."""
    cpus = placement.server_cpus if placement.pinned else ()
    log = args.out.with_suffix(".floor.log")
    floor = FloorServer(args.repository / METRIC / args.version, log, cpus, placement.server_threads)
    try:
        await open_loop(floor.url, mix, 10, 10, traffic_class="observability", timeout_ms=30_000, seed=0,
                        request=floor_request)  # warm-up  # fmt: skip
        runs = await capacity_search(
            floor.url, mix, ceiling, args.step_s, max_steps=max_steps, budget_s=budget_s,
            start_rps=start_rps, min_requests=args.min_requests, request=floor_request,
        )  # fmt: skip
    finally:
        floor.stop(60)
    within = [r.achieved_rps for r in runs if r.p(99) <= budget_s * 1000 and r.other_errors == 0]
    sustainable = max(within, default=0.0)
    return {
        "capacity_runs": [r.summary() for r in runs],
        "sustainable_rps_within_budget": sustainable,
        "runs": runs,
    }


def against_ideal(
    runs: list[RunResult], service_s: np.ndarray, measured: MeasuredService
) -> list[dict[str, float]]:
    """Each step's p99 beside the ideal queue's, fed by the same service times: in the long run
    at the same achieved rate, and fed the step's own arrivals and items (the pairing that takes
    the arrivals' luck out). Defined even where no rate meets the budget (a slow CPU), unlike
    the ratio of the two highest rates within it."""
    rows = []
    for k, run in enumerate(runs, start=1):  # the k-th step drew its arrivals from seed k
        if run.achieved_rps <= 0 or run.achieved_rps * float(service_s.mean()) >= 0.98:
            continue  # at utilisation ~1 the ideal queue never settles
        ideal_ms = 1000 * fifo_p99_s(service_s, run.achieved_rps)
        same_ms = measured.p99_ms(run.schedule, k)
        rows.append({"achieved_rps": round(run.achieved_rps, 2), "server_p99_ms": round(run.p(99), 1),
                     "ideal_p99_ms": round(ideal_ms, 1), "ratio": round(run.p(99) / ideal_ms, 2),
                     "ideal_p99_ms_same_arrivals": round(same_ms, 1),
                     "ratio_same_arrivals": round(run.p(99) / same_ms, 2)})  # fmt: skip
    return rows


def _padding(scrape: str) -> float | None:
    """Share of the padded tokens run through the model that were padding (Prometheus counters)."""
    totals = {"lunaserve_batch_real_tokens_total": 0.0, "lunaserve_batch_padded_tokens_total": 0.0}
    for family in text_string_to_metric_families(scrape):
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
    real, padded = totals.values()
    return 1 - real / padded if padded else None


def benchmarked_version(parser: argparse.ArgumentParser, repository: Path, asked: str | None) -> str:
    """The version of the benchmarked metric to measure: `asked`, else the newest in `repository`
    (the one a server serves); a usage error naming the folder when there is none."""
    versions = [p.name for p in (repository / METRIC).glob("*") if (p / "manifest.json").is_file()]
    if asked is not None and asked not in versions:
        parser.error(f"{repository / METRIC / asked}: no such version (no manifest.json there)")
    if not versions:
        parser.error(f"{repository}: no {METRIC} version with a manifest.json")
    return asked or max(versions, key=version_key)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=ROOT / "repository")
    parser.add_argument(
        "--version", help="the metric's version to measure (default: the newest, which the server serves)"
    )
    parser.add_argument(
        "--step-s", type=float, default=30.0,
        help="seconds per load step (a p99 wants 1000+ requests: shorter steps make it noisy)",
    )  # fmt: skip
    parser.add_argument(
        "--min-requests", type=int, default=0,
        help="lengthen a capacity or guardrail step to send at least this many requests: where the"
        " budget allows only a few requests a second, a 30 s step's p99 is its largest answer",
    )  # fmt: skip
    parser.add_argument(
        "--quick", action="store_true",
        help="a few minutes: ceiling on the 64-256 mix only, one pass of 128 items, at most 5 search"
        " steps (use with --step-s 5; for same-run ratios, not for docs/benchmarks.md figures)",
    )  # fmt: skip
    parser.add_argument(
        "--budget-ms", type=float, default=SLO_P99_S * 1000,
        help="the p99 budget of the capacity search and the ideal queue (100 ms; a slower CPU may"
        " need more: where the runtime's own service times exceed it, no server can meet it)",
    )  # fmt: skip
    parser.add_argument(
        "--capacity", type=float,
        help="skip the capacity search and take this many req/s as the sustainable rate that the"
        " guardrail and overload steps are set from (to measure those alone, e.g. with --server-arg)",
    )  # fmt: skip
    parser.add_argument(
        "--server-arg", action="append", default=[],
        help="an extra `lunaserve serve` argument (repeat), e.g. --server-arg=--guardrail_instances=1",
    )  # fmt: skip
    parser.add_argument(
        "--floor", action="store_true",
        help="after lunaserve, run the same capacity search on bench/serving_floor.py (a bare ASGI"
        " server doing only the work): how far below the ideal any Python server lands here",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "server_load.json")
    args = parser.parse_args()
    args.version = benchmarked_version(parser, args.repository, args.version)
    figures = asyncio.run(bench(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps({k: v for k, v in figures.items() if k != "capacity_runs"}, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
