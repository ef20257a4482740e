"""The shipped repository over real HTTP: version 2 is served by default, and a hot swap between
the two real versions (2 -> 1 -> 2) under load fails no request.

Every answer is checked against the runtime's own score for that version, computed in process,
so a request answered by the wrong version (or a mixed batch) is caught, not only a failed one.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest

from loadtest.server import LocalServer
from service.runtime.artifact import load_artifact
from service.runtime.classifier import MetricModel
from service.runtime.postprocess import ItemScore
from tests.e2e.test_server_e2e import CLEAN_EXIT, FIXED_BATCHES

REPOSITORY = Path(__file__).resolve().parents[2] / "repository"
SCORE = "/v1/metrics/context_adherence/score"
ACTIVATE = "/v1/admin/metrics/context_adherence/activate"
REFUND = (
    "Orders can be returned within 30 days of delivery for a full refund. Refunds are paid to the original"
    " payment method within 5 business days. Gift cards cannot be returned."
)
ITEMS = [
    {"input": "How long do I have to return an order?", "context": REFUND, "output": answer}
    for answer in (
        "You can return an order within 30 days of delivery for a full refund.",
        "You can return an order within 90 days of delivery for a full refund.",
        "Refunds go back to the payment method you used, within 5 business days.",
        "Refunds are paid as store credit within 5 business days.",
    )
]
TOLERANCE = 0.005  # the spec's batch-invariance bound: a request may share its batch with others


def runtime_scores(version: str) -> list[float]:
    results = MetricModel(load_artifact(REPOSITORY / "context_adherence" / version)).score(ITEMS)
    assert all(isinstance(r, ItemScore) for r in results)
    return [r.score for r in results if isinstance(r, ItemScore)]


@pytest.mark.skipif(
    not (REPOSITORY / "context_adherence" / "2").is_dir(), reason="version 2 is not in the repository"
)
def test_shipped_versions_hot_swap_under_load(tmp_path: Path) -> None:
    expected = {v: runtime_scores(v) for v in ("1", "2")}
    assert max(abs(a - b) for a, b in zip(expected["1"], expected["2"], strict=True)) > 10 * TOLERANCE
    admin = {"Authorization": "Bearer admin-key"}
    env = {"LUNASERVE_AUTH__ADMIN_KEYS": json.dumps(["admin-key"])}
    outcomes: Counter[str] = Counter()
    wrong: list[str] = []
    stop = threading.Event()

    def client(url: str, k: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            i = k
            while not stop.is_set():
                index = i % len(ITEMS)
                response = http.post(SCORE, json={"items": [ITEMS[index]], "timeout_ms": 20_000})
                i += 1
                if response.status_code != 200:
                    outcomes[f"http {response.status_code}"] += 1
                    continue
                data = response.json()
                version, score = data["version"], data["results"][0]["score"]
                outcomes[f"v{version}"] += 1
                if abs(score - expected[version][index]) > TOLERANCE:
                    wrong.append(f"v{version} item {index}: {score} != {expected[version][index]}")

    def wait_for_answers(more: int) -> None:
        """Until `more` further requests are answered (a minute at most: a hang fails the test)."""
        target = sum(outcomes.values()) + more
        for _ in range(6000):
            if sum(outcomes.values()) >= target or stop.wait(0.01):
                return
        raise AssertionError(f"fewer than {more} answers in a minute: {outcomes}")

    with LocalServer(REPOSITORY, tmp_path / "server.log", FIXED_BATCHES, env=env) as server:
        first = httpx.post(server.url + SCORE, json={"items": ITEMS}, timeout=60).json()
        assert first["version"] == "2"  # the newest version that verifies
        threads = [threading.Thread(target=client, args=(server.url, k)) for k in range(4)]
        for t in threads:
            t.start()
        swaps = []
        try:
            for version in ("1", "2"):
                wait_for_answers(40)
                swaps.append(
                    httpx.post(server.url + ACTIVATE, json={"version": version}, headers=admin, timeout=60)
                )
            wait_for_answers(40)
        finally:
            stop.set()
        for t in threads:
            t.join(timeout=60)
        assert [s.status_code for s in swaps] == [200, 200], [s.text for s in swaps]
        assert server.stop() in CLEAN_EXIT
    assert set(outcomes) == {"v1", "v2"}, outcomes  # answered by both versions, never failed
    assert not wrong, wrong[:5]
