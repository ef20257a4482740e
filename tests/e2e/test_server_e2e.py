"""End to end: a real uvicorn subprocess on 127.0.0.1 with concurrent clients over real HTTP.

Load loops are bounded in count and time, and target only the loopback server they started.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadtest.server import LocalServer
from tests.conftest import check_with_promtool, counting_spec
from tests.tiny_models import expected_score, write_counting_artifact

SCORE = "/v1/metrics/context_adherence/score"
BUSY = 64  # per-token MatMuls: a few ms a batch, so queues form under concurrent load
CLIENTS = 12
LOAD_LIMIT_S = 60
# uvicorn re-raises SIGTERM after its graceful shutdown, so a clean stop exits by that signal
CLEAN_EXIT = (0, -signal.SIGTERM)
# batching as configured: a calibration would make batch caps depend on the machine's speed
FIXED_BATCHES = ["--batching.calibrate", "false"]


@pytest.fixture
def busy_repository(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    work = tmp_path / "work"
    work.mkdir()
    write_counting_artifact(repo, counting_spec(), work, busy_matmuls=BUSY)
    return repo


def body(i: int) -> dict[str, object]:
    good = i % 3
    return {"items": [{"output": " ".join(["good"] * good) or "bad", "context": "the city " * 20}],
            "traffic_class": "observability" if i % 2 else "guardrail", "timeout_ms": 10_000}  # fmt: skip


class Load:
    """CLIENTS threads sending requests until told to stop (or a hard count/time limit)."""

    def __init__(self, url: str, *, max_requests: int = 400, fresh_connections: bool = False) -> None:
        self.url = url
        self.max_requests = max_requests
        self.fresh = fresh_connections
        self.stop = threading.Event()
        self.outcomes: Counter[str] = Counter()
        self.versions: list[tuple[float, float, str]] = []  # sent, answered (monotonic), version
        self.wrong_scores = 0
        self.sent = 0
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CLIENTS)]

    def _next(self) -> int | None:
        with self._lock:
            if self.stop.is_set() or self.sent >= self.max_requests:
                return None
            self.sent += 1
            return self.sent

    def _client(self) -> None:
        headers = {"Connection": "close"} if self.fresh else {}
        with httpx.Client(base_url=self.url, timeout=30, headers=headers) as client:
            while (i := self._next()) is not None:
                sent = time.monotonic()
                try:
                    response = client.post(SCORE, json=body(i))
                except httpx.ConnectError:
                    self._record("refused")
                    continue
                except httpx.TransportError as exc:
                    self._record(f"transport:{type(exc).__name__}")
                    continue
                self._record(str(response.status_code))
                if response.status_code == 200:
                    data = response.json()
                    good = i % 3
                    ok = abs(data["results"][0]["score"] - expected_score(good, 0 if good else 1)) < 1e-6
                    with self._lock:
                        self.versions.append((sent, time.monotonic(), data["version"]))
                        self.wrong_scores += not ok

    def _record(self, outcome: str) -> None:
        with self._lock:
            self.outcomes[outcome] += 1

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def wait_for(self, condition: Callable[[], bool]) -> None:
        limit = time.monotonic() + LOAD_LIMIT_S
        while not condition() and time.monotonic() < limit and self.sent < self.max_requests:
            time.sleep(0.01)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(LOAD_LIMIT_S)


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples named `name` whose labels include `labels`, parsed by prometheus_client."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def test_e2e_concurrent_clients_are_batched_and_metrics_pass_promtool(
    busy_repository: Path, tmp_path: Path
) -> None:
    with LocalServer(busy_repository, tmp_path / "server.log", FIXED_BATCHES) as server:
        with Load(server.url, max_requests=300) as load:
            load.wait_for(lambda: False)  # until all 300 are sent
        # the load's exit joined every client, so all 300 are answered before the scrape
        scrape = httpx.get(server.url + "/metrics").text
    assert load.outcomes == Counter({"200": 300}) and load.wrong_scores == 0
    batches = metric_value(scrape, "lunaserve_batch_size_count")
    rows = metric_value(scrape, "lunaserve_batch_size_sum")
    assert rows == 300 and batches < rows, f"{batches} batches for {rows} rows: nothing was batched"
    assert metric_value(scrape, "lunaserve_requests_total", metric="context_adherence", outcome="ok") == 300
    check_with_promtool(scrape)
