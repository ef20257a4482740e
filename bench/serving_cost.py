"""Serving cost: the server's CPU time per request beyond what the runtime alone needs for it.

On one core, every millisecond the server spends outside the model (HTTP, JSON, validation,
the event loop, metrics) is a millisecond the next forward pass waits: the ideal queue of
`bench/server_load.py` has none of it. This measures that cost directly, with far less noise
than a capacity search: the server process's CPU seconds over a fixed number of requests at a
moderate rate (batch 1, no queue), minus what `MetricModel.score` takes for the same items
alone in this process (tokenise, forward, post-process), and minus nothing else. The forward
passes' own share comes from the server's Prometheus counters
(`lunaserve_batch_duration_seconds_sum`, wall time) and the CPU time of the event loop's thread
and of the inference threads apart (psutil), so the report says on which thread it goes.

    python bench/serving_cost.py --requests 600 --rate 12 --rounds 3
    python bench/serving_cost.py --servers lunaserve --profile build/bench/serving.raw   # py-spy on PATH

Each round measures lunaserve and then `bench/serving_floor.py`, the least a Python server on
uvicorn can do for the same request, so the two figures share the machine's drift.

Server on the placement's server CPUs with one ONNX Runtime thread per CPU, generator (aiohttp)
on the others, as in server_load. Not a test: figures go into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.floor_server import FloorServer, floor_request  # noqa: E402
from bench.server_load import METRIC, benchmarked_version, length_mix, lunaserve_request, open_loop  # noqa: E402
from loadtest.placement import place  # noqa: E402
from loadtest.server import LocalServer  # noqa: E402
from service.runtime.classifier import MetricModel  # noqa: E402


def runtime_alone_ms(model: MetricModel, items: list[dict[str, str]], passes: int = 3) -> dict[str, float]:
    """Mean ms `MetricModel.score` takes per item, one item at a time (the fastest of a few
    passes per item: noise only ever slows a pass down; the ideal queue's service times), and
    of it the forward pass alone (`MetricModel.forward` on the item's windows)."""
    score = [float("inf")] * len(items)
    forward = [float("inf")] * len(items)
    windows = [encoded.windows for encoded in model.encode(items)]  # type: ignore[union-attr]
    for _ in range(passes):
        for i, item in enumerate(items):
            start = time.perf_counter()
            model.score([item])
            middle = time.perf_counter()
            model.forward(windows[i])
            end = time.perf_counter()
            score[i] = min(score[i], middle - start)
            forward[i] = min(forward[i], end - middle)
    return {"score": 1000 * statistics.fmean(score), "forward": 1000 * statistics.fmean(forward)}


def forward_seconds(url: str) -> tuple[float, float]:
    """(sum of forward-pass seconds, number of forward passes) from the server's counters;
    zeros from a server without them (the floor)."""
    total = count = 0.0
    scrape = httpx.get(url + "/metrics")
    if scrape.status_code != 200 or not scrape.headers.get("content-type", "").startswith("text/plain"):
        return total, count
    for family in text_string_to_metric_families(scrape.text):
        for sample in family.samples:
            if sample.name == "lunaserve_batch_duration_seconds_sum":
                total += sample.value
            elif sample.name == "lunaserve_batch_duration_seconds_count":
                count += sample.value
    return total, count


def thread_cpu_s(process: psutil.Process) -> tuple[float, float]:
    """CPU seconds of the event loop's thread (the main one) and of all the others (inference)."""
    main = other = 0.0
    for thread in process.threads():
        seconds = thread.user_time + thread.system_time
        if thread.id == process.pid:
            main += seconds
        else:
            other += seconds
    return main, other


async def one_round(
    url: str, process: psutil.Process, items: list[dict[str, str]], requests: int, rate: float, seed: int,
    request: Callable[..., tuple[str, object]] = lunaserve_request,
) -> dict[str, float]:  # fmt: skip
    forward_before, passes_before = forward_seconds(url)
    main_before, other_before = thread_cpu_s(process)
    run = await open_loop(
        url,
        items,
        rate,
        requests / rate,
        traffic_class="observability",
        timeout_ms=30_000,
        seed=seed,
        request=request,
    )
    main_after, other_after = thread_cpu_s(process)
    forward_after, passes_after = forward_seconds(url)
    sent = max(run.sent, 1)
    main, other = (main_after - main_before) / sent, (other_after - other_before) / sent
    return {
        "sent": run.sent,
        "ok": sum(s.ok for s in run.samples),
        "cpu_ms_per_request": 1000 * (main + other),
        "event_loop_cpu_ms_per_request": 1000 * main,
        "inference_threads_cpu_ms_per_request": 1000 * other,
        "forward_wall_ms_per_request": 1000 * (forward_after - forward_before) / sent,
        "rows_per_forward": sent / max(passes_after - passes_before, 1),
        "p50_ms": run.p(50),
        "p99_ms": run.p(99),
    }


def profile(pid: int, seconds: float, out: Path, native: bool) -> subprocess.Popen[bytes] | None:
    """py-spy (if on PATH) sampling the server's stacks, collapsed, into `out`: Python frames,
    and with `native` the C frames too (it then pauses the server for each sample: the round's
    timings are no longer the server's own)."""
    spy = shutil.which("py-spy")
    if spy is None:
        print("py-spy not on PATH: no profile (pip install py-spy into any environment)", file=sys.stderr)
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "1000",
               "--format", "raw", "--threads", "--output", str(out),
               *(["--native"] if native else ["--nonblocking"])]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def bench(args: argparse.Namespace) -> dict[str, object]:
    placement = place()
    threads = placement.server_threads
    folder = args.repository / METRIC / args.version
    model = MetricModel.load(folder, intra_op_threads=threads)
    if placement.pinned:
        os.sched_setaffinity(0, set(placement.server_cpus))
    items = length_mix(model, [64, 96, 128, 192, 256])
    model.score(items[:32])
    alone = runtime_alone_ms(model, items[:128])
    del model
    if placement.pinned:
        os.sched_setaffinity(0, set(placement.generator_cpus))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cpus = placement.server_cpus if placement.pinned else ()
    servers: dict[str, LocalServer | FloorServer] = {}
    rounds: dict[str, list[dict[str, float]]] = {}
    try:
        for name in args.servers:  # both idle on the server CPUs; one at a time is loaded
            log = args.out.with_name(f"{args.out.stem}.{name}.log")
            servers[name] = (
                FloorServer(folder, log, cpus, threads)
                if name == "floor"
                else LocalServer(args.repository, log, ["--log_level", "warning", *args.server_arg],
                                 cpus=cpus, threads=threads).start()
            )  # fmt: skip
            rounds[name] = []
            await open_loop(servers[name].url, items, args.rate, 100 / args.rate,  # warm-up
                            traffic_class="observability", timeout_ms=30_000, seed=0,
                            request=request_for(name))  # fmt: skip
        first = servers[args.servers[0]].process
        assert first is not None
        spy = (
            profile(first.pid, args.requests / args.rate, args.profile, args.native) if args.profile else None
        )
        for i in range(args.rounds):  # interleaved: the machine's drift hits every server alike
            for name, server in servers.items():
                assert server.process is not None
                figures = await one_round(server.url, psutil.Process(server.process.pid), items,
                                          args.requests, args.rate, seed=i + 1,
                                          request=request_for(name))  # fmt: skip
                figures["serving_ms_per_request"] = figures["cpu_ms_per_request"] - alone["score"]
                rounds[name].append({k: round(v, 3) for k, v in figures.items()})
                print(name, json.dumps(rounds[name][-1]), flush=True)
                if spy is not None:
                    spy.wait()
                    spy = None
    finally:
        for server in servers.values():
            server.stop(60)
    return {
        "metric": f"{METRIC}/{args.version}",
        "placement": placement.describe(),
        "rate_rps": args.rate,
        "requests_per_round": args.requests,
        "server_args": args.server_arg,
        "runtime_alone_ms_per_item": {k: round(v, 3) for k, v in alone.items()},
        "rounds": rounds,
        "median_ms_per_request": {
            name: {
                key: round(statistics.median(r[key] for r in runs), 3)
                for key in ("event_loop_cpu_ms_per_request", "serving_ms_per_request")
            }
            for name, runs in rounds.items()
        },
    }


def request_for(server: str) -> Callable[..., tuple[str, object]]:
    """How a request to `server` looks: lunaserve's API, or the floor's bare body."""
    return floor_request if server == "floor" else lunaserve_request


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=ROOT / "repository")
    parser.add_argument("--version", help="the metric's version (default: the newest, as the server)")
    parser.add_argument("--requests", type=int, default=600, help="requests per round")
    parser.add_argument("--rate", type=float, default=12.0, help="requests per second (moderate: batch 1)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--servers", type=lambda v: v.split(","), default=["lunaserve", "floor"],
        help="comma-separated, measured in turn each round: lunaserve, floor (bench/serving_floor.py)",
    )  # fmt: skip
    parser.add_argument(
        "--server-arg", action="append", default=[],
        help="an extra `lunaserve serve` argument (repeat), e.g. --server-arg=--batching.max_wait_ms=0",
    )  # fmt: skip
    parser.add_argument("--profile", type=Path, help="py-spy's collapsed stacks of the first round, here")
    parser.add_argument("--native", action="store_true", help="profile C frames too (slows the server)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "serving_cost.json")
    args = parser.parse_args()
    args.version = benchmarked_version(parser, args.repository, args.version)
    unknown = set(args.servers) - {"lunaserve", "floor"}
    if unknown:
        parser.error(f"--servers: unknown {sorted(unknown)}; choose from lunaserve, floor")
    figures = asyncio.run(bench(args))
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps({k: v for k, v in figures.items() if k != "rounds"}, indent=2))


if __name__ == "__main__":
    main()
