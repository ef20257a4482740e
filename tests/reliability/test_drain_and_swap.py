"""Drain and hot swap under load: no accepted request fails, and each answer carries the right version.

Pass criteria, against a live server on a tiny metric that costs a few ms a batch, with 12
clients sending (guardrail and observability, scores checked against the model's known answer):
- hot swap: 600 requests while `POST /v1/admin/metrics/context_adherence/activate` moves the
  metric from version 1 to version 2 after the first 100. All 600 are answered 200 with the
  right score; every answer received before the swap was asked for carries version 1, every
  request sent after the swap returned carries version 2, and the server then stops cleanly.
- drain: SIGTERM while clients keep opening new connections. The server exits cleanly after
  "drained and stopped"; its own count of outcomes has no failed or expired request; every
  request it answered 200 reached its client; the others were refused (503, or the connection
  refused once it stopped listening), none failed in between.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from loadtest.server import LocalServer
from tests.conftest import counting_spec
from tests.e2e.test_server_e2e import BUSY, CLEAN_EXIT, FIXED_BATCHES, Load
from tests.tiny_models import write_counting_artifact


@pytest.fixture
def busy_repository(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    write_counting_artifact(tmp_path / "repo", counting_spec(), work, busy_matmuls=BUSY)
    return tmp_path / "repo"


def test_hot_swap_under_load_fails_no_request(
    busy_repository: Path, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    admin = {"Authorization": "Bearer admin-key"}
    env = {"LUNASERVE_AUTH__ADMIN_KEYS": json.dumps(["admin-key"])}
    with LocalServer(busy_repository, tmp_path / "server.log", FIXED_BATCHES, env=env) as server:
        work = tmp_path / "v2"
        work.mkdir()
        write_counting_artifact(busy_repository, counting_spec(version="2"), work, busy_matmuls=BUSY)
        with Load(server.url, max_requests=600) as load:
            load.wait_for(lambda: load.sent >= 100)
            asked = time.monotonic()
            swap = httpx.post(
                server.url + "/v1/admin/metrics/context_adherence/activate", json={"version": "2"},
                headers=admin, timeout=30,
            )  # fmt: skip
            swapped = time.monotonic()
            load.wait_for(lambda: False)  # keep going until all 600 are sent
        assert swap.status_code == 200, swap.text
        exit_code = server.stop()
    before = [v for _, answered, v in load.versions if answered < asked]
    after = [v for sent, _, v in load.versions if sent > swapped]
    record_property("answers 200 / sent", f"{load.outcomes['200']} / {load.sent}")
    record_property("swap took (ms)", round((swapped - asked) * 1000, 1))
    record_property("answers before the swap: v1 / v2", f"{before.count('1')} / {before.count('2')}")
    record_property("requests sent after it: v1 / v2", f"{after.count('1')} / {after.count('2')}")
    assert load.outcomes == Counter({"200": 600}), load.outcomes
    assert load.wrong_scores == 0
    assert before and set(before) == {"1"}
    assert after and set(after) == {"2"}
    assert exit_code in CLEAN_EXIT


def test_sigterm_finishes_every_accepted_request(
    busy_repository: Path, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    server = LocalServer(busy_repository, tmp_path / "server.log", FIXED_BATCHES)
    with server, Load(server.url, max_requests=2000, fresh_connections=True) as load:
        load.wait_for(lambda: load.outcomes["200"] >= 100)
        exit_code = server.stop()
        load.stop.set()
    log = server.log_path.read_text()
    assert exit_code in CLEAN_EXIT and "drained and stopped" in log, log[-3000:]
    summary = re.search(r"requests by outcome: (\{.*\})", log)
    assert summary, log[-3000:]
    served = json.loads(summary.group(1))
    record_property("server's outcomes", json.dumps(served, sort_keys=True))
    record_property("clients' outcomes", json.dumps(dict(sorted(load.outcomes.items()))))
    # every request the server accepted was answered, and every answer reached its client
    assert served["failed"] == served["expired"] == 0, served
    assert served["ok"] == load.outcomes["200"], (served, load.outcomes)
    assert load.wrong_scores == 0
    unexpected = {k: v for k, v in load.outcomes.items() if k not in {"200", "503", "refused"}}
    assert not unexpected or all(k.startswith("transport") for k in unexpected), load.outcomes
