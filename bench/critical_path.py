"""Where one request's time goes at idle, stage by stage, in lunaserve and in the floor server.

On one core every millisecond a request spends outside the forward pass also delays the
requests queued behind it, and through the flat p99 curve of this workload a millisecond is
worth several percent of the rate within p99 100 ms (`bench/paired_steps.py --grid`). This
tells where those milliseconds are: both servers run with their functions wrapped to write a
`time.perf_counter()` stamp at each stage (on Linux that is CLOCK_MONOTONIC, one clock for the
client and both servers on this machine), and one request at a time is sent to each in turn,
the same items, 30 ms apart. Per stage, the median over the requests.

    python bench/critical_path.py --requests 300

lunaserve's stages: our outer middleware entered, the handler entered, tokenising started and
ended, the batch handed to the inference thread, the forward pass started and ended, the
batch back on the event loop, the response body built and sent. The floor (`bench/serving_floor.py`) has
tokenising and the forward pass only. Placed as server_load (server CPUs, one ONNX thread per
CPU; the client on the others). The stamps cost a few microseconds each. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LUNASERVE_STAGES = ["mw_in", "handler", "encode_in", "encode_out", "submit", "fwd_start", "fwd_end",
                    "resumed", "json", "send_body"]  # fmt: skip
Wrap = Callable[[str, str, Callable[..., Any]], Callable[..., Any]]  # stamps around a call
FLOOR_STAGES = ["encode_in", "encode_out", "fwd_start", "fwd_end"]
# --fine: lunaserve's stages split further (each stamp adds a few microseconds to its total)
FINE_STAGES = ["mw_in", "body_read", "route_in", "validated", "handler", "reg_in", "lm_in", "encode_in",
               "encode_out", "sched_submit", "submit", "fwd_start", "fwd_end", "resumed", "finish_in",
               "finish_out", "lm_out", "reg_out", "json", "send_body"]  # fmt: skip


def run_stamped(kind: str, stamps: Path, port: int, fine: bool = False) -> None:
    """Run one server in this process with its stages stamped into `stamps`."""
    out = open(stamps, "a", buffering=1)  # noqa: SIM115 - open for the life of the server

    def stamp(label: str) -> None:
        out.write(f"{label} {time.perf_counter()}\n")

    from service.runtime.classifier import MetricModel

    def around(label_in: str, label_out: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def stamped(*args: Any, **kwargs: Any) -> Any:
            stamp(label_in)
            try:
                return function(*args, **kwargs)
            finally:
                stamp(label_out)

        return stamped

    def around_async(label_in: str, label_out: str, function: Callable[..., Any]) -> Callable[..., Any]:
        async def stamped(*args: Any, **kwargs: Any) -> Any:
            stamp(label_in)
            result = await function(*args, **kwargs)
            stamp(label_out)
            return result

        return stamped

    MetricModel.forward = around("fwd_start", "fwd_end", MetricModel.forward)  # type: ignore[method-assign]
    MetricModel.encode = around("encode_in", "encode_out", MetricModel.encode)  # type: ignore[method-assign]
    if kind == "floor":
        import uvicorn

        uvicorn.run(
            "bench.serving_floor:app", host="127.0.0.1", port=port, log_level="warning", access_log=False
        )
        return
    import service.api.routes as routes
    import service.app as app
    from service.batching.runner import ThreadRunner
    from service.batching.worker import BatchWorker

    middleware = app.RequestContextMiddleware.__call__
    to_json, checks = routes._json, getattr(routes, "scoring_call")  # noqa: B009 - imported there, not exported
    setattr(routes, "_json", around("json", "json_built", to_json))  # noqa: B010
    setattr(routes, "scoring_call", around("handler", "checked", checks))  # noqa: B010

    async def middleware_stamped(self: Any, scope: Any, receive: Any, send: Any) -> None:
        scored = scope["type"] == "http" and scope["path"].endswith("/score")
        if scored:
            stamp("mw_in")

        async def send_stamped(message: Any) -> None:
            if scored and message["type"] == "http.response.body":
                stamp("send_body")
            await send(message)

        await middleware(self, scope, receive, send_stamped)

    app.RequestContextMiddleware.__call__ = middleware_stamped  # type: ignore[method-assign]
    ThreadRunner.__call__ = around("submit", "submitted", ThreadRunner.__call__)  # type: ignore[method-assign]
    BatchWorker._finished = around("resumed", "answered", BatchWorker._finished)  # type: ignore[method-assign]
    if fine:
        stamp_fine(around, around_async)
    from lunaserve.cli import main

    sys.argv = ["lunaserve", "serve", "--repository", str(ROOT / "repository"), "--host", "127.0.0.1",
                "--port", str(port), "--intra_op_threads", os.environ["CRITICAL_PATH_THREADS"],
                "--log_level", "warning"]  # fmt: skip
    main()


def stamp_fine(around: Wrap, around_async: Wrap) -> None:
    """Further stamps in lunaserve: body read, route, registry, metric, scheduler, post-processing."""
    import service.api.scoring_route as route
    import service.app as app
    from service.batching.scheduler import BatchScheduler
    from service.loaded_metric import LoadedMetric
    from service.registry import MetricRegistry
    from service.runtime.classifier import MetricModel

    read = app.RequestContextMiddleware._read_body
    app.RequestContextMiddleware._read_body = around_async("body_in", "body_read", read)  # type: ignore[method-assign]
    setattr(route, "read_body", around_async("route_in", "validated", route.read_body))  # noqa: B010
    MetricRegistry.score = around_async("reg_in", "reg_out", MetricRegistry.score)  # type: ignore[method-assign]
    LoadedMetric.score = around_async("lm_in", "lm_out", LoadedMetric.score)  # type: ignore[method-assign]
    BatchScheduler.submit = around("sched_submit", "sched_submitted", BatchScheduler.submit)  # type: ignore[method-assign]
    MetricModel.finish = around("finish_in", "finish_out", MetricModel.finish)  # type: ignore[method-assign]


def stage_groups(stamps: Path, first: str, stages: list[str], count: int) -> list[dict[str, float]]:
    """The last `count` requests' stamps, a request starting at each `first` (earlier stamps,
    e.g. warm-up and calibration passes before any request, are left out)."""
    groups: list[dict[str, float]] = []
    for line in stamps.read_text().splitlines():
        label, at = line.split()
        if label == first:
            groups.append({})
        if groups and label in stages and label not in groups[-1]:
            groups[-1][label] = float(at)
    complete = [g for g in groups if all(s in g for s in stages)]
    return complete[-count:]


def breakdown(
    groups: list[dict[str, float]], sent: list[tuple[float, float]], stages: list[str]
) -> dict[str, float]:
    """Median ms of each stage, from the client's send to its receipt of the answer."""

    def ms(values: list[float]) -> float:
        return round(1000 * statistics.median(values), 3)

    def after_send(stage: str) -> float:
        return ms([g[stage] - t0 for g, (t0, _) in zip(groups, sent, strict=True)])

    def before_receipt(stage: str) -> float:
        return ms([t1 - g[stage] for g, (_, t1) in zip(groups, sent, strict=True)])

    figures = {f"client->{stages[0]}": after_send(stages[0])}
    for a, b in itertools.pairwise(stages):
        figures[f"{a}->{b}"] = ms([g[b] - g[a] for g in groups])
    figures[f"{stages[-1]}->client"] = before_receipt(stages[-1])
    figures["client->fwd_start"] = after_send("fwd_start")
    figures["fwd_end->client"] = before_receipt("fwd_end")
    figures["outside_forward"] = round(figures["client->fwd_start"] + figures["fwd_end->client"], 3)
    return figures


async def send_in_turn(urls: dict[str, tuple[str, Callable[..., Any]]], items: list[dict[str, str]],
                       requests: int, warm_up: int = 10) -> dict[str, list[tuple[float, float]]]:  # fmt: skip
    import aiohttp

    sent: dict[str, list[tuple[float, float]]] = {name: [] for name in urls}
    async with aiohttp.ClientSession() as client:
        for k in range(warm_up + requests):
            order = list(urls) if k % 2 == 0 else list(urls)[::-1]
            for name in order:
                url, request = urls[name]
                path, body = request(items[k % len(items)], "observability", 30_000)
                start = time.perf_counter()
                async with client.post(url + path, json=body) as answer:
                    await answer.read()
                    assert answer.status == 200, (name, answer.status)
                if k >= warm_up:
                    sent[name].append((start, time.perf_counter()))
                await asyncio.sleep(0.03)
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "critical_path.json")
    parser.add_argument(
        "--fine", action="store_true", help="lunaserve's stages split further (its stamps then cost more)"
    )
    parser.add_argument("--launch", choices=["lunaserve", "floor"], help=argparse.SUPPRESS)
    parser.add_argument("--stamps", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.launch:
        run_stamped(args.launch, args.stamps, args.port, args.fine)
        return

    from bench.floor_server import floor_request
    from bench.server_load import METRIC, benchmarked_version, length_mix, lunaserve_request
    from loadtest.placement import place, taskset
    from loadtest.server import free_port, wait_until_ready
    from service.runtime.classifier import MetricModel

    placement = place()
    folder = ROOT / "repository" / METRIC / benchmarked_version(parser, ROOT / "repository", None)
    model = MetricModel.load(folder, intra_op_threads=placement.server_threads)
    items = length_mix(model, [64, 96, 128, 192, 256])[:64]
    del model
    if placement.pinned:
        os.sched_setaffinity(0, set(placement.generator_cpus))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LUNASERVE_FLOOR_MODEL": str(folder), "PYTHONPATH": str(ROOT),
           "LUNASERVE_FLOOR_THREADS": str(placement.server_threads),
           "CRITICAL_PATH_THREADS": str(placement.server_threads)}  # fmt: skip
    cpus = placement.server_cpus if placement.pinned else ()
    servers: dict[str, tuple[subprocess.Popen[bytes], str, Path]] = {}
    try:
        for kind in ("lunaserve", "floor"):
            port, stamps = free_port(), args.out.with_suffix(f".{kind}.stamps")
            stamps.write_text("")
            log = open(args.out.with_suffix(f".{kind}.log"), "wb")  # noqa: SIM115 - the child keeps it
            process = subprocess.Popen(
                [*taskset(cpus), sys.executable, __file__, "--launch", kind, "--stamps", str(stamps),
                 "--port", str(port), *(["--fine"] if args.fine else [])],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            servers[kind] = (process, f"http://127.0.0.1:{port}", stamps)
            if not wait_until_ready(process, f"http://127.0.0.1:{port}/readyz", 120):
                raise SystemExit(f"{kind} did not start: {log.name}")
        requests = {"lunaserve": lunaserve_request, "floor": floor_request}
        urls = {kind: (url, requests[kind]) for kind, (_, url, _) in servers.items()}
        sent = asyncio.run(send_in_turn(urls, items, args.requests))
    finally:
        for process, _, _ in servers.values():
            process.terminate()
            process.wait(30)
    figures: dict[str, object] = {"placement": placement.describe(), "requests": args.requests}
    for kind, stages, first in (
        ("lunaserve", FINE_STAGES if args.fine else LUNASERVE_STAGES, "mw_in"),
        ("floor", FLOOR_STAGES, "encode_in"),
    ):
        groups = stage_groups(servers[kind][2], first, stages, args.requests)
        figures[kind] = breakdown(groups, sent[kind], stages)
    ours, floor = figures["lunaserve"], figures["floor"]
    assert isinstance(ours, dict) and isinstance(floor, dict)
    figures["lunaserve_minus_floor_outside_forward_ms"] = round(
        ours["outside_forward"] - floor["outside_forward"], 3
    )
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
