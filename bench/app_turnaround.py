"""The event loop's time for one scoring request through the whole app, in process, the model taken out.

What lunaserve itself spends per request around tokenising and the forward pass (middleware,
routing, validation, checks, registry, scheduler, the thread hop, post-processing, metrics, the
response), measured with little noise: the app is called as uvicorn would call it (the ASGI
interface, a real `create_app` with the served repository loaded, calibrated and warmed), one
request at a time, with the metric's `encode` answered from a cache and its forward pass
answered at once by a `ThreadRunner` (the real thread hop stays). Per request, the median
round's CPU microseconds of this process; pinned to one core that is its wall time. uvicorn's
own HTTP parsing and the socket are not in it (`bench/critical_path.py` has them, and more noise).
Use it to compare two checkouts in turn:

    taskset -c 1 python bench/app_turnaround.py
    taskset -c 1 python /path/to/other/checkout/bench/app_turnaround.py

Not a test: figures go into notes and docs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.app import create_app  # noqa: E402
from service.batching.runner import Predict, ThreadRunner  # noqa: E402
from service.config import Settings  # noqa: E402
from service.runtime.classifier import MetricModel  # noqa: E402

METRIC = "context_adherence"
ITEM = {
    "input": "What is the capital of France, and what is it known for?",
    "output": "Paris is the capital of France; it is known for the Eiffel Tower.",
    "context": "Paris is the capital and most populous city of France. " * 6,
}
BODY = json.dumps({"items": [ITEM]}).encode()
ScopeDict = dict[str, Any]


def encode_from_cache() -> None:
    """Answer `MetricModel.encode` for items seen before from a cache: tokenising is out of it."""
    encode, seen = MetricModel.encode, {}

    def cached(self: MetricModel, items: Sequence[Any]) -> Any:
        key = (id(self), json.dumps(list(items), sort_keys=True))
        if key not in seen:
            seen[key] = encode(self, items)
        return seen[key]

    MetricModel.encode = cached  # type: ignore[method-assign]


def instant_runner(predict: Predict, name: str) -> ThreadRunner:
    """A ThreadRunner that answers each batch size with the rows it gave the first time."""
    rows: dict[int, np.ndarray] = {}

    def answer(windows: Sequence[Any]) -> np.ndarray:
        if len(windows) not in rows:
            rows[len(windows)] = predict(windows)
        return rows[len(windows)]

    return ThreadRunner(answer, name)


async def serve(app: Any, requests: int, rounds: int) -> list[float]:
    started, life_messages = asyncio.Event(), asyncio.Queue[ScopeDict]()
    await life_messages.put({"type": "lifespan.startup"})

    async def lifespan_send(message: ScopeDict) -> None:
        if message["type"].startswith("lifespan.startup"):
            assert message["type"] == "lifespan.startup.complete", message
            started.set()

    life = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                   life_messages.get, lifespan_send))  # fmt: skip
    await started.wait()
    path = f"/v1/metrics/{METRIC}/score"
    scope: ScopeDict = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(BODY)).encode())],
    }  # fmt: skip
    never = asyncio.Event()  # the client stays: the disconnect watcher waits as it would

    async def one() -> None:
        messages = [{"type": "http.request", "body": BODY, "more_body": False}]
        statuses: list[int] = []

        async def receive() -> ScopeDict:
            if messages:
                return messages.pop()
            await never.wait()
            return {"type": "http.disconnect"}

        async def send(message: ScopeDict) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app({**scope, "state": {}}, receive, send)
        assert statuses == [200], statuses

    for _ in range(requests // 5):  # warm
        await one()
    figures = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(requests):
            await one()
        figures.append(1e6 * (time.process_time() - start) / requests)
    await life_messages.put({"type": "lifespan.shutdown"})
    await life
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=ROOT / "repository")
    parser.add_argument("--requests", type=int, default=2000, help="per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.requests < 10 or args.rounds < 1:
        parser.error("--requests must be at least 10 and --rounds at least 1")
    encode_from_cache()
    app = create_app(Settings(repository=args.repository), runner_factory=instant_runner)
    figures = asyncio.run(serve(app, args.requests, args.rounds))
    print(json.dumps({"per_request_us": round(statistics.median(figures), 1),
                      "rounds_us": [round(f, 1) for f in figures]}))  # fmt: skip


if __name__ == "__main__":
    main()
