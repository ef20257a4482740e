"""FastAPI dependencies: what a handler needs from the app, resolved once per request.

A scoring call's dependency takes the validated body, so a body that does not match the schema
is still answered 422 before the key is checked (the order clients have always seen); then the
key (401), the server's draining state (503) and the item count (422) are checked, in that order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Request

from service.api import errors as e
from service.api.auth import require_admin, scoring_key
from service.api.schemas import ActivateRequest, MultiScoreRequest, ScoreRequest
from service.config import ApiKey
from service.loaded_metric import Item, fields_over_limit
from service.registry import MetricRegistry
from service.state import AppState

T = TypeVar("T")
B = TypeVar("B", ScoreRequest, MultiScoreRequest)


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.lunaserve
    return state


async def app_state(request: Request) -> AppState:
    return _state(request)


State = Annotated[AppState, Depends(app_state)]


async def registry(state: State) -> MetricRegistry:
    return state.registry


Registry = Annotated[MetricRegistry, Depends(registry)]


async def caller_key(request: Request, state: State) -> ApiKey | None:
    """The caller's scoring key (None while scoring is open); 401 without a valid one."""
    return scoring_key(request, state.settings.auth)


ScoringKey = Annotated[ApiKey | None, Depends(caller_key)]


async def prometheus_access(request: Request, state: State) -> None:
    """/metrics wants a scoring key when `auth.protect_metrics` is set."""
    if state.settings.auth.protect_metrics:
        scoring_key(request, state.settings.auth)


async def admin(request: Request, state: State) -> None:
    require_admin(request, state.settings.auth)


Admin = Depends(admin)


@dataclass(frozen=True)
class ScoringCall(Generic[B]):
    """A scoring request that passed its checks, with what its handler needs."""

    body: B
    items: list[Item]  # the body's items as plain dicts, read-only: every metric scores the same
    state: AppState
    requested_class: str | None  # the body's traffic class, else the key's default
    arrived_s: float  # when its headers were read (RequestContextMiddleware), on the app's clock

    @property
    def registry(self) -> MetricRegistry:
        return self.state.registry

    def deadline(self, metrics: list[str]) -> float:
        classes = [self.registry.traffic_class(m, self.requested_class) for m in metrics]
        return self.state.settings.deadlines.deadline(self.arrived_s, self.body.timeout_ms, classes)


def scoring_call(request: Request, body: B) -> ScoringCall[B]:
    """The checks of a scoring call whose body validated; its handler calls this first thing.

    A plain call rather than a dependency: FastAPI resolves each dependency (and theirs) per
    request, which cost a scoring call ~0.1 ms of the event loop (docs/benchmarks.md, "Serving
    cost"), and the body validation that must come first is FastAPI's own either way.
    """
    state = _state(request)
    key = scoring_key(request, state.settings.auth)
    if state.registry.draining:
        raise e.OverloadedError("the server is shutting down", reason="draining", retry_after_s=1)
    limits = state.settings.limits
    if len(body.items) > limits.max_items:
        raise e.InvalidItemsError(f"{len(body.items)} items; the limit is {limits.max_items}")
    # every metric named shares this limit: refuse the request whole, as its schema says
    items: list[Item] = [item.model_dump() for item in body.items]
    too_long = fields_over_limit(items, limits.max_field_chars)
    if too_long:
        raise e.InvalidItemsError(f"{len(too_long)} field(s) over the limit", errors=too_long)
    requested = body.traffic_class or (key.traffic_class if key else None)
    return ScoringCall(body, items, state, requested, request.state.arrived_s)


async def activate_call(request: Request, body: ActivateRequest) -> ActivateRequest:
    """The admin check of /activate, after its body validated (as for scoring)."""
    require_admin(request, _state(request).settings.auth)
    return body


async def _until_disconnect(request: Request) -> None:
    """Returns when the client goes away (the ASGI server sends http.disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """Await `work`; cancel it if the client disconnects first (the scheduler then skips it).

    The handler's own task awaits `work` and one watcher task cancels it when the disconnect
    comes: one task per request rather than two and an `asyncio.wait`.
    """
    handler = asyncio.current_task()
    assert handler is not None
    waiting = [True]  # until `work` ends: a disconnect after it must not cancel the answer's sending

    def client_left(watcher: asyncio.Future[None]) -> None:
        if waiting[0] and not watcher.cancelled():
            handler.cancel()

    watcher = asyncio.ensure_future(_until_disconnect(request))
    watcher.add_done_callback(client_left)
    try:
        return await work
    finally:
        waiting[0] = False
        watcher.cancel()
