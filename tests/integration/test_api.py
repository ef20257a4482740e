"""The HTTP API in process (httpx ASGITransport + lifespan): contract, errors, limits, auth.

Apps run with `batching.calibrate=false` (batch caps must not depend on the machine's speed)
except where the calibration itself is tested; batches are held or failed through the
`runner_factory` seam, time moves on a FakeClock, and tests wait on events, never on yields.
Prometheus series are read with `get_sample_value`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from models.repository import publish_entry
from service.app import create_app
from service.batching.clock import FakeClock
from service.batching.observer import SchedulerObserver
from service.batching.runner import Predict, Runner, ThreadRunner
from service.config import (
    AdmissionSettings,
    ApiKey,
    AuthSettings,
    BatchingSettings,
    DeadlineSettings,
    LimitSettings,
    Settings,
)
from service.runtime.cpus import usable_cpus
from tests.conftest import counting_spec
from tests.tiny_models import build_word_tokenizer, expected_score, write_counting_artifact

SCORE = "/v1/metrics/context_adherence/score"
FIXED_BATCHES = BatchingSettings(calibrate=False)


# Default deadlines far off: a test about time states its own. On a starved CPU (a fine-tune on
# both cores) the guardrail default of 200 ms passed before a windowed item was admitted: 503.
UNHURRIED = DeadlineSettings(guardrail_timeout_ms=30_000, observability_timeout_ms=30_000)


def settings_for(repository: Path, **changes: Any) -> Settings:
    """Settings for a test app: batch caps as configured, never calibrated on this machine."""
    defaults = {"repository": repository, "batching": FIXED_BATCHES, "deadlines": UNHURRIED}
    return Settings(**{**defaults, **changes})


async def started(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
def prometheus() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def client(repository: Path, prometheus: CollectorRegistry) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for(repository, limits=LimitSettings(max_items=4, max_field_chars=500))
    async for c in started(create_app(settings, prometheus_registry=prometheus)):
        yield c


def requests_total(
    prometheus: CollectorRegistry, metric: str, traffic_class: str, outcome: str
) -> float | None:
    labels = {"metric": metric, "traffic_class": traffic_class, "outcome": outcome}
    return prometheus.get_sample_value("lunaserve_requests_total", labels)


def item(output: str, context: str = "the city", **extra: str) -> dict[str, Any]:
    return {"output": output, "context": context, **extra}


async def test_api_score_returns_results_in_item_order(client: httpx.AsyncClient) -> None:
    body = {"items": [item("good good"), item("bad"), item("good", input="who")]}
    response = await client.post(SCORE, json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert (data["metric"], data["version"]) == ("context_adherence", "1")
    scores = [r["score"] for r in data["results"]]
    assert scores == pytest.approx([expected_score(2, 0), expected_score(0, 1), expected_score(1, 0)])
    assert [r["passed"] for r in data["results"]] == [True, False, True]
    assert data["results"][1]["label"] == "hallucinated"
    assert data["results"][0]["windows"] == 1 and data["results"][0]["truncated_tokens"] == 0
    assert float(response.headers["x-queue-time-ms"]) >= 0
    assert float(response.headers["x-inference-time-ms"]) > 0
    assert len(response.headers["x-request-id"]) == 32


async def test_api_long_context_is_windowed_and_reported(client: httpx.AsyncClient) -> None:
    context = " ".join(["x"] * 150) + " good good"
    data = (await client.post(SCORE, json={"items": [item("x", context)]})).json()
    (result,) = data["results"]
    assert result["windows"] > 1 and result["score"] == pytest.approx(expected_score(2, 0))


async def test_api_errors_are_problem_json(client: httpx.AsyncClient) -> None:
    missing = await client.post("/v1/metrics/nope/score", json={"items": [item("good")]})
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["type"].endswith("/not-found") and missing.json()["instance"]
    schema = await client.post(SCORE, json={"items": [], "traffic_class": "vip"})
    assert schema.status_code == 422 and {tuple(e["loc"][-1:]) for e in schema.json()["errors"]} >= {
        ("items",),
        ("traffic_class",),
    }
    no_context = await client.post(SCORE, json={"items": [item("good"), {"output": "good"}]})
    assert no_context.status_code == 422
    assert no_context.json()["errors"] == [
        {"item": 1, "field": "context", "msg": "context_adherence requires context"}
    ]
    garbage = await client.post(SCORE, content=b"{not json", headers={"content-type": "application/json"})
    assert garbage.status_code == 422


async def test_api_limits_items_fields_and_body(client: httpx.AsyncClient) -> None:
    too_many = await client.post(SCORE, json={"items": [item("good")] * 5})
    assert too_many.status_code == 422 and "limit is 4" in too_many.json()["detail"]
    too_long = await client.post(SCORE, json={"items": [item("good", "x " * 300)]})
    assert too_long.status_code == 422 and too_long.json()["errors"][0]["field"] == "context"
    huge = await client.post(SCORE, content=b"x" * (5 << 20), headers={"content-type": "application/json"})
    assert huge.status_code == 413 and huge.json()["status"] == 413


async def test_api_reject_policy_item_is_422_naming_the_item(client: httpx.AsyncClient) -> None:
    body = {"items": [{"output": "good"}, {"output": "good " * 100}]}
    response = await client.post("/v1/metrics/toxicity_like/score", json=body)
    assert response.status_code == 422
    assert (
        response.json()["errors"][0]["item"] == 1
        and "policy is reject" in response.json()["errors"][0]["msg"]
    )


async def test_api_multi_metric_reports_each_outcome(client: httpx.AsyncClient) -> None:
    body = {"metrics": ["context_adherence", "toxicity_like", "missing"], "items": [item("good")]}
    response = await client.post("/v1/score", json=body)
    assert response.status_code == 200
    outcomes = {o["metric"]: o for o in response.json()["outcomes"]}
    assert outcomes["context_adherence"]["status"] == "ok"
    assert outcomes["toxicity_like"]["results"][0]["passed"] is True
    assert outcomes["missing"]["status"] == "not_found" and outcomes["missing"]["problem"]["status"] == 404


async def test_api_lists_metrics_and_details(client: httpx.AsyncClient) -> None:
    listing = (await client.get("/v1/metrics")).json()["metrics"]
    assert [(m["name"], m["active_version"], m["versions"]) for m in listing] == [
        ("context_adherence", "1", ["1"]),
        ("toxicity_like", "1", ["1"]),
    ]
    detail = (await client.get("/v1/metrics/context_adherence")).json()
    assert detail["spec"]["positive_label"] == "supported" and detail["use_case"] == "guardrail"
    assert len(detail["files"]["tokenizer.json"]["sha256"]) == 64
    assert (await client.get("/v1/metrics/nope")).status_code == 404


async def test_api_batch_row_cap_is_calibrated_and_reported(repository: Path) -> None:
    batching = BatchingSettings(max_batch_tokens=1024, max_batch_rows=16, calibration_tokens=64)
    prometheus = CollectorRegistry()
    app = create_app(Settings(repository=repository, batching=batching), prometheus_registry=prometheus)
    async for c in started(app):
        detail = (await c.get("/v1/metrics/context_adherence")).json()["batching"]
        calibration = detail["calibration"]
        assert calibration["tokens"] == 64 and list(calibration["rows_per_s"]) == ["1", "2", "4", "8", "16"]
        assert detail["max_batch_rows"] in (1, 2, 4, 8, 16) and detail["max_batch_tokens"] == 1024
        limit = prometheus.get_sample_value("lunaserve_batch_rows_limit", {"metric": "context_adherence"})
        assert limit == detail["max_batch_rows"]
    fixed = BatchingSettings(max_batch_rows=3, calibrate=False)
    async for c in started(create_app(Settings(repository=repository, batching=fixed))):
        detail = (await c.get("/v1/metrics/context_adherence")).json()["batching"]
        assert detail["calibration"] is None and detail["max_batch_rows"] == 3


async def test_api_probes_and_prometheus(client: httpx.AsyncClient, prometheus: CollectorRegistry) -> None:
    assert (await client.get("/livez")).json()["status"] == "ok"
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["schedulers"] == "ok"
    await client.post(SCORE, json={"items": [item("good")]})
    scrape = await client.get("/metrics")
    assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")
    assert requests_total(prometheus, "context_adherence", "guardrail", "ok") == 1.0
    info = {"metric": "context_adherence", "version": "1"}
    assert prometheus.get_sample_value("lunaserve_model_info", info) == 1.0
    padding = {"metric": "context_adherence", "le": "+Inf"}
    assert prometheus.get_sample_value("lunaserve_batch_padding_ratio_bucket", padding) == 1.0
    assert prometheus.get_sample_value("lunaserve_ready") == 1.0
    alive = {"metric": "context_adherence"}
    assert prometheus.get_sample_value("lunaserve_scheduler_alive", alive) == 1.0


def test_health_collector_reports_not_ready_and_a_dead_scheduler() -> None:
    from service.metrics import HealthCollector

    registry = CollectorRegistry()
    schedulers = {"a": True, "b": False}
    registry.register(HealthCollector(ready=lambda: False, schedulers=lambda: schedulers))
    assert registry.get_sample_value("lunaserve_ready") == 0.0
    assert registry.get_sample_value("lunaserve_scheduler_alive", {"metric": "a"}) == 1.0
    assert registry.get_sample_value("lunaserve_scheduler_alive", {"metric": "b"}) == 0.0


async def test_api_traffic_class_defaults_to_the_metric_use_case(
    client: httpx.AsyncClient, prometheus: CollectorRegistry
) -> None:
    await client.post("/v1/metrics/toxicity_like/score", json={"items": [{"output": "good"}]})
    await client.post(SCORE, json={"items": [item("good")], "traffic_class": "observability"})
    assert requests_total(prometheus, "toxicity_like", "observability", "ok") == 1.0
    assert requests_total(prometheus, "context_adherence", "observability", "ok") == 1.0


def broken_runner(predict: Predict, name: str) -> Runner:
    def broken(windows: Sequence[Any]) -> np.ndarray:
        raise RuntimeError("secret internals")

    return ThreadRunner(broken, name)


async def test_api_failing_inference_is_500_with_error_id_only(repository: Path) -> None:
    prometheus = CollectorRegistry()
    app = create_app(settings_for(repository), prometheus_registry=prometheus, runner_factory=broken_runner)
    async for client in started(app):
        response = await client.post(SCORE, json={"items": [item("good")]})
        assert response.status_code == 500
        assert "error id" in response.json()["detail"] and "secret" not in response.text
        assert (await client.get("/readyz")).status_code == 200  # the loop survived
    assert requests_total(prometheus, "context_adherence", "guardrail", "failed") == 1.0


@pytest.fixture
async def secured(repository: Path, prometheus: CollectorRegistry) -> AsyncIterator[httpx.AsyncClient]:
    auth = AuthSettings(
        api_keys=[
            ApiKey(key=SecretStr("k-obs"), traffic_class="observability"),
            ApiKey(key=SecretStr("k-any")),
        ],
        admin_keys=[SecretStr("k-admin")],
        protect_metrics=True,
    )
    async for c in started(create_app(settings_for(repository, auth=auth), prometheus_registry=prometheus)):
        yield c


async def test_api_auth_bearer_keys(secured: httpx.AsyncClient, prometheus: CollectorRegistry) -> None:
    body = {"items": [item("good")]}
    anonymous = await secured.post(SCORE, json=body)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")
    wrong = await secured.post(SCORE, json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    ok = await secured.post(SCORE, json=body, headers={"Authorization": "Bearer k-obs"})
    assert ok.status_code == 200
    assert (await secured.get("/livez")).status_code == 200 and (
        await secured.get("/readyz")
    ).status_code == 200
    assert (await secured.get("/metrics")).status_code == 401
    metrics = await secured.get("/metrics", headers={"Authorization": "Bearer k-any"})
    assert metrics.status_code == 200
    # the key's default class won over the use case
    assert requests_total(prometheus, "context_adherence", "observability", "ok") == 1.0
    admin = "/v1/admin/reload"
    assert (await secured.post(admin, headers={"Authorization": "Bearer k-any"})).status_code == 403
    assert (await secured.post(admin, headers={"Authorization": "Bearer k-admin"})).status_code == 200


async def test_api_admin_disabled_without_admin_keys(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/admin/reload")).status_code == 404


async def test_api_hot_swap_and_refused_bad_version(repository: Path, tmp_path: Path) -> None:
    admin = {"Authorization": "Bearer a"}
    settings = settings_for(repository, auth=AuthSettings(admin_keys=[SecretStr("a")]))
    prometheus = CollectorRegistry()
    async for client in started(create_app(settings, prometheus_registry=prometheus)):
        work = tmp_path / "v2"
        work.mkdir()
        write_counting_artifact(repository, counting_spec(version="2"), work)
        bad = write_counting_artifact(repository, counting_spec(version="3"), work)
        (bad / "model.onnx").write_bytes(b"corrupt")
        swap = await client.post(
            "/v1/admin/metrics/context_adherence/activate", json={"version": "2"}, headers=admin
        )
        assert swap.status_code == 200 and swap.json()["active_version"] == "2"
        assert (await client.post(SCORE, json={"items": [item("good")]})).json()["version"] == "2"
        refused = await client.post(
            "/v1/admin/metrics/context_adherence/activate", json={"version": "3"}, headers=admin
        )
        assert refused.status_code == 422 and "still serving the previous version" in refused.json()["detail"]
        assert (await client.post(SCORE, json={"items": [item("good")]})).json()["version"] == "2"
        unknown = await client.post(
            "/v1/admin/metrics/context_adherence/activate", json={"version": "9"}, headers=admin
        )
        assert unknown.status_code == 404

        def model_info(version: str) -> float | None:
            labels = {"metric": "context_adherence", "version": version}
            return prometheus.get_sample_value("lunaserve_model_info", labels)

        assert model_info("2") == 1.0 and model_info("1") is None


@pytest.mark.parametrize(
    ("path", "body", "problem"),
    [
        ("/v1/score", {"metrics": ["context_adherence"] * 2, "items": [item("good")]}, "validation"),
        (SCORE, {"items": [item("good")], "timeout_ms": 5e-324}, "validation"),
        # a field over the limit refuses the whole request, also where metrics answer one by one
        ("/v1/score", {"metrics": ["toxicity_like"], "items": [item("x" * 501)]}, "invalid-items"),
        # blank to Python's str.isspace and to the schema's pattern alike (U+001E, U+FEFF)
        (SCORE, {"items": [item("good", context="\x1e\ufeff ")]}, "invalid-items"),
    ],
)
async def test_api_refuses_what_its_schema_forbids(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], problem: str
) -> None:
    response = await client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["type"].endswith(problem)


async def test_api_trailing_slash_is_an_unknown_route(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/metrics/")
    assert response.status_code == 404 and response.headers["content-type"] == "application/problem+json"


async def test_api_openapi_lists_every_status(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    statuses = set(spec["paths"][SCORE]["post"]["responses"])
    assert {"200", "400", "401", "404", "413", "422", "500", "503"} <= statuses


class Runners:
    """A runner factory: `held`'s batches wait on the inference thread until `release` is set;
    every other metric runs its batches inline and sets its `answered` event when one is done."""

    def __init__(self, held: str) -> None:
        self.held = held
        self.entered = threading.Event()  # a batch of `held` reached the model
        self.release = threading.Event()
        self.answered: dict[str, asyncio.Event] = {}

    def __call__(self, predict: Predict, name: str) -> Runner:
        metric = name.rsplit("-", 1)[0]
        if metric != self.held:
            answered = self.answered.setdefault(metric, asyncio.Event())

            async def inline(windows: Sequence[Any]) -> np.ndarray:
                probs = predict(windows)
                answered.set()
                return probs

            return inline

        def held(windows: Sequence[Any]) -> np.ndarray:
            self.entered.set()
            self.release.wait(30)
            return predict(windows)

        return ThreadRunner(held, name)


async def test_api_multi_metric_deadline_reports_the_late_metric(repository: Path) -> None:
    clock = FakeClock()
    runners = Runners(held="toxicity_like")
    settings = settings_for(repository, batching=BatchingSettings(max_wait_ms=0, calibrate=False))
    async for client in started(create_app(settings, clock=clock, runner_factory=runners)):
        body = {"metrics": ["context_adherence", "toxicity_like"], "items": [item("good")], "timeout_ms": 300}
        sent = asyncio.ensure_future(client.post("/v1/score", json=body))
        try:
            await asyncio.to_thread(runners.entered.wait, 30)  # toxicity_like is on the model
            await runners.answered["context_adherence"].wait()  # context_adherence has its answer
            clock.advance(1.0)  # the deadline passes while toxicity_like is still running
        finally:
            runners.release.set()
        response = await sent
    outcomes = {o["metric"]: o["status"] for o in response.json()["outcomes"]}
    assert outcomes == {"context_adherence": "ok", "toxicity_like": "deadline_exceeded"}


class QueueWatch:
    """Wraps a scheduler's observer; `queued` is set once `requests` requests are admitted."""

    def __init__(self, observer: SchedulerObserver, requests: int) -> None:
        self.observer = observer
        self.requests = requests
        self.queued = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.observer, name)

    def queue_changed(self, requests: int, tokens: int) -> None:
        self.observer.queue_changed(requests, tokens)
        if requests >= self.requests:
            self.queued.set()


async def test_api_request_expiring_in_queue_is_shed_with_retry_after(repository: Path) -> None:
    clock = FakeClock()
    runners = Runners(held="context_adherence")
    settings = settings_for(repository, batching=BatchingSettings(max_wait_ms=0, calibrate=False))
    app = create_app(settings, clock=clock, runner_factory=runners)
    async for client in started(app):
        scheduler = app.state.lunaserve.registry.get("context_adherence").scheduler
        watch = QueueWatch(scheduler.observer, requests=2)
        scheduler.observer = watch
        first = asyncio.ensure_future(
            client.post(SCORE, json={"items": [item("good")], "timeout_ms": 10_000})
        )
        await asyncio.to_thread(runners.entered.wait, 30)  # the model is now busy with the first request
        second = asyncio.ensure_future(client.post(SCORE, json={"items": [item("bad")], "timeout_ms": 100}))
        await watch.queued.wait()  # the second request is queued behind it
        clock.advance(1.0)  # its deadline passes while the model is still busy
        runners.release.set()
        assert (await first).status_code == 200
        late = await second
        assert late.status_code == 503 and int(late.headers["retry-after"]) >= 1
        assert "before its deadline" in late.json()["detail"]


async def test_api_streamed_body_over_limit_and_unknown_routes_are_problem_json(repository: Path) -> None:
    settings = settings_for(repository, limits=LimitSettings(max_body_bytes=2048))
    async for client in started(create_app(settings)):

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b"x" * 1024

        streamed = await client.post(SCORE, content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413 and streamed.headers["content-type"] == "application/problem+json"
        unknown = await client.get("/v2/nothing")
        assert unknown.status_code == 404 and unknown.json()["title"] == "Not Found"
        wrong_method = await client.get(SCORE)
        assert wrong_method.status_code == 405 and wrong_method.json()["status"] == 405


async def test_api_text_no_tokenizer_can_take_is_422(client: httpx.AsyncClient) -> None:
    body = b'{"items": [{"output": "good \\ud800", "context": "the city"}]}'
    response = await client.post(SCORE, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422 and "not valid Unicode" in response.text


async def test_api_request_too_big_for_any_queue_is_422_not_503(repository: Path) -> None:
    settings = settings_for(
        repository,
        admission=AdmissionSettings(max_queue_tokens=8192),
        batching=BatchingSettings(max_batch_tokens=1024, calibrate=False),
    )
    async for client in started(create_app(settings)):
        many = {"items": [item("good", "x " * 60)] * 100, "traffic_class": "observability"}  # ~6.6k tokens
        response = await client.post(SCORE, json=many)
        assert response.status_code == 422 and "split it" in response.json()["detail"]


async def test_api_activate_refuses_paths_and_unloadable_models(repository: Path, tmp_path: Path) -> None:
    admin = {"Authorization": "Bearer a"}
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx model")
    (tmp_path / "tok").mkdir()
    tokenizer = tmp_path / "tok" / "tokenizer.json"
    build_word_tokenizer().save(str(tokenizer))
    publish_entry(repository, counting_spec(version="2"), model=garbage, tokenizer=tokenizer,
                  source={"checkpoint": "garbage"}, export={}, parity={})  # fmt: skip
    settings = settings_for(repository, auth=AuthSettings(admin_keys=[SecretStr("a")]))
    async for client in started(create_app(settings)):  # v2 cannot load: v1 serves
        assert (await client.post(SCORE, json={"items": [item("good")]})).json()["version"] == "1"
        url = "/v1/admin/metrics/context_adherence/activate"
        escape = await client.post(url, json={"version": "../toxicity_like/1"}, headers=admin)
        assert escape.status_code == 404
        broken = await client.post(url, json={"version": "2"}, headers=admin)
        assert broken.status_code == 422 and "cannot load" in broken.json()["detail"]
        assert (await client.post(SCORE, json={"items": [item("good")]})).json()["version"] == "1"


async def test_api_inference_budget_counts_from_arrival_less_the_response_allowance(repository: Path) -> None:
    """A request too big for its time budget is refused with the budget left for inference: the
    timeout from arrival less the 10 ms allowance, which never takes more than half of it."""
    clock = FakeClock()  # never advances: the budget is all there is, and the cost stays the initial one
    settings = settings_for(repository, deadlines=DeadlineSettings(response_allowance_ms=10))
    async for client in started(create_app(settings, clock=clock)):
        long_item = item("x", " ".join(["word"] * 400))  # 8 windows: ~50 ms at the initial cost
        refused = {}
        for timeout_ms in (40, 12):
            body = {"items": [long_item], "timeout_ms": timeout_ms}
            response = await client.post(SCORE, json=body)
            assert response.status_code == 422, response.text
            refused[timeout_ms] = response.json()["detail"].split("more than its ")[1]
        assert refused == {
            40: "30 ms timeout: raise timeout_ms or split it",
            12: "6 ms timeout: raise timeout_ms or split it",  # the allowance takes half, at most
        }


async def test_api_draining_fails_readiness_and_refuses_scoring_at_once(repository: Path) -> None:
    """The registry owns draining: readiness and the scoring routes both read it."""
    app = create_app(settings_for(repository))
    async for client in started(app):
        app.state.lunaserve.registry.start_draining()
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["draining"] == "draining"
        refused = await client.post(SCORE, json={"items": [item("good")]})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["detail"] == "the server is shutting down"
        body = {"metrics": ["context_adherence"], "items": [item("good")]}
        assert (await client.post("/v1/score", json=body)).status_code == 503


async def test_api_outcomes_are_counted_once_by_class(
    client: httpx.AsyncClient, prometheus: CollectorRegistry
) -> None:
    await client.post(SCORE, json={"items": [item("good")], "traffic_class": "observability"})
    await client.post("/v1/metrics/toxicity_like/score", json={"items": [{"output": "good " * 100}]})
    assert requests_total(prometheus, "context_adherence", "observability", "ok") == 1.0
    assert requests_total(prometheus, "context_adherence", "guardrail", "ok") is None
    # an item its metric's policy refuses is counted before its class is known (as it always was)
    assert requests_total(prometheus, "toxicity_like", "unknown", "invalid") == 1.0
    duration = {"metric": "context_adherence", "traffic_class": "observability"}
    assert prometheus.get_sample_value("lunaserve_request_duration_seconds_count", duration) == 1.0
    assert prometheus.get_sample_value("lunaserve_inference_duration_seconds_count", duration) == 1.0


async def test_api_two_instances_run_two_batches_at_once(repository: Path) -> None:
    """With `metric_instances` 2, two one-row batches are inside the model together: each waits
    at a barrier that only two batches in flight at the same time can pass."""
    both_inside = threading.Barrier(2, timeout=30)
    names: list[str] = []

    def factory(predict: Predict, name: str) -> Runner:
        names.append(name)
        if not name.startswith("context_adherence-"):
            return ThreadRunner(predict, name)

        def meet_then_predict(windows: Sequence[Any]) -> np.ndarray:
            both_inside.wait()
            return predict(windows)

        return ThreadRunner(meet_then_predict, name)

    prometheus = CollectorRegistry()
    settings = settings_for(
        repository,
        batching=BatchingSettings(max_batch_rows=1, max_wait_ms=0, calibrate=False),
        metric_instances={"context_adherence": 2},
        intra_op_threads=1,
    )
    async for client in started(create_app(settings, prometheus_registry=prometheus, runner_factory=factory)):
        responses = await asyncio.gather(
            client.post(SCORE, json={"items": [item("good")]}),
            client.post(SCORE, json={"items": [item("bad")]}),
        )
        assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
        detail = (await client.get("/v1/metrics/context_adherence")).json()["batching"]
        other = (await client.get("/v1/metrics/toxicity_like")).json()["batching"]
    assert sorted(n for n in names if n.startswith("context_adherence")) == [
        "context_adherence-1-0",
        "context_adherence-1-1",
    ]
    assert (detail["instances"], detail["intra_op_threads"]) == (2, 1) and other["instances"] == 1
    assert detail["execution_providers"] == ["CPUExecutionProvider"]
    assert prometheus.get_sample_value("lunaserve_model_instances", {"metric": "context_adherence"}) == 2


async def test_api_a_guardrail_instance_answers_while_observability_holds_the_other(repository: Path) -> None:
    """With `guardrail_instances` 1, a guardrail request is answered while an observability batch
    is held inside the metric's other instance (it would wait for it with one instance)."""
    inside, release = threading.Event(), threading.Event()
    names: list[str] = []

    def factory(predict: Predict, name: str) -> Runner:
        names.append(name)
        if name != "context_adherence-1-0":
            return ThreadRunner(predict, name)

        def held_predict(windows: Sequence[Any]) -> np.ndarray:
            inside.set()
            release.wait(30)
            return predict(windows)

        return ThreadRunner(held_predict, name)

    prometheus = CollectorRegistry()
    settings = settings_for(
        repository,
        batching=BatchingSettings(max_batch_rows=1, max_wait_ms=0, calibrate=False),
        guardrail_instances=1,
        intra_op_threads=1,
    )
    async for client in started(create_app(settings, prometheus_registry=prometheus, runner_factory=factory)):
        observability = asyncio.ensure_future(
            client.post(SCORE, json={"items": [item("good")], "traffic_class": "observability"})
        )
        assert await asyncio.to_thread(inside.wait, 30)
        guard = await client.post(SCORE, json={"items": [item("bad")], "traffic_class": "guardrail"})
        assert guard.status_code == 200 and not observability.done()
        release.set()
        assert (await observability).status_code == 200
        detail = (await client.get("/v1/metrics/context_adherence")).json()["batching"]
    assert "context_adherence-1-1" in names
    assert (detail["instances"], detail["guardrail_instances"]) == (2, 1)
    assert detail["guardrail_spills"] == (usable_cpus() >= 2)  # two one-thread instances, a core each
    series = {"metric": "context_adherence"}
    assert prometheus.get_sample_value("lunaserve_guardrail_instances", series) == 1
    assert prometheus.get_sample_value("lunaserve_model_instances", series) == 2


def test_settings_refuse_an_execution_provider_this_build_lacks(repository: Path) -> None:
    with pytest.raises(ValueError, match=r"TensorrtExecutionProvider.*not in this ONNX Runtime build"):
        settings_for(repository, execution_providers=["TensorrtExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(ValueError, match="metric_instances"):
        settings_for(repository, metric_instances={"context_adherence": 0})
