"""Thin HTTP handlers: dependencies check the call, the registry scores, errors map in one table.

The two scoring routes are served by `ScoringRoute` (their body read and validated without
FastAPI's dependency solver) and return their responses ready to send.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from service.api import errors as e
from service.api.deps import (
    Admin,
    Registry,
    ScoringCall,
    ScoringKey,
    State,
    activate_call,
    prometheus_access,
    scoring_call,
    unless_client_leaves,
)
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
    ScoreRequest,
    ScoreResponse,
)
from service.api.scoring_route import ScoringRoute
from service.batching.clock import Clock
from service.loaded_metric import LoadedMetric, ScoredItems
from service.registry import MetricRegistry

T = TypeVar("T")
router = APIRouter()
# the two scoring routes: the server's hot path, called without FastAPI's parameter machinery
scoring_router = APIRouter(route_class=ScoringRoute)
SCORING_ERRORS = e.responses(400, 401, 404, 413, 422, 500, 503)


# -- scoring ---------------------------------------------------------------------------------


def _results(scored: ScoredItems) -> list[ItemResult]:
    return [
        ItemResult(score=r.score, label=r.label, passed=r.passed, windows=r.windows,
                   truncated_tokens=r.truncated_tokens)
        for r in scored.results
    ]  # fmt: skip


async def _score(call: ScoringCall[Any], metric: str, traffic_class: str, deadline: float) -> ScoredItems:
    return await call.registry.score(metric, call.items, traffic_class, deadline, arrived_s=call.arrived_s)


def _json(model: BaseModel, headers: dict[str, str] | None = None) -> Response:
    return Response(model.model_dump_json(), media_type="application/json", headers=headers)


@scoring_router.post(
    "/v1/metrics/{metric}/score", response_model=ScoreResponse, responses=SCORING_ERRORS, tags=["scoring"]
)
async def score_metric(metric: str, body: ScoreRequest, request: Request) -> Response:
    """Score items with one metric. Timing headers say where the time went."""
    call = scoring_call(request, body)
    traffic_class = call.registry.traffic_class(metric, call.requested_class)
    deadline = call.deadline([metric])
    scored = await unless_client_leaves(request, _score(call, metric, traffic_class, deadline))
    queue_ms, infer_ms = scored.queued_s * 1000, scored.inference_s * 1000
    timings = {
        "X-Queue-Time-Ms": f"{queue_ms:.2f}",
        "X-Inference-Time-Ms": f"{infer_ms:.2f}",
        "Server-Timing": f"queue;dur={queue_ms:.2f}, inference;dur={infer_ms:.2f}",
    }
    answer = ScoreResponse(metric=scored.metric, version=scored.version, results=_results(scored))
    return _json(answer, timings)


_OUTCOME_OF: dict[type[e.ApiError], str] = {
    e.OverloadedError: "rejected",
    e.InferenceFailedError: "failed",
    e.InvalidItemsError: "invalid",
    e.NotFoundError: "not_found",
}


async def _within(clock: Clock, deadline: float, work: Awaitable[T]) -> T:
    """Await `work` until `deadline` on the app's clock; past it, cancel it and raise TimeoutError."""
    task = asyncio.ensure_future(work)
    done = asyncio.Event()
    task.add_done_callback(lambda _: done.set())
    await clock.wait(done, deadline)
    if not task.done():
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            raise TimeoutError from None
    return task.result()


@scoring_router.post(
    "/v1/score", response_model=MultiScoreResponse, responses=SCORING_ERRORS, tags=["scoring"]
)
async def score_many(body: MultiScoreRequest, request: Request) -> Response:
    """Score the same items with several metrics under one deadline; each metric reports its outcome."""
    call = scoring_call(request, body)
    metrics = call.body.metrics
    deadline = call.deadline(metrics)

    async def one(metric: str) -> MetricOutcome:
        traffic_class = call.registry.traffic_class(metric, call.requested_class)
        try:
            scored = await _within(call.state.clock, deadline, _score(call, metric, traffic_class, deadline))
        except TimeoutError:
            late = e.OverloadedError("no answer before the deadline", reason="expired", retry_after_s=1)
            return MetricOutcome(metric=metric, status="deadline_exceeded", problem=late.problem(None))
        except Exception as exc:
            error = e.api_error(exc)
            if error is None:
                raise
            status = _OUTCOME_OF.get(type(error), "failed")
            if isinstance(error, e.OverloadedError) and error.reason == "expired":
                status = "deadline_exceeded"
            return MetricOutcome(metric=metric, status=status, problem=error.problem(None))
        return MetricOutcome(metric=metric, status="ok", version=scored.version, results=_results(scored))

    outcomes = await unless_client_leaves(request, asyncio.gather(*(one(m) for m in metrics)))
    return _json(MultiScoreResponse(outcomes=list(outcomes)))


# -- what is served --------------------------------------------------------------------------


def _summary(registry: MetricRegistry, name: str, versions: list[str]) -> MetricSummary:
    loaded = registry.active.get(name)
    spec = loaded.spec if loaded else None
    return MetricSummary(
        name=name, active_version=spec.version if spec else None, versions=versions,
        use_case=spec.use_case if spec else None, description=spec.description if spec else None,
    )  # fmt: skip


@router.get("/v1/metrics", response_model=MetricList, responses=e.responses(401), tags=["metrics"])
async def list_metrics(_: ScoringKey, registry: Registry) -> MetricList:
    return MetricList(metrics=[_summary(registry, n, v) for n, v in registry.available().items()])


@router.get(
    "/v1/metrics/{metric}", response_model=MetricDetail, responses=e.responses(401, 404), tags=["metrics"]
)
async def get_metric(metric: str, _: ScoringKey, registry: Registry) -> MetricDetail:
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
    session = loaded.model.session
    return BatchingInfo(
        max_batch_rows=limits.max_batch_rows,
        max_batch_tokens=limits.max_batch_tokens,
        instances=loaded.scheduler.instances,
        guardrail_instances=loaded.scheduler.guardrail_instances,
        guardrail_spills=loaded.scheduler.guardrail_spills,
        intra_op_threads=session.intra_op_threads,
        execution_providers=session.providers,
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
    responses=e.responses(400, 401, 403, 404, 413, 422),
    tags=["admin"],
)
async def activate(
    metric: str, body: Annotated[ActivateRequest, Depends(activate_call)], registry: Registry
) -> MetricSummary:
    """Hot swap: load, verify and warm `version`, switch atomically, drain the old version."""
    registry.folder(metric, body.version)
    await registry.activate(metric, body.version)
    return _summary(registry, metric, registry.available()[metric])


@router.post(
    "/v1/admin/reload",
    response_model=ReloadResponse,
    responses=e.responses(401, 403, 404),
    tags=["admin"],
    dependencies=[Admin],
)
async def reload(registry: Registry) -> ReloadResponse:
    """Rescan the repository and start serving metrics that appeared; active versions stay."""
    problems = await registry.load_repository()
    return ReloadResponse(
        metrics=[_summary(registry, n, v) for n, v in registry.available().items()], problems=problems
    )


# -- probes and metrics ----------------------------------------------------------------------


@router.get("/livez", response_model=Health, tags=["probes"])
async def livez() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses=e.responses(503), tags=["probes"])
async def readyz(registry: Registry, response: Response) -> Health:
    checks = registry.health()
    ok = all(v == "ok" for v in checks.values())
    if not ok:
        response.status_code = 503
    return Health(status="ok" if ok else "unavailable", checks=checks)


@router.get(
    "/metrics",
    tags=["probes"],
    response_class=PlainTextResponse,
    responses={**e.responses(401), 200: {"description": "Prometheus text exposition format"}},
    dependencies=[Depends(prometheus_access)],
)
async def prometheus_metrics(state: State) -> Response:
    return Response(generate_latest(state.prometheus_registry), media_type=CONTENT_TYPE_LATEST)
