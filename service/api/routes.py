"""Thin HTTP handlers: validate, hand to the registry, translate outcomes to responses."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api import errors as e
from service.api.auth import require_admin, scoring_key
from service.api.schemas import (
    ActivateRequest,
    BatchCalibrationInfo,
    BatchingInfo,
    Health,
    ItemResult,
    MetricDetail,
    MetricList,
    MetricOutcome,
    MetricSummary,
    MultiScoreRequest,
    MultiScoreResponse,
    ReloadResponse,
    ScoreItem,
    ScoreRequest,
    ScoreResponse,
)
from service.batching.policy import Priority
from service.batching.scheduler import (
    AdmissionError,
    BatchFailedError,
    DeadlineExceededError,
    RequestTooLargeError,
)
from service.metrics import TRAFFIC_CLASS
from service.registry import (
    InvalidItemError,
    LoadedMetric,
    MetricNotFoundError,
    MetricRegistry,
    ScoredItems,
)
from service.runtime.artifact import ArtifactError
from service.state import AppState

T = TypeVar("T")
router = APIRouter()
SCORING_ERRORS = e.responses(401, 404, 413, 422, 500, 503)


def state_of(request: Request) -> AppState:
    state: AppState = request.app.state.lunaserve
    return state


# -- scoring ---------------------------------------------------------------------------------


def _check_items(items: list[ScoreItem], registry: MetricRegistry, metric: str, max_chars: int) -> None:
    spec = registry.get(metric).spec
    problems = []
    for index, item in enumerate(items):
        for field in spec.required_fields:
            if not (getattr(item, field.value) or "").strip():
                problems.append(
                    {"item": index, "field": field.value, "msg": f"{metric} requires {field.value}"}
                )
        for name in ("input", "output", "context"):
            value = getattr(item, name)
            if value is not None and len(value) > max_chars:
                problems.append(
                    {
                        "item": index,
                        "field": name,
                        "msg": f"{len(value)} characters; the limit is {max_chars}",
                    }
                )
    if problems:
        raise e.InvalidItemsError(f"{len(problems)} problem(s) in the items", errors=problems)


async def _until_disconnect(request: Request) -> None:
    """Returns when the client goes away (the ASGI server sends http.disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """Await `work`; cancel it if the client disconnects first (the scheduler then skips it)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise asyncio.CancelledError
    return task.result()


async def _score_one(
    state: AppState, metric: str, body: ScoreRequest, key_class: str | None, arrived: float, deadline: float
) -> ScoredItems:
    registry = state.registry
    priority: Priority | None = None
    try:
        _check_items(body.items, registry, metric, state.settings.limits.max_field_chars)
        cls = _traffic_class(state, body, key_class, metric)
        priority = Priority.GUARDRAIL if cls == "guardrail" else Priority.OBSERVABILITY
        items = [item.model_dump() for item in body.items]
        try:
            scored = await registry.score(metric, items, priority, deadline)
        finally:
            state.metrics.request_duration.labels(metric, TRAFFIC_CLASS[priority]).observe(
                state.clock.now() - arrived
            )
    except MetricNotFoundError as exc:
        raise e.NotFoundError(str(exc)) from None
    except InvalidItemError as exc:
        _count(state, metric, None, "invalid")
        raise e.InvalidItemsError(
            "an item cannot be scored", errors=[{"item": exc.index, "msg": str(exc)}]
        ) from None
    except RequestTooLargeError as exc:
        _count(state, metric, priority, "invalid")
        raise e.InvalidItemsError(str(exc)) from None
    except AdmissionError as exc:
        _count(state, metric, priority, "rejected")
        raise e.OverloadedError(str(exc), reason=exc.reason, retry_after_s=exc.retry_after_s) from None
    except DeadlineExceededError as exc:
        # Shed after admission: the queue moved slower than estimated. A 503 with Retry-After,
        # like any other shed request, tells the client to come back rather than that it erred.
        _count(state, metric, priority, "expired")
        retry = registry.get(metric).scheduler.retry_after_s() if metric in registry.active else 1.0
        raise e.OverloadedError(str(exc), reason="expired", retry_after_s=retry) from None
    except BatchFailedError as exc:
        _count(state, metric, priority, "failed")
        raise e.InferenceFailedError(
            f"inference failed; quote error id {exc.error_id} to the operator"
        ) from None
    except asyncio.CancelledError:
        _count(state, metric, priority, "cancelled")
        raise
    _count(state, metric, priority, "ok")
    m = state.metrics
    cls = TRAFFIC_CLASS[priority]
    m.inference_duration.labels(metric, cls).observe(scored.inference_s)
    m.input_tokens.labels(metric).observe(scored.tokens)
    m.cost_per_token.labels(metric).set(registry.get(metric).scheduler.cost_per_token_s)
    return scored


def _count(state: AppState, metric: str, priority: Priority | None, outcome: str) -> None:
    cls = TRAFFIC_CLASS[priority] if priority is not None else "unknown"
    if metric in state.registry.active:
        state.metrics.requests.labels(metric, cls, outcome).inc()


def _traffic_class(state: AppState, body: ScoreRequest, key_class: str | None, metric: str) -> str:
    """The request's class, else the key's default, else the metric's use case."""
    if body.traffic_class or key_class:
        return body.traffic_class or key_class or "observability"
    loaded = state.registry.active.get(metric)
    return loaded.spec.use_case if loaded else "observability"


def _arrived(request: Request) -> float:
    """When the request's headers were read (RequestContextMiddleware), on the app's clock."""
    arrived: float = request.state.arrived_s
    return arrived


def _results(scored: ScoredItems) -> list[ItemResult]:
    return [
        ItemResult(score=r.score, label=r.label, passed=r.passed, windows=r.windows,
                   truncated_tokens=r.truncated_tokens)
        for r in scored.results
    ]  # fmt: skip


def _require_ready(state: AppState) -> None:
    if state.draining:
        raise e.OverloadedError("the server is shutting down", reason="draining", retry_after_s=1)


@router.post(
    "/v1/metrics/{metric}/score", response_model=ScoreResponse, responses=SCORING_ERRORS, tags=["scoring"]
)
async def score_metric(
    metric: str, body: ScoreRequest, request: Request, response: Response
) -> ScoreResponse:
    """Score items with one metric. Timing headers say where the time went."""
    state = state_of(request)
    key = scoring_key(request, state.settings.auth)
    _require_ready(state)
    if len(body.items) > state.settings.limits.max_items:
        raise e.InvalidItemsError(f"{len(body.items)} items; the limit is {state.settings.limits.max_items}")
    key_class = key.traffic_class if key else None
    arrived = _arrived(request)
    classes = [_traffic_class(state, body, key_class, metric)]
    deadline = state.settings.deadlines.deadline(arrived, body.timeout_ms, classes)
    scored = await _unless_client_leaves(
        request, _score_one(state, metric, body, key_class, arrived, deadline)
    )
    queue_ms, infer_ms = scored.queued_s * 1000, scored.inference_s * 1000
    response.headers["X-Queue-Time-Ms"] = f"{queue_ms:.2f}"
    response.headers["X-Inference-Time-Ms"] = f"{infer_ms:.2f}"
    response.headers["Server-Timing"] = f"queue;dur={queue_ms:.2f}, inference;dur={infer_ms:.2f}"
    return ScoreResponse(metric=scored.metric, version=scored.version, results=_results(scored))


_OUTCOME_OF: dict[type[e.ApiError], str] = {
    e.OverloadedError: "rejected",
    e.InferenceFailedError: "failed",
    e.InvalidItemsError: "invalid",
    e.NotFoundError: "not_found",
}


@router.post("/v1/score", response_model=MultiScoreResponse, responses=SCORING_ERRORS, tags=["scoring"])
async def score_many(body: MultiScoreRequest, request: Request) -> MultiScoreResponse:
    """Score the same items with several metrics under one deadline; each metric reports its outcome."""
    state = state_of(request)
    key = scoring_key(request, state.settings.auth)
    _require_ready(state)
    if len(body.items) > state.settings.limits.max_items:
        raise e.InvalidItemsError(f"{len(body.items)} items; the limit is {state.settings.limits.max_items}")
    if len(set(body.metrics)) != len(body.metrics):
        raise e.InvalidItemsError("a metric is named twice")
    key_class = key.traffic_class if key else None
    arrived = _arrived(request)
    classes = [_traffic_class(state, body, key_class, m) for m in body.metrics]
    deadline = state.settings.deadlines.deadline(arrived, body.timeout_ms, classes)

    async def one(metric: str) -> MetricOutcome:
        remaining = deadline - state.clock.now()
        try:
            scored = await asyncio.wait_for(
                _score_one(state, metric, body, key_class, arrived, deadline), remaining
            )
        except TimeoutError:
            late = e.OverloadedError("no answer before the deadline", reason="expired", retry_after_s=1)
            return MetricOutcome(metric=metric, status="deadline_exceeded", problem=late.problem(None))
        except e.ApiError as exc:
            status = _OUTCOME_OF.get(type(exc), "failed")
            if isinstance(exc, e.OverloadedError) and exc.reason == "expired":
                status = "deadline_exceeded"
            return MetricOutcome(metric=metric, status=status, problem=exc.problem(None))
        return MetricOutcome(metric=metric, status="ok", version=scored.version, results=_results(scored))

    outcomes = await _unless_client_leaves(request, asyncio.gather(*(one(m) for m in body.metrics)))
    return MultiScoreResponse(outcomes=list(outcomes))


# -- what is served --------------------------------------------------------------------------


def _summary(registry: MetricRegistry, name: str, versions: list[str]) -> MetricSummary:
    loaded = registry.active.get(name)
    spec = loaded.spec if loaded else None
    return MetricSummary(
        name=name, active_version=spec.version if spec else None, versions=versions,
        use_case=spec.use_case if spec else None, description=spec.description if spec else None,
    )  # fmt: skip


@router.get("/v1/metrics", response_model=MetricList, responses=e.responses(401), tags=["metrics"])
async def list_metrics(request: Request) -> MetricList:
    state = state_of(request)
    scoring_key(request, state.settings.auth)
    registry = state.registry
    return MetricList(metrics=[_summary(registry, n, v) for n, v in registry.available().items()])


@router.get(
    "/v1/metrics/{metric}", response_model=MetricDetail, responses=e.responses(401, 404), tags=["metrics"]
)
async def get_metric(metric: str, request: Request) -> MetricDetail:
    state = state_of(request)
    scoring_key(request, state.settings.auth)
    registry = state.registry
    versions = registry.available().get(metric)
    if not versions:
        raise e.NotFoundError(f"no metric named {metric!r} in the repository")
    summary = _summary(registry, metric, versions)
    detail: dict[str, Any] = {}
    if summary.active_version:
        loaded = registry.get(metric)
        manifest = loaded.model.artifact.manifest
        detail = {
            "batching": _batching(loaded),
            "spec": manifest.spec.model_dump(mode="json"),
            "parity": manifest.parity,
            "quality": manifest.quality,
            "evidence": manifest.evidence.model_dump(mode="json") if manifest.evidence else None,
            "files": {name: digest.model_dump() for name, digest in manifest.files.items()},
        }
    return MetricDetail(**summary.model_dump(), **detail)


def _batching(loaded: LoadedMetric) -> BatchingInfo:
    limits, calibration = loaded.scheduler.limits, loaded.calibration
    return BatchingInfo(
        max_batch_rows=limits.max_batch_rows,
        max_batch_tokens=limits.max_batch_tokens,
        calibration=None
        if calibration is None
        else BatchCalibrationInfo(
            tokens=calibration.tokens,
            min_gain=calibration.min_gain,
            rows_per_s={str(r): round(v, 2) for r, v in calibration.rows_per_s().items()},
        ),
    )


# -- admin -----------------------------------------------------------------------------------


@router.post(
    "/v1/admin/metrics/{metric}/activate",
    response_model=MetricSummary,
    responses=e.responses(401, 403, 404, 422),
    tags=["admin"],
)
async def activate(metric: str, body: ActivateRequest, request: Request) -> MetricSummary:
    """Hot swap: load, verify and warm `version`, switch atomically, drain the old version."""
    state = state_of(request)
    require_admin(request, state.settings.auth)
    registry = state.registry
    try:
        registry.folder(metric, body.version)
        await registry.activate(metric, body.version)
    except MetricNotFoundError as exc:
        raise e.NotFoundError(str(exc)) from None
    except ArtifactError as exc:
        raise e.UnverifiableArtifactError(f"{exc}; still serving the previous version") from None
    return _summary(registry, metric, registry.available()[metric])


@router.post(
    "/v1/admin/reload", response_model=ReloadResponse, responses=e.responses(401, 403), tags=["admin"]
)
async def reload(request: Request) -> ReloadResponse:
    """Rescan the repository and start serving metrics that appeared; active versions stay."""
    state = state_of(request)
    require_admin(request, state.settings.auth)
    problems = await state.registry.load_repository()
    registry = state.registry
    return ReloadResponse(
        metrics=[_summary(registry, n, v) for n, v in registry.available().items()], problems=problems
    )


# -- probes and metrics ----------------------------------------------------------------------


@router.get("/livez", response_model=Health, tags=["probes"])
async def livez() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses=e.responses(503), tags=["probes"])
async def readyz(request: Request, response: Response) -> Health:
    state = state_of(request)
    checks = {
        "loaded": "ok" if state.registry.active else "no metric loaded",
        "schedulers": "ok"
        if all(m.scheduler.alive for m in state.registry.active.values())
        else "dead: " + ", ".join(n for n, m in state.registry.active.items() if not m.scheduler.alive),
        "draining": "draining" if state.draining else "ok",
    }
    ok = all(v == "ok" for v in checks.values()) and state.started
    if not ok:
        response.status_code = 503
    return Health(status="ok" if ok else "unavailable", checks=checks)


@router.get("/metrics", tags=["probes"], responses=e.responses(401))
async def prometheus_metrics(request: Request) -> Response:
    state = state_of(request)
    if state.settings.auth.protect_metrics:
        scoring_key(request, state.settings.auth)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
