"""A burst of concurrent requests with a tight timeout: how a server answers load it cannot serve.

Issue 11's case: 400 concurrent requests, each one item of ~490 tokens with `timeout_ms` 300, in
the observability class, sent at once to a local `lunaserve serve`. Load is never the client's
fault: the answers should be 503 with Retry-After (or 200), and 422 only for a request that an
idle server could not serve within its timeout. Prints the answers by status and reason, per
round (the first round also pays for the cost estimate's warm-up).

    python bench/overload_burst.py --requests 400 --rounds 2

Not a test: figures go into closing notes and docs/reliability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadtest.server import LocalServer  # noqa: E402
from models.latency_probe import item_of_tokens  # noqa: E402
from service.runtime.classifier import MetricModel  # noqa: E402

SCORE = "/v1/metrics/context_adherence/score"


Answer = tuple[int, str, float]  # status, reason, seconds on the client


async def burst(url: str, item: dict[str, str], requests: int, timeout_ms: float) -> list[Answer]:
    """Send `requests` copies at once; each answer as (status, reason, seconds on the client)."""
    body = {"items": [item], "timeout_ms": timeout_ms, "traffic_class": "observability"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> Answer:
            start = time.perf_counter()
            async with session.post(url + SCORE, json=body) as response:
                text = await response.text()
                reason = "" if response.status == 200 else json.loads(text).get("detail", "")
                if response.status == 503 and "retry-after" not in response.headers:
                    reason = "NO RETRY-AFTER: " + reason
                return response.status, reason, time.perf_counter() - start

        return await asyncio.gather(*(one() for _ in range(requests)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=ROOT / "repository")
    parser.add_argument("--version", default="1", help="the version whose tokenizer sizes the item")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--tokens", type=int, default=490)
    parser.add_argument("--timeout-ms", type=float, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="the server's ONNX Runtime threads")
    args = parser.parse_args()
    model = MetricModel.load(args.repository / "context_adherence" / args.version)
    item = item_of_tokens(model, args.tokens)
    log = ROOT / "build" / "bench" / "overload_burst.server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with LocalServer(args.repository, log, threads=args.threads) as server:
        for round_ in range(args.rounds):
            answers = asyncio.run(burst(server.url, item, args.requests, args.timeout_ms))
            by_reason = Counter((status, reason.split(" (")[0][:60]) for status, reason, _ in answers)
            ok = [s for status, _, s in answers if status == 200]
            print(f"round {round_ + 1}: {args.requests} requests of {args.tokens} tokens,", end=" ")
            print(f"timeout {args.timeout_ms:.0f} ms")
            for (status, reason), n in by_reason.most_common():
                print(f"  {n:5d}  {status}  {reason}")
            if ok:
                print(f"  answered: {len(ok)}, slowest on the client {max(ok) * 1000:.0f} ms")
            time.sleep(2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
