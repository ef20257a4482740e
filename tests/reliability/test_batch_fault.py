"""An exception inside one batch fails that batch's requests and nothing else; the server goes on.

Pass criteria, against a real uvicorn server over HTTP whose model (a tiny counting metric)
raises on any batch holding a window with an unknown word, the fault injected through the
app's `runner_factory` seam (the one place a test may reach inside): a poisoned request alone
gets 500 with an error id and no exception text; then, with 8 clients sending 400 requests of
which one in ten is poisoned, every 500 carries the error id of a batch the log names as failed
and that batch held a poisoned request (no healthy batch failed), every healthy request answered
200 has its known score, and afterwards `/readyz` is 200 and a healthy request is scored.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import uvicorn

from loadtest.server import free_port
from service.app import create_app
from service.batching.runner import Predict, Runner, ThreadRunner
from service.config import BatchingSettings, DeadlineSettings, Settings
from service.runtime.encoding import Window
from tests.conftest import counting_spec
from tests.tiny_models import SPECIALS, expected_score, write_counting_artifact

UNKNOWN = SPECIALS.index("[UNK]")  # "poison" is not in the tiny tokenizer's vocabulary
SCORE = "/v1/metrics/context_adherence/score"
ERROR_ID = re.compile(r"error id ([0-9a-f]{12})")
HEALTHY = {"output": "good good", "context": "the city"}
POISONED = {"output": "poison", "context": "the city"}


def poisoned_runner(predict: Predict, name: str) -> Runner:
    def forward(windows: Sequence[Window]) -> np.ndarray:
        if any(UNKNOWN in w.input_ids for w in windows):
            raise RuntimeError("injected fault: secret internals")
        time.sleep(0.002)  # a batch takes a little time, so concurrent requests share batches
        return predict(windows)

    return ThreadRunner(forward, name)


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("batch_fault")
    (root / "work").mkdir()
    write_counting_artifact(root / "repo", counting_spec(), root / "work")
    settings = Settings(
        repository=root / "repo",
        batching=BatchingSettings(calibrate=False),
        deadlines=DeadlineSettings(guardrail_timeout_ms=30_000, observability_timeout_ms=30_000),
    )
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, runner_factory=poisoned_runner), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)  # start-up poll only
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


def test_a_failing_batch_fails_only_its_own_requests(
    url: str, caplog: pytest.LogCaptureFixture, record_property: Callable[[str, object], None]
) -> None:
    caplog.set_level(logging.ERROR, logger="service")
    with httpx.Client(base_url=url, timeout=30) as client:
        alone = client.post(SCORE, json={"items": [POISONED]})
        assert alone.status_code == 500 and "error id" in alone.json()["detail"]
        assert "secret" not in alone.text and "injected" not in alone.text
        rng = random.Random(0)
        poisoned = [rng.random() < 0.1 for _ in range(400)]

        def send(bad: bool) -> tuple[bool, httpx.Response]:
            return bad, client.post(SCORE, json={"items": [POISONED if bad else HEALTHY]})

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(send, poisoned))
        ready = client.get("/readyz").status_code
        after = client.post(SCORE, json={"items": [HEALTHY]})
    failed_batches = {
        found.group(1)
        for record in caplog.records
        if "failed on" in record.getMessage() and (found := ERROR_ID.search(record.getMessage()))
    }

    def error_id(response: httpx.Response) -> str:
        found = ERROR_ID.search(str(response.json()["detail"]))
        assert found, response.text
        return found.group(1)

    poisoned_ids = {error_id(r) for bad, r in answers if bad}
    healthy_failed = [r for bad, r in answers if not bad and r.status_code != 200]
    healthy_ok = [r for bad, r in answers if not bad and r.status_code == 200]
    record_property("requests: poisoned / healthy / healthy answered 200",
                    f"{sum(poisoned)} / {400 - sum(poisoned)} / {len(healthy_ok)}")  # fmt: skip
    record_property("failed batches (log) / healthy requests that shared one", f"{len(failed_batches)} / "
                    f"{len(healthy_failed)}")  # fmt: skip
    assert all(r.status_code == 500 for bad, r in answers if bad)
    assert all(r.status_code == 500 and error_id(r) in poisoned_ids for r in healthy_failed)
    assert poisoned_ids <= failed_batches  # every failed batch is named in the log
    assert len(failed_batches) <= sum(poisoned) + 1  # +1: the poisoned request sent alone
    expected = expected_score(2, 0)
    assert all(abs(r.json()["results"][0]["score"] - expected) < 1e-6 for r in healthy_ok)
    assert ready == 200 and after.status_code == 200
