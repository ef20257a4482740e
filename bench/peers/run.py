"""lunaserve beside the servers a user could pick instead, back to back in one run.

Every server gets the same model, the same CPU (pinned, one inference thread) and the same
generator (bench/server_load.py's open loop: Poisson arrivals, aiohttp, on the other CPU), the
same payloads (a ~64-256-token mix, and 512-token inputs) and the same warm-up. Per server and
payload: the highest rate whose p99 stays within the mix's budget with no error (the capacity
step search; 100 ms for the 64-256 mix, 500 ms for 512, both settable), p50/p99 at one fixed
moderate rate (half lunaserve's capacity), CPU seconds per 1,000 requests and the peak RSS of
the server's whole process tree; each also as a ratio to lunaserve's. Peers run in their own
virtual environments (`bench/peers/setup`), never in the project's.

The peers:
  handwritten-own         a FastAPI `def` endpoint, one ONNX Runtime run per request, on
                          lunaserve's own artifact (serving compared alone)
  handwritten-standard    the same endpoint on what a user gets from the standard export of the
                          same checkpoint (optimum's ONNX export, its default dynamic int8)
  pipeline                FastAPI + the transformers pipeline on the fp32 checkpoint
  litserve                LitServe 0.2.19, max_batch_size 8, batch_timeout 5 ms
  rayserve                Ray Serve 2.60 with @serve.batch (8, 5 ms), one replica
  infinity                infinity-emb, if it can serve this classifier from a local folder

    bench/peers/setup
    python bench/peers/run.py --checkpoint build/checkpoints/context_adherence-2 \\
        --out build/peers/results.json
    python bench/peers/plot.py build/peers/results.json --out docs/peers.svg

--repository serves another repository's newest context_adherence (default: the project's):
give the one exported from --checkpoint, so that every server runs the same weights. Where the
fine-tuned checkpoint is not at hand (it is not committed), `bench/peers/speed_twin.py` makes one
of the same shapes from the base encoder, for speed runs (its head is untrained).

Not a test: the table goes into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.server_load import METRIC, SLO_P99_S, RunResult, benchmarked_version, length_mix, open_loop  # noqa: E402
from loadtest.placement import place, taskset  # noqa: E402
from loadtest.search import Probe, step_search  # noqa: E402
from loadtest.server import LocalServer, free_port, wait_until_ready  # noqa: E402
from service.runtime.classifier import MetricModel  # noqa: E402

SERVERS = Path(__file__).resolve().parent / "servers"
VENVS = ROOT / "build" / "peers"


@dataclass
class Peer:
    name: str
    command: list[str]  # empty: lunaserve itself, started by LocalServer
    ready_path: str = "/ready"
    why_not: str = ""  # set when the peer cannot run here, and why
    path: str = "/score"  # where it takes one item as the JSON body


def standard_export(checkpoint: Path, out: Path) -> Path:
    """optimum's default ONNX export of the checkpoint, then its default dynamic int8 (AVX2)."""
    quantised = out / "quantised" / "model_quantized.onnx"
    if quantised.is_file():
        return quantised
    optimum = [str(Path(sys.executable).parent / "optimum-cli")]
    subprocess.run(
        [
            *optimum,
            "export",
            "onnx",
            "--model",
            str(checkpoint),
            "--task",
            "text-classification",
            str(out / "fp32"),
        ],
        check=True,
    )
    subprocess.run(
        [
            *optimum,
            "onnxruntime",
            "quantize",
            "--onnx_model",
            str(out / "fp32"),
            "--avx2",
            "-o",
            str(out / "quantised"),
        ],
        check=True,
    )
    return quantised


def peers(artifact: Path, checkpoint: Path | None, standard: Path | None) -> list[Peer]:
    tokenizer = str(artifact / "tokenizer.json")
    model = str(artifact / "model.onnx")

    def venv(name: str) -> str:
        return str(VENVS / f"venv-{name}" / "bin" / "python")

    def script(name: str) -> str:
        return str(SERVERS / name)

    found = [
        Peer("lunaserve", []),
        Peer("handwritten-own", [venv("handwritten"), script("handwritten_ort.py"), model, tokenizer]),
    ]
    if standard is not None:
        found.append(
            Peer(
                "handwritten-standard",
                [venv("handwritten"), script("handwritten_ort.py"), str(standard), tokenizer],
            )
        )
    else:
        found.append(Peer("handwritten-standard", [], why_not="no --checkpoint to export the standard way"))
    if checkpoint is not None:
        found.append(
            Peer("pipeline", [venv("pipeline"), script("transformers_pipeline.py"), str(checkpoint)])
        )
    else:
        found.append(Peer("pipeline", [], why_not="no --checkpoint (the fp32 PyTorch weights)"))
    found.append(
        Peer("litserve", [venv("litserve"), script("litserve_server.py"), model, tokenizer], "/health")
    )
    found.append(Peer("rayserve", [venv("rayserve"), script("rayserve_server.py"), model, tokenizer]))
    found.append(
        Peer(
            "infinity",
            [],
            why_not="infinity-emb 0.0.78 serves embeddings, single-text classifiers and rerankers; its"
            " cross-encoder reranker flattens the logits into one score per (query, document) pair"
            " (transformer/crossencoder/*.py, encode_post), so this two-label pair classifier would"
            " give two numbers per pair: it cannot serve it without changing the model's head",
        )
    )
    for peer in found:
        if peer.command and not Path(peer.command[0]).exists():
            peer.why_not = f"its environment is missing: run bench/peers/setup {peer.name.split('-')[0]}"
    return found


class TreeWatch:
    """CPU seconds and the peak summed RSS of a process and its descendants, sampled."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def tree(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return []

    def cpu_s(self) -> float:
        total = 0.0
        for process in self.tree():
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def _sample(self) -> None:
        while not self._stop.wait(0.25):
            rss = 0
            for process in self.tree():
                with contextlib.suppress(psutil.Error):
                    rss += process.memory_info().rss
            self.peak_rss = max(self.peak_rss, rss)

    def close(self) -> None:
        self._stop.set()


def start(
    peer: Peer, cpus: tuple[int, ...], log: Path, repository: Path
) -> tuple[str, Callable[[], object], int]:
    """The peer's URL, a stop function, and its process id."""
    if not peer.command:
        server = LocalServer(
            repository, log, ["--log_level", "warning", "--deadlines.max_timeout_ms", "60000"],
            cpus=cpus, threads=1,
        ).start()  # fmt: skip
        assert server.process is not None
        return server.url, lambda: server.stop(60), server.process.pid
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*taskset(cpus), *peer.command, "--port", str(port), "--threads", "1"],
            cwd=SERVERS, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    if not wait_until_ready(process, url + peer.ready_path, 300):
        if process.poll() is not None:
            raise RuntimeError(f"{peer.name} exited: {log.read_text(errors='replace')[-2000:]}")
        process.kill()
        raise RuntimeError(f"{peer.name} was not ready in 300 s")

    def stop() -> None:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.terminate()
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()

    return url, stop, process.pid


def request_for(peer: Peer) -> Callable[..., tuple[str, object]]:
    from bench.server_load import lunaserve_request

    if not peer.command:
        return lunaserve_request
    return lambda item, traffic_class, timeout_ms: (peer.path, item)


def capacity_runs(
    peer: Peer, url: str, mix: str, items: list[dict[str, str]], args: argparse.Namespace,
    loop: asyncio.AbstractEventLoop,
) -> list[RunResult]:  # fmt: skip
    """The capacity step search's runs (called off the event loop, which sends the requests)."""
    runs: list[RunResult] = []

    def probe(rps: float) -> Probe:
        coroutine = open_loop(
            url, items, rps, args.step_s_by_mix[mix], traffic_class="observability",
            timeout_ms=30_000, seed=len(runs) + 1, request=request_for(peer),
        )  # fmt: skip
        run = asyncio.run_coroutine_threadsafe(coroutine, loop).result()
        runs.append(run)
        print(f"  {peer.name} {mix} {rps:.1f} req/s: {run.summary()}", flush=True)
        ok = passed(run, args.budget_ms_by_mix[mix])
        return Probe(rps, ok, p99_ms=run.p(99), achieved_qps=run.achieved_rps)

    step_search(probe, args.start_rps[mix], growth=1.25, resolution=0.05, max_steps=args.max_steps)
    return runs


def passed(run: RunResult, budget_ms: float) -> bool:
    return run.p(99) <= budget_ms and run.other_errors == 0 and run.rejected_503 == 0


async def measure(
    peer: Peer, url: str, pid: int, mixes: dict[str, list[dict[str, str]]], args: argparse.Namespace,
    moderate: dict[str, float],
) -> dict[str, object]:  # fmt: skip
    request = request_for(peer)
    watch = TreeWatch(pid)
    out: dict[str, object] = {}
    loop = asyncio.get_running_loop()
    try:
        for mix, items in mixes.items():
            await open_loop(
                url, items, 5.0, args.warmup_s, traffic_class="observability", timeout_ms=30_000, seed=0,
                request=request,
            )  # fmt: skip
            runs = await asyncio.to_thread(capacity_runs, peer, url, mix, items, args, loop)
            budget_ms = args.budget_ms_by_mix[mix]
            capacity = max((r.achieved_rps for r in runs if passed(r, budget_ms)), default=0.0)
            steps = [
                {"offered_rps": round(r.offered_rps, 2), "achieved_rps": round(r.achieved_rps, 2),
                 "p50_ms": round(r.p(50), 1), "p99_ms": round(r.p(99), 1), "passed": passed(r, budget_ms)}
                for r in runs
            ]  # fmt: skip
            rate = moderate.setdefault(mix, max(capacity * 0.5, 1.0))  # lunaserve's half, for everyone
            cpu_before = watch.cpu_s()
            fixed = await open_loop(
                url, items, rate, args.step_s_by_mix[mix], traffic_class="observability",
                timeout_ms=30_000, seed=99, request=request,
            )  # fmt: skip
            cpu_used = watch.cpu_s() - cpu_before
            out[mix] = {
                "capacity_rps_within_budget": round(capacity, 1),  # within p99_budget_ms
                "p99_budget_ms": budget_ms,
                "step_s": args.step_s_by_mix[mix],
                "moderate_rps": round(rate, 1),
                "moderate_p50_ms": round(fixed.p(50), 1),
                "moderate_p99_ms": round(fixed.p(99), 1),
                "cpu_s_per_1000": round(1000 * cpu_used / max(fixed.sent, 1), 2),
                "errors_at_moderate": fixed.sent - sum(s.status == 200 for s in fixed.samples),
                "steps": steps,
            }
    finally:
        watch.close()
    out["peak_rss_mb"] = round(watch.peak_rss / 2**20, 1)
    return out


def _over(a: object, b: object) -> float | None:
    return (
        round(float(a) / float(b), 2)
        if isinstance(a, int | float) and isinstance(b, int | float) and b
        else None
    )


def ratios(results: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    """lunaserve's figures against each peer's: capacity as lunaserve over the peer (>1:
    lunaserve ahead), the costs (moderate-rate p99, CPU, memory) as the peer over lunaserve
    (>1: the peer costs more)."""
    base = results.get("lunaserve", {})
    table: dict[str, dict[str, object]] = {}
    for name, figures in results.items():
        if "why_not" in figures or "error" in figures:
            continue
        row: dict[str, object] = {
            "peer_rss_over_lunaserve": _over(figures.get("peak_rss_mb"), base.get("peak_rss_mb"))
        }
        for mix, f in figures.items():
            b = base.get(mix)
            if not isinstance(f, dict) or not isinstance(b, dict):
                continue
            row[mix] = {
                "lunaserve_capacity_over_peer": _over(
                    b["capacity_rps_within_budget"], f["capacity_rps_within_budget"]
                ),
                "peer_moderate_p99_over_lunaserve": _over(f["moderate_p99_ms"], b["moderate_p99_ms"]),
                "peer_cpu_over_lunaserve": _over(f["cpu_s_per_1000"], b["cpu_s_per_1000"]),
            }
        table[name] = row
    return table


async def run(args: argparse.Namespace) -> dict[str, object]:
    placement = place()
    server_cpus = placement.server_cpus[:1] if placement.pinned else ()
    if placement.pinned:
        os.sched_setaffinity(0, set(placement.generator_cpus))
    artifact = args.repository / METRIC / args.version
    model = MetricModel.load(artifact, intra_op_threads=1)
    lengths = {"64-256": [64, 96, 128, 192, 256], "512": [512]}
    chosen = ["64-256"] if args.quick else args.mixes
    mixes = {mix: length_mix(model, lengths[mix]) for mix in chosen}
    del model
    standard = None
    if args.checkpoint:  # one export per checkpoint: a cached one of another would compare other weights
        key = hashlib.sha1(str(args.checkpoint.resolve()).encode()).hexdigest()[:12]
        standard = standard_export(args.checkpoint, VENVS / "standard-export" / key)
    results: dict[str, dict[str, object]] = {}
    moderate: dict[str, float] = {}
    logs = VENVS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for peer in peers(artifact, args.checkpoint, standard):
        if args.only and peer.name not in args.only:
            continue
        if peer.why_not:
            results[peer.name] = {"why_not": peer.why_not}
            print(f"{peer.name}: not run: {peer.why_not}", flush=True)
            continue
        print(f"{peer.name} ...", flush=True)
        try:
            url, stop, pid = start(peer, server_cpus, logs / f"{peer.name}.log", args.repository)
        except RuntimeError as exc:
            results[peer.name] = {"error": str(exc)[-1500:]}
            continue
        try:
            results[peer.name] = await measure(peer, url, pid, mixes, args, moderate)
        finally:
            stop()
    return {
        "artifact": str(artifact),
        "checkpoint": str(args.checkpoint) if args.checkpoint else None,
        "placement": placement.describe(),
        "server_cpus": list(server_cpus),
        "results": results,
        "ratios": ratios(results),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, help="the fp32 PyTorch checkpoint of the served model")
    parser.add_argument(
        "--repository", type=Path, default=ROOT / "repository",
        help="lunaserve's repository; its newest context_adherence is what every ONNX peer runs",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=VENVS / "results.json")
    parser.add_argument("--step-s", type=float, default=15.0, help="seconds per load step")
    parser.add_argument(
        "--step-s-512", type=float,
        help="seconds per step of the 512 mix (default: --step-s). Its steps carry more work per"
        " request, so they can be shorter; the 64-256 mix's low passing rates want long steps",
    )  # fmt: skip
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument(
        "--budget-ms", type=float, default=SLO_P99_S * 1000,
        help="the p99 budget of the 64-256 mix's capacity search (100 ms, the issue's; where one"
        " core's service times leave every server only a few requests a second within it, a larger"
        " budget separates the servers with more requests per step)",
    )  # fmt: skip
    parser.add_argument(
        "--budget-ms-512", type=float, default=500.0,
        help="the 512 mix's: one 512-token pass alone takes 100-150 ms on one core of these machines,"
        " so no server meets 100 ms there",
    )  # fmt: skip
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument(
        "--only", nargs="*", help="run only these peers (lunaserve first sets the moderate rate)"
    )
    parser.add_argument("--quick", action="store_true", help="the 64-256 mix only")
    parser.add_argument(
        "--mixes", nargs="+", choices=["64-256", "512"], default=["64-256", "512"],
        help="the payload mixes to measure (the moderate rate is lunaserve's half on each)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.checkpoint is not None and not (args.checkpoint / "config.json").is_file():
        parser.error(f"--checkpoint {args.checkpoint}: not a transformers checkpoint (no config.json)")
    args.start_rps = {"64-256": 6.0, "512": 2.0}
    args.step_s_by_mix = {"64-256": args.step_s, "512": args.step_s_512 or args.step_s}
    args.budget_ms_by_mix = {"64-256": args.budget_ms, "512": args.budget_ms_512}
    args.repository = args.repository.resolve()  # the peers run from their own folder
    args.version = benchmarked_version(parser, args.repository, None)  # the one the server serves
    if args.checkpoint is not None:
        args.checkpoint = args.checkpoint.resolve()
    result = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result["ratios"], indent=2))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
