"""A real Prometheus scraping a live lunaserve with deploy/prometheus/rules.yaml loaded.

Load in both traffic classes, a queue bound of two requests so that some are refused, then,
through Prometheus's HTTP API: the recording rules give a p99 per metric and class, every Grafana
panel's expression returns data, and the rejection alert fires (its `for:` cut to 0 s: the same
expression, without waiting five minutes). Waits poll for a condition with a bound; no sleep
decides an outcome.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lunaserve.observe import Observed, dashboard_expressions, prometheus_binary
from tests.conftest import counting_spec
from tests.tiny_models import write_counting_artifact

pytestmark = pytest.mark.slow
SCORE = "/v1/metrics/context_adherence/score"
WAIT_S = 60


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    try:
        prometheus_binary()
    except RuntimeError as exc:
        if __import__("os").environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    root = tmp_path_factory.mktemp("observe")
    write_counting_artifact(root / "repo", counting_spec(), root, busy_matmuls=64)
    args = ["--batching.calibrate", "false", "--admission.max_queue_requests", "2"]
    with Observed(root / "repo", root, args, alert_for_s=0) as running:
        yield running


def send_load(url: str, seconds: float = 8.0, clients: int = 12) -> Counter[str]:
    """Closed-loop clients for `seconds`: long enough for several scrapes, since Prometheus's
    rate() sees only increases between two scrapes of a series that already existed."""
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(k: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            i = k
            while time.monotonic() < stop_at:
                body = {
                    "items": [{"output": "good " * (i % 3) + "bad", "context": "the city " * 20}],
                    "traffic_class": "observability" if i % 2 else "guardrail",
                }
                status = http.post(SCORE, json=body).status_code
                with lock:
                    outcomes[str(status)] += 1
                i += clients

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    return outcomes


def eventually(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.5)  # polling Prometheus for a condition, bounded by WAIT_S
    pytest.fail(f"after {WAIT_S} s: {what}")


def test_prometheus_records_alerts_and_feeds_every_dashboard_panel(observed: Observed) -> None:
    prometheus = observed.prometheus
    outcomes = send_load(observed.server.url)
    assert outcomes["200"] > 0 and outcomes["503"] > 0, outcomes  # served, and refused past the bound
    p99 = eventually(
        lambda: (
            {
                (r["metric"]["metric"], r["metric"]["traffic_class"])
                for r in prometheus.query("lunaserve:request_duration_seconds:p99_1m")
                if r["value"][1] != "NaN"
            }
            >= {("context_adherence", "guardrail"), ("context_adherence", "observability")}
        ),
        "a p99 per metric and class from the recording rule",
    )
    assert p99
    for title, expr in dashboard_expressions():
        eventually(lambda expr=expr: prometheus.query(expr), f"data for panel {title!r}: {expr}")
    firing = eventually(
        lambda: [
            a
            for a in prometheus.alerts()
            if a["labels"]["alertname"] == "LunaserveRejecting" and a["state"] == "firing"
        ],
        "LunaserveRejecting firing",
    )
    assert firing[0]["labels"]["metric"] == "context_adherence"
    quiet = {a["labels"]["alertname"] for a in prometheus.alerts() if a["state"] == "firing"}
    assert not quiet & {"LunaserveNotReady", "LunaserveSchedulerDead", "LunaserveVersionsDisagree"}


def test_rules_with_short_waits_change_only_the_waits(tmp_path: Path) -> None:
    import yaml

    from lunaserve.observe import RULES, rules_with_short_waits

    original = yaml.safe_load(RULES.read_text())
    short = yaml.safe_load(rules_with_short_waits(RULES, tmp_path / "r.yaml", 0).read_text())
    for group, cut in zip(original["groups"], short["groups"], strict=True):
        for rule, new in zip(group["rules"], cut["rules"], strict=True):
            assert {k: v for k, v in rule.items() if k != "for"} == {
                k: v for k, v in new.items() if k != "for"
            }
            assert new.get("for", "0s") == "0s"
