"""lunaserve against the floor server and the ideal queue on identical arrivals, interleaved.

A capacity search compares servers through whichever steps happen to pass, and two searches run
minutes apart also compare the machine's moods (the same step's p99 moved by 25 ms between two
rounds here). This runs the same steps (rate, seed: the same arrivals and items) on lunaserve and
on `bench/serving_floor.py` in turn, round after round, and feeds each step's arrivals to the
ideal FIFO queue of the runtime's measured service times: per step, the p99 of each server, the
ideal's, and the difference between the two servers, which the machine's drift hits alike.

    python bench/paired_steps.py --rates 13.8 17 --seeds 2 1 --rounds 2
    python bench/paired_steps.py --grid --rates 12 13.5 15 16.5 18 --seeds 1 2 3

With `--grid` every rate runs with every seed, and each of the three (lunaserve, the floor, the
ideal) gets a rate within the budget that one step's luck cannot decide: where the median p99
of its steps at each rate, made monotone in the rate, crosses the budget (interpolated between
the grid's rates). The
ideal's is given twice: on the very steps the servers ran, and over many more seeds of the same
draws (simulation only), which is what one step's luck averages to.

Placed as server_load (server CPUs, one ONNX thread per CPU; generator on the others). Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.floor_server import FloorServer, floor_request  # noqa: E402
from bench.server_load import (  # noqa: E402
    METRIC,
    MeasuredService,
    benchmarked_version,
    length_mix,
    lunaserve_request,
    offline_ceiling,
    open_loop,
    schedule,
)
from loadtest.placement import place  # noqa: E402
from loadtest.server import LocalServer  # noqa: E402
from service.runtime.classifier import MetricModel  # noqa: E402


def median_crossing(p99_by_rate: Mapping[float, Sequence[float]], budget_ms: float) -> float | None:
    """The rate at which the median p99 of the steps at each rate crosses `budget_ms`.

    A p99 grows with the rate, but the medians of a few 600-request steps need not (this
    machine measured 101.0 then 92.2 ms a rate higher): the medians are first made monotone
    by pooling each run of rates that falls (least squares, pool-adjacent-violators), then
    interpolated linearly between the last rate within the budget and the first beyond it.
    None when the grid does not bracket it (every median within, or none)."""
    rates, medians = monotone_medians(p99_by_rate)
    for i, median in enumerate(medians):
        if median > budget_ms:
            if i == 0:
                return None
            low, high = medians[i - 1], median
            return rates[i - 1] + (rates[i] - rates[i - 1]) * (budget_ms - low) / (high - low)
    return None


def monotone(values: Sequence[float]) -> list[float]:
    """The non-decreasing sequence closest to `values` in least squares (pool-adjacent-violators)."""
    pools: list[list[float]] = []  # [mean, count]
    for value in values:
        pools.append([value, 1])
        while len(pools) > 1 and pools[-2][0] > pools[-1][0]:
            (mean_a, n_a), (mean_b, n_b) = pools.pop(-2), pools.pop()
            pools.append([(mean_a * n_a + mean_b * n_b) / (n_a + n_b), n_a + n_b])
    return [mean for mean, count in pools for _ in range(int(count))]


def monotone_medians(p99_by_rate: Mapping[float, Sequence[float]]) -> tuple[list[float], list[float]]:
    """The grid's rates in order and the median p99 at each, made monotone."""
    rates = sorted(p99_by_rate)
    return rates, monotone([statistics.median(p99_by_rate[r]) for r in rates])


def curve_at(p99_by_rate: Mapping[float, Sequence[float]], rps: float) -> float:
    """The monotone median p99 (as `median_crossing`'s) at `rps`, interpolated in the grid."""
    return float(np.interp(rps, *monotone_medians(p99_by_rate)))


def ideal_over_seeds(
    measured: MeasuredService, items: list[dict[str, str]], rates: Sequence[float], requests: int,
    seeds: int, budget_ms: float, max_extra: int = 20,
) -> dict[float, list[float]]:  # fmt: skip
    """The ideal queue's step p99 at each rate over `seeds` seeds of the servers' own draws,
    the grid carried on at its last spacing until the median step exceeds `budget_ms`."""
    rates = sorted(rates)
    spacing = rates[-1] - rates[-2] if len(rates) > 1 else rates[-1] / 10

    def steps_at(rps: float) -> list[float]:
        return [measured.p99_ms(schedule(items, rps, requests / rps, seed), seed) for seed in range(seeds)]

    curve = {rps: steps_at(rps) for rps in rates}
    for _ in range(max_extra):
        if statistics.median(curve[max(curve)]) > budget_ms:
            break
        rps = round(max(curve) + spacing, 3)
        curve[rps] = steps_at(rps)
    return curve


def crossings(
    steps: Sequence[Mapping[str, float]], ideal_seeds: Mapping[float, Sequence[float]], budget_ms: float
) -> dict[str, object]:
    """Each side's rate within `budget_ms` by the median step, and the servers' over the ideal's;
    and the same comparison in milliseconds, which one step's luck hits far less: each server's
    p99 over the ideal's on the very same arrivals (median over the steps), beside how much p99
    the ideal's own curve leaves a server for 0.95 of its rate."""
    by_rate: dict[str, dict[float, list[float]]] = {"lunaserve": {}, "floor": {}, "ideal": {}}
    for step in steps:
        for name, p99s in by_rate.items():
            p99s.setdefault(step["rps"], []).append(step[f"{name}_p99_ms"])
    rate = {name: median_crossing(p99s, budget_ms) for name, p99s in by_rate.items()}
    ideal_rate = rate["ideal_over_seeds"] = median_crossing(ideal_seeds, budget_ms)
    figures: dict[str, object] = {
        "median_p99_ms_by_rate": {
            name: {str(r): statistics.median(v) for r, v in sorted(p99s.items())}
            for name, p99s in {**by_rate, "ideal_over_seeds": ideal_seeds}.items()
        },
        "rate_within_budget_by_median_step": rate,
        "p99_over_ideal_same_arrivals_ms": {
            server: round(statistics.median(s[f"{server}_p99_ms"] - s["ideal_p99_ms"] for s in steps), 1)
            for server in ("lunaserve", "floor")
        },
    }
    if ideal_rate:
        figures["p99_a_server_may_add_for_0_95_ms"] = round(
            budget_ms - curve_at(ideal_seeds, 0.95 * ideal_rate), 1
        )
    for server in ("lunaserve", "floor"):
        for ideal in ("ideal", "ideal_over_seeds"):
            if rate[server] is not None and rate[ideal]:
                figures[f"{server}_over_{ideal}"] = round(rate[server] / rate[ideal], 3)  # type: ignore[operator]
    if rate["lunaserve"] is not None and rate["floor"]:
        figures["lunaserve_over_floor"] = round(rate["lunaserve"] / rate["floor"], 3)
    return figures


async def bench(args: argparse.Namespace) -> dict[str, object]:
    placement = place()
    threads = placement.server_threads
    folder = args.repository / METRIC / args.version
    if placement.pinned:
        os.sched_setaffinity(0, set(placement.server_cpus))
    model = MetricModel.load(folder, intra_op_threads=threads)
    items = length_mix(model, [64, 96, 128, 192, 256])
    service_s = offline_ceiling(model, items, 2, 256)["service_s"]  # each item's fastest of 3 passes
    assert isinstance(service_s, list)
    measured = MeasuredService(items, service_s)
    del model
    if placement.pinned:
        os.sched_setaffinity(0, set(placement.generator_cpus))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cpus = placement.server_cpus if placement.pinned else ()
    lunaserve = LocalServer(
        args.repository, args.out.with_suffix(".lunaserve.log"),
        ["--log_level", "warning", "--deadlines.max_timeout_ms", "60000", *args.server_arg],
        cpus=cpus, threads=threads,
    ).start()  # fmt: skip
    floor = FloorServer(folder, args.out.with_suffix(".floor.log"), cpus, threads)
    servers = {"lunaserve": (lunaserve.url, lunaserve_request), "floor": (floor.url, floor_request)}
    steps: list[dict[str, float]] = []
    try:
        for url, request in servers.values():  # warm-up, both idle on the server CPUs after it
            await open_loop(url, items, 10, 10, traffic_class="observability", timeout_ms=30_000, seed=0,
                            request=request)  # fmt: skip
        pairs = (
            list(itertools.product(args.rates, args.seeds)) if args.grid
            else list(zip(args.rates, args.seeds, strict=True))
        )  # fmt: skip
        for round_ in range(args.rounds):
            for index, (rps, seed) in enumerate(pairs):
                # who goes first alternates step by step and round by round: drift hits both alike
                order = list(servers) if (round_ + index) % 2 == 0 else list(servers)[::-1]
                step: dict[str, float] = {"round": round_ + 1, "rps": rps, "seed": seed}
                for name in order:
                    url, request = servers[name]
                    run = await open_loop(url, items, rps, args.requests / rps, traffic_class="observability",
                                          timeout_ms=30_000, seed=seed, request=request)  # fmt: skip
                    step[f"{name}_p50_ms"] = round(run.p(50), 1)
                    step[f"{name}_p99_ms"] = round(run.p(99), 1)
                    step["ideal_p99_ms"] = round(measured.p99_ms(run.schedule, seed), 1)
                step["lunaserve_minus_floor_p99_ms"] = round(
                    step["lunaserve_p99_ms"] - step["floor_p99_ms"], 1
                )
                print(json.dumps(step), flush=True)
                steps.append(step)
    finally:
        lunaserve.stop(60)
        floor.stop(60)
    differences = [s["lunaserve_minus_floor_p99_ms"] for s in steps]
    figures: dict[str, object] = {
        "metric": f"{METRIC}/{args.version}",
        "placement": placement.describe(),
        "requests_per_step": args.requests,
        "server_args": args.server_arg,
        "steps": steps,
        "median_lunaserve_minus_floor_p99_ms": statistics.median(differences),
    }
    if args.grid:
        ideal_seeds = ideal_over_seeds(
            measured, items, args.rates, args.requests, args.ideal_seeds, args.budget_ms
        )
        figures |= crossings(steps, ideal_seeds, args.budget_ms) | {"ideal_seeds": args.ideal_seeds}
    figures["service_s"] = service_s  # the ideal's service times (items in length_mix's order)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=ROOT / "repository")
    parser.add_argument("--version", help="default: the newest, as the server")
    parser.add_argument("--rates", type=float, nargs="+", default=[13.8, 17.0], help="req/s of each step")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[2, 1], help="the arrivals' seed of each step"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--grid", action="store_true", help="every rate with every seed; report each side's median-step rate"
    )
    parser.add_argument("--budget-ms", type=float, default=100.0, help="the p99 budget (--grid)")
    parser.add_argument("--ideal-seeds", type=int, default=200, help="seeds of the ideal's simulated steps")
    parser.add_argument("--requests", type=int, default=600, help="requests a step")
    parser.add_argument(
        "--server-arg", action="append", default=[], help="an extra `lunaserve serve` argument (repeat)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "paired_steps.json")
    args = parser.parse_args()
    if not args.grid and len(args.rates) != len(args.seeds):
        parser.error("give one --seeds value for each --rates value")
    args.version = benchmarked_version(parser, args.repository, args.version)
    figures = asyncio.run(bench(args))
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps({k: v for k, v in figures.items() if k not in ("steps", "service_s")}, indent=2))


if __name__ == "__main__":
    main()
