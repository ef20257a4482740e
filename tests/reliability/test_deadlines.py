"""Requests whose deadline a backlog makes unreachable are refused or dropped, never run.

Pass criteria, against a live server on a tiny metric that costs ~10 ms an item: while 12
clients keep a backlog of observability requests (16 items, 10 s timeouts), 60 requests whose
timeout an idle server meets (ten times one item's measured inference time, plus 50 ms) are
answered 503 with Retry-After (refused at admission or dropped in the queue) or 200; and the
model ran exactly the windows of the requests answered 200: the inference counters
(`lunaserve_batch_size_sum`) prove that no refused or dropped request reached it.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from loadtest.server import LocalServer
from tests.conftest import counting_spec
from tests.e2e.test_server_e2e import metric_value
from tests.tiny_models import write_counting_artifact

BUSY = 256  # per-token MatMuls: ~10 ms a batch of long rows, so a backlog forms
SCORE = "/v1/metrics/context_adherence/score"
CONTEXT = "the city " * 20  # one window per item: windows == items
BACKLOG_ITEMS = 16  # per backlog request: 12 clients keep ~190 windows queued


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    root = tmp_path_factory.mktemp("deadlines")
    (root / "work").mkdir()
    write_counting_artifact(root / "repo", counting_spec(), root / "work", busy_matmuls=BUSY)
    with LocalServer(root / "repo", root / "server.log", ["--batching.calibrate", "false"]) as running:
        yield running


def post(server: LocalServer, payload: dict[str, object]) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(
        f"{server.url}{SCORE}",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            return response.status, {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as error:
        error.read()
        return error.code, {k.lower(): v for k, v in error.headers.items()}


def scrape(server: LocalServer) -> str:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=30) as response:
        return response.read().decode()


def test_short_deadlines_behind_a_backlog_never_reach_the_model(
    server: LocalServer, record_property: Callable[[str, object], None]
) -> None:
    item = {"output": "good good", "context": CONTEXT}
    for _ in range(5):  # warm, and learn what one item costs when the server is idle
        status, headers = post(server, {"items": [item]})
        assert status == 200
    short_ms = 10 * float(headers["x-inference-time-ms"]) + 50
    before = metric_value(scrape(server), "lunaserve_batch_size_sum", metric="context_adherence")
    stop = threading.Event()
    backlog: list[int] = []

    def keep_busy() -> None:
        while not stop.is_set():
            status, _ = post(server, {"items": [item] * BACKLOG_ITEMS, "traffic_class": "observability",
                                      "timeout_ms": 10_000})  # fmt: skip
            backlog.append(status)

    with ThreadPoolExecutor(12) as pool:
        for _ in range(12):
            pool.submit(keep_busy)
        short = [post(server, {"items": [item], "traffic_class": "observability", "timeout_ms": short_ms})
                 for _ in range(60)]  # fmt: skip
        stop.set()
    after = metric_value(scrape(server), "lunaserve_batch_size_sum", metric="context_adherence")
    statuses = [status for status, _ in short]
    assert set(statuses) <= {200, 503}, statuses
    assert all("retry-after" in headers for status, headers in short if status == 503)
    assert statuses.count(503) > 0  # the backlog made some deadlines unreachable
    assert set(backlog) <= {200, 503}
    answered_windows = BACKLOG_ITEMS * backlog.count(200) + statuses.count(200)
    record_property("short timeout (ms)", round(short_ms, 1))
    record_property("short requests: 200 / 503", f"{statuses.count(200)} / {statuses.count(503)}")
    record_property("windows run / windows answered", f"{after - before:.0f} / {answered_windows}")
    assert after - before == answered_windows  # refused and dropped requests ran no inference
