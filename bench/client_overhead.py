"""What lunaserve.client adds to a guardrail call over raw HTTP, on the same server and connection pool.

Starts `lunaserve serve` on a tiny counting model (so the server's own time is small and steady),
then times, interleaved round-robin so machine noise hits each alike: a raw `httpx.Client.post`
with a hand-built body, `Client.score`, and `guard`. Reports p50/p99 per call and the client's
overhead as the difference of medians. Not a test: figures go into the closing note.

    python bench/client_overhead.py --calls 2000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtest.server import LocalServer
from lunaserve.client import Client, guard
from tests.conftest import counting_spec
from tests.tiny_models import write_counting_artifact

ITEM = {"input": "who", "output": "good good", "context": "the city " * 20}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp())
    write_counting_artifact(root / "repo", counting_spec(), root)
    with LocalServer(root / "repo", root / "server.log", ["--batching.calibrate", "false"]) as server:
        raw = httpx.Client(base_url=server.url)
        client = Client(server.url)
        path = "/v1/metrics/context_adherence/score"
        calls: dict[str, Callable[[], object]] = {
            "raw httpx post": lambda: raw.post(
                path, json={"items": [ITEM], "traffic_class": "guardrail", "timeout_ms": 200}
            ).json(),
            "Client.score": lambda: client.score(
                "context_adherence", [ITEM], traffic_class="guardrail", timeout_ms=200
            ),
            "guard": lambda: guard(client, "context_adherence", [ITEM], timeout_ms=200, fail_open=False),
        }
        for call in calls.values():  # warm-up
            for _ in range(50):
                call()
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.calls):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - start) * 1000)
        raw.close()
        client.close()
    base = statistics.median(times["raw httpx post"])
    out = {
        name: {
            "p50_ms": round(statistics.median(t), 3),
            "p99_ms": round(float(np.percentile(t, 99)), 3),
            "overhead_p50_ms": round(statistics.median(t) - base, 3),
        }
        for name, t in times.items()
    }
    print(json.dumps({"calls_each": args.calls, **out}, indent=2))


if __name__ == "__main__":
    main()
