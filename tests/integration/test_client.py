"""lunaserve.client against the real server: in process (AsyncClient over ASGI) and over a real
socket (Client against `lunaserve serve`), plus scripted transports for retries and a socket that
never answers for deadlines. Waits the client asks for are recorded, not slept where a test
decides on them."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from loadtest.server import LocalServer
from lunaserve import client as lc
from lunaserve.client import (
    AsyncClient,
    Client,
    DeadlineExceededError,
    InvalidInputError,
    NotFoundError,
    ObservabilityBatcher,
    OverloadedError,
    RetryPolicy,
    UnauthorizedError,
    guard,
    guard_async,
)
from service.app import create_app
from tests.integration.test_api import settings_for
from tests.tiny_models import expected_score

METRIC = "context_adherence"
GOOD = {"output": "good good", "context": "the city"}
BAD = {"output": "bad", "context": "the city"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    from tests.conftest import counting_spec
    from tests.tiny_models import write_counting_artifact

    root = tmp_path_factory.mktemp("client")
    write_counting_artifact(root / "repo", counting_spec(), root)
    write_counting_artifact(
        root / "repo",
        counting_spec(
            "toxicity_like", required_fields=["output"], text_pair={"first": ["output"], "second": []}
        ),
        root,
    )
    keys = {"LUNASERVE_AUTH__API_KEYS": json.dumps([{"key": "k1"}])}
    with LocalServer(
        root / "repo", root / "server.log", ["--batching.calibrate", "false"], env=keys
    ) as running:
        yield running


def test_client_results_match_the_http_api(server: LocalServer) -> None:
    raw = httpx.post(
        server.url + f"/v1/metrics/{METRIC}/score",
        json={"items": [GOOD, BAD]},
        headers={"Authorization": "Bearer k1"},
    ).json()
    with Client(server.url, api_key="k1") as client:
        result = client.score(METRIC, [GOOD, BAD], timeout_ms=5000)
        assert result.metric == raw["metric"] and result.version == raw["version"]
        assert [r.score for r in result.results] == [r["score"] for r in raw["results"]]
        assert result.results[0].score == pytest.approx(expected_score(2, 0))
        assert [r.passed for r in result.results] == [True, False] and not result.passed
        outcomes = client.score_many([METRIC, "toxicity_like"], [GOOD], timeout_ms=5000)
        assert [(o.metric, o.status) for o in outcomes] == [(METRIC, "ok"), ("toxicity_like", "ok")]
        assert outcomes[0].results and outcomes[0].results[0].passed
        assert {m.name for m in client.metrics()} == {METRIC, "toxicity_like"}
        with pytest.raises(NotFoundError):
            client.score("nope", [GOOD])
        with pytest.raises(InvalidInputError) as invalid:
            client.score(METRIC, [{"output": "good"}])  # no context
        assert invalid.value.status == 422 and invalid.value.errors
    with Client(server.url) as anonymous, pytest.raises(UnauthorizedError):
        anonymous.score(METRIC, [GOOD])


def test_guard_allows_blocks_and_raises_caller_bugs(server: LocalServer) -> None:
    with Client(server.url, api_key="k1") as client:
        assert guard(client, METRIC, [GOOD], timeout_ms=5000, fail_open=False).reason == "passed"
        blocked = guard(client, METRIC, [GOOD, BAD], timeout_ms=5000, fail_open=True)
        assert not blocked.allowed and blocked.reason == "blocked" and blocked.result is not None
        with pytest.raises(InvalidInputError):  # whatever the policy: a bug, not an outage
            guard(client, METRIC, [{"output": "x"}], timeout_ms=5000, fail_open=True)


def test_batcher_sends_everything_in_observability_batches(server: LocalServer) -> None:
    seen: list[int] = []
    with Client(server.url, api_key="k1") as client:
        batcher = ObservabilityBatcher(
            client,
            METRIC,
            max_batch=16,
            flush_interval_s=0.05,
            on_result=lambda items, result: seen.append(len(result.results)),
        )
        for i in range(100):
            batcher.submit(GOOD if i % 2 else BAD)
        stats = batcher.close()
    assert stats.sent == 100 == sum(seen) and stats.dropped == 0 and stats.failed == 0
    assert stats.batches == len(seen) and max(seen) <= 16


# -- in process ------------------------------------------------------------------------------


@pytest.fixture
async def asgi_client(repository: Path) -> AsyncIterator[AsyncClient]:
    app = create_app(settings_for(repository))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), AsyncClient("http://test", transport=transport) as client:
        yield client


async def test_async_client_in_process(asgi_client: AsyncClient) -> None:
    result = await asgi_client.score(METRIC, [GOOD, BAD], traffic_class="observability", timeout_ms=5000)
    assert [r.passed for r in result.results] == [True, False]
    decision = await guard_async(asgi_client, METRIC, [GOOD], timeout_ms=5000, fail_open=False)
    assert decision.allowed and decision.reason == "passed"
    assert {m.name for m in await asgi_client.metrics()} >= {METRIC}


# -- retries, deadlines and policies, with scripted transports ---------------------------------


def scripted(*responses: httpx.Response, seen: list[httpx.Request] | None = None) -> httpx.MockTransport:
    queue = list(responses)

    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return queue.pop(0)

    return httpx.MockTransport(handle)


OK = httpx.Response(
    200,
    json={
        "metric": METRIC,
        "version": "1",
        "results": [
            {"score": 0.9, "label": "supported", "passed": True, "windows": 1, "truncated_tokens": 0}
        ],
    },
)


def busy(retry_after: str) -> httpx.Response:
    problem = {"type": "x", "title": "Cannot serve", "status": 503, "detail": "queue full"}
    return httpx.Response(503, json=problem, headers={"Retry-After": retry_after})


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    recorded: list[float] = []
    monkeypatch.setattr(lc.time, "sleep", recorded.append)
    return recorded


def test_a_503_is_retried_after_its_retry_after(waits: list[float]) -> None:
    seen: list[httpx.Request] = []
    with Client("http://x", transport=scripted(busy("1"), OK, seen=seen)) as client:
        result = client.score(METRIC, [GOOD], timeout_ms=5000)
    assert result.passed and waits == [1.0] and len(seen) == 2
    first, second = (json.loads(r.content) for r in seen)
    assert second["timeout_ms"] <= first["timeout_ms"] <= 5000  # what is left is sent, never more
    assert seen[0].headers["user-agent"] == f"lunaserve-client/{lc.VERSION}"


def test_no_retry_past_the_deadline_or_on_caller_errors(waits: list[float]) -> None:
    with Client("http://x", transport=scripted(busy("3"))) as client, pytest.raises(OverloadedError) as exc:
        client.score(METRIC, [GOOD], timeout_ms=1000)  # Retry-After 3 s does not fit in 1 s
    assert exc.value.retry_after_s == 3 and waits == []
    invalid = httpx.Response(422, json={"status": 422, "detail": "bad", "errors": [{"loc": ["items"]}]})
    with Client("http://x", transport=scripted(invalid)) as client, pytest.raises(InvalidInputError):
        client.score(METRIC, [GOOD], timeout_ms=1000)
    assert waits == []
    retry = RetryPolicy(attempts=2, backoff_s=0.01)
    transport = scripted(busy("0"), busy("0"))
    with Client("http://x", transport=transport, retry=retry) as client, pytest.raises(OverloadedError):
        client.score(METRIC, [GOOD], timeout_ms=5000)
    assert waits == [0.0]  # two attempts, one wait between them


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A socket that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    listener.close()


def test_the_deadline_bounds_a_call_and_guard_applies_the_policy(silent_server: str) -> None:
    with Client(silent_server) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            client.score(METRIC, [GOOD], timeout_ms=300)
        elapsed = time.monotonic() - started
        assert 0.25 <= elapsed < 1.0, elapsed  # the budget, not httpx's default of seconds
        open_ = guard(client, METRIC, [GOOD], timeout_ms=200, fail_open=True)
        closed = guard(client, METRIC, [GOOD], timeout_ms=200, fail_open=False)
    assert (open_.allowed, open_.reason) == (True, "failed_open")
    assert (closed.allowed, closed.reason) == (False, "failed_closed")
    assert isinstance(open_.error, DeadlineExceededError) and open_.result is None


def test_a_full_batcher_drops_its_oldest_items() -> None:
    entered, release = threading.Event(), threading.Event()

    def handle(request: httpx.Request) -> httpx.Response:
        entered.set()
        release.wait(10)
        n = len(json.loads(request.content)["items"])
        item = {"score": 0.9, "label": "supported", "passed": True, "windows": 1, "truncated_tokens": 0}
        return httpx.Response(200, json={"metric": METRIC, "version": "1", "results": [item] * n})

    client = Client("http://x", transport=httpx.MockTransport(handle))
    batcher = ObservabilityBatcher(client, METRIC, max_batch=2, max_queue=3, flush_interval_s=10)
    batcher.submit(GOOD)
    batcher.submit(GOOD)  # a full batch: taken at once, then held in flight
    assert entered.wait(10)
    for _ in range(10):
        batcher.submit(BAD)  # the queue keeps the newest 3
    release.set()
    stats = batcher.close()
    client.close()
    assert (stats.submitted, stats.dropped, stats.sent, stats.failed) == (12, 7, 5, 0)


async def test_the_async_deadline_bounds_a_call_and_guard_applies_the_policy(silent_server: str) -> None:
    async with AsyncClient(silent_server) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            await client.score(METRIC, [GOOD], timeout_ms=300)
        assert 0.25 <= time.monotonic() - started < 1.0
        closed = await guard_async(client, METRIC, [GOOD], timeout_ms=200, fail_open=False)
    assert (closed.allowed, closed.reason) == (False, "failed_closed")
