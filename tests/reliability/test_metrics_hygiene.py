"""Prometheus series stay bounded whatever clients send, and the exposition passes promtool.

Pass criteria, against a live server on one tiny metric: after 2,000 requests in CI (10,000 in
the longer run, `LUNASERVE_RELIABILITY_REQUESTS=10000`; 4 clients) naming random unknown
metrics on both scoring routes, with random inputs and traffic classes, every label value of
every series comes from a fixed set (the served metric names, the two traffic classes, the
outcome and reason names): no client-chosen string becomes a series, so the count is bounded;
and `promtool check metrics` accepts the scrape.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import string
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadtest.server import LocalServer
from tests.conftest import check_with_promtool, counting_spec
from tests.tiny_models import write_counting_artifact

REQUESTS = int(os.environ.get("LUNASERVE_RELIABILITY_REQUESTS", "2000"))
CLIENTS = 4
PREFIX = "zq"  # every random metric name starts so; no label value may contain it


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    root = tmp_path_factory.mktemp("hygiene")
    (root / "work").mkdir()
    write_counting_artifact(root / "repo", counting_spec(), root / "work")
    with LocalServer(root / "repo", root / "server.log", ["--batching.calibrate", "false"]) as running:
        yield running


def requests_of(seed: int, n: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        name = PREFIX + "".join(rng.choice(string.ascii_lowercase + "_") for _ in range(rng.randint(1, 40)))
        body: dict[str, object] = {"items": [{"output": "good " * rng.randint(1, 9), "context": "the city"}]}
        if rng.random() < 0.5:
            body["traffic_class"] = rng.choice(["guardrail", "observability"])
        if i % 2:
            out.append((f"/v1/metrics/{name}/score", json.dumps(body).encode()))
        else:
            out.append(("/v1/score", json.dumps({**body, "metrics": [name, "context_adherence"]}).encode()))
    return out


def send_all(server: LocalServer, requests: list[tuple[str, bytes]]) -> list[int]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    statuses = []
    try:
        for path, body in requests:
            connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
    finally:
        connection.close()
    return statuses


def scrape(server: LocalServer) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("GET", "/metrics")
        return connection.getresponse().read().decode()
    finally:
        connection.close()


def label_values(text: str) -> dict[str, set[str]]:
    """Every label name of the scrape with the values it takes."""
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for name, value in sample.labels.items():
                found.setdefault(name, set()).add(value)
    return found


def test_series_stay_bounded_and_promtool_accepts_them(
    server: LocalServer, record_property: Callable[[str, object], None]
) -> None:
    share = REQUESTS // CLIENTS
    with ThreadPoolExecutor(CLIENTS) as pool:
        parts = list(pool.map(lambda k: send_all(server, requests_of(k, share)), range(CLIENTS)))
    statuses = [status for part in parts for status in part]
    assert len(statuses) == CLIENTS * share and set(statuses) <= {200, 404}
    text = scrape(server)
    labels = label_values(text)
    assert labels["metric"] == {"context_adherence"}
    assert labels["traffic_class"] <= {"guardrail", "observability"}
    client_chosen = {name: {v for v in values if PREFIX in v} for name, values in labels.items()}
    assert not any(client_chosen.values()), client_chosen
    record_property("requests with random metric names", len(statuses))
    record_property("series after them", sum(1 for line in text.splitlines() if line and line[0] != "#"))
    check_with_promtool(text)
