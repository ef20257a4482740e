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
    python bench/serving_cost.py --profile build/bench/serving.txt   # py-spy on PATH: where it goes

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
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.server_load import METRIC, length_mix, open_loop  # noqa: E402
from loadtest.placement import place  # noqa: E402
from loadtest.server import LocalServer  # noqa: E402
from service.registry import version_key  # noqa: E402
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
    """(sum of forward-pass seconds, number of forward passes) from the server's counters."""
    total = count = 0.0
    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
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
    url: str, process: psutil.Process, items: list[dict[str, str]], requests: int, rate: float, seed: int
) -> dict[str, float]:
    forward_before, passes_before = forward_seconds(url)
    main_before, other_before = thread_cpu_s(process)
    run = await open_loop(
        url, items, rate, requests / rate, traffic_class="observability", timeout_ms=30_000, seed=seed
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
    model = MetricModel.load(args.repository / METRIC / args.version, intra_op_threads=threads)
    if placement.pinned:
        os.sched_setaffinity(0, set(placement.server_cpus))
    items = length_mix(model, [64, 96, 128, 192, 256])
    model.score(items[:32])
    alone = runtime_alone_ms(model, items[:128])
    del model
    if placement.pinned:
        os.sched_setaffinity(0, set(placement.generator_cpus))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    server = LocalServer(
        args.repository, args.out.with_suffix(".server.log"), ["--log_level", "warning", *args.server_arg],
        cpus=placement.server_cpus if placement.pinned else (), threads=threads,
    ).start()  # fmt: skip
    rounds = []
    try:
        assert server.process is not None
        process = psutil.Process(server.process.pid)
        await open_loop(server.url, items, args.rate, 100 / args.rate, traffic_class="observability",
                        timeout_ms=30_000, seed=0)  # fmt: skip  # warm-up
        spy = (
            profile(server.process.pid, args.requests / args.rate, args.profile, args.native)
            if args.profile
            else None
        )
        for i in range(args.rounds):
            figures = await one_round(server.url, process, items, args.requests, args.rate, seed=i + 1)
            figures["serving_ms_per_request"] = figures["cpu_ms_per_request"] - alone["score"]
            rounds.append({k: round(v, 3) for k, v in figures.items()})
            print(json.dumps(rounds[-1]), flush=True)
            if spy is not None:
                spy.wait()
                spy = None
    finally:
        server.stop(60)
    serving = [r["serving_ms_per_request"] for r in rounds]
    return {
        "metric": f"{METRIC}/{args.version}",
        "placement": placement.describe(),
        "rate_rps": args.rate,
        "requests_per_round": args.requests,
        "server_args": args.server_arg,
        "runtime_alone_ms_per_item": {k: round(v, 3) for k, v in alone.items()},
        "rounds": rounds,
        "serving_ms_per_request_median": round(statistics.median(serving), 3),
    }


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
        "--server-arg", action="append", default=[],
        help="an extra `lunaserve serve` argument (repeat), e.g. --server-arg=--batching.max_wait_ms=0",
    )  # fmt: skip
    parser.add_argument("--profile", type=Path, help="py-spy's collapsed stacks of the first round, here")
    parser.add_argument("--native", action="store_true", help="profile C frames too (slows the server)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "serving_cost.json")
    args = parser.parse_args()
    if args.version is None:
        versions = [p.name for p in (args.repository / METRIC).glob("*") if (p / "manifest.json").is_file()]
        if not versions:
            parser.error(f"{args.repository}: no {METRIC} version with a manifest.json")
        args.version = max(versions, key=version_key)
    figures = asyncio.run(bench(args))
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps({k: v for k, v in figures.items() if k != "rounds"}, indent=2))


if __name__ == "__main__":
    main()
