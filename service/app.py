"""The app factory: wiring, lifespan (load and warm models, drain on shutdown), middleware."""

from __future__ import annotations

import gc
import json
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import PayloadTooLargeError, install_error_handlers, problem_response
from service.api.openapi import served_metrics_openapi
from service.api.routes import router, scoring_router
from service.batching.clock import Clock, MonotonicClock
from service.batching.runner import RunnerFactory, ThreadRunner
from service.config import Settings
from service.metrics import HealthCollector, ServerMetrics
from service.registry import MetricRegistry
from service.runtime.spec import MetricSpec
from service.state import AppState

log = logging.getLogger(__name__)
# Request ids: 128 random bits from a generator seeded from the OS once, its own so that no
# `random.seed` elsewhere repeats them.
_REQUEST_IDS = random.Random()


class RequestContextMiddleware:
    """Gives each request an id (echoed as X-Request-Id) and its arrival time, and enforces the
    body size limit.

    Pure ASGI: the body is read here, up to the limit, before anything parses it; a body over
    the limit (declared or streamed) gets 413 at once, and the app receives the body read.
    The arrival time (`state["arrived_s"]`, on the app's clock) is taken before the body is
    read and parsed, so a deadline counts the time a request spent waiting for the event loop.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, clock: Clock) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"{_REQUEST_IDS.getrandbits(128):032x}"  # as uuid4().hex, with no syscall
        scope.setdefault("state", {}).update(request_id=request_id, arrived_s=self.clock.now())
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await self._too_large(request_id)(scope, receive, send)
            return
        body = await self._read_body(receive)
        if body is None:
            await self._too_large(request_id)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: http.disconnect when the client leaves

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        await self.app(scope, replay, send_with_id)

    def _too_large(self, request_id: str) -> ASGIApp:
        too_large = PayloadTooLargeError(f"the request body exceeds {self.max_body_bytes} bytes")
        return problem_response(too_large, request_id)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it passes the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)  # client gone: the app will see the disconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    prometheus_registry: CollectorRegistry | None = None,
    runner_factory: RunnerFactory = ThreadRunner,
) -> FastAPI:
    """The app: `clock` times deadlines and batching (tests pass a FakeClock), every series goes
    to `prometheus_registry` (never the global one), and `runner_factory` builds each served
    version's runner from its model's forward pass (tests pass one that holds or fails a batch)."""
    clock = clock or MonotonicClock()
    prometheus_registry = prometheus_registry or CollectorRegistry()
    server_metrics = ServerMetrics(prometheus_registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = MetricRegistry(settings, server_metrics, clock, runner_factory)
        app.state.lunaserve = AppState(settings, clock, registry, prometheus_registry)
        health = HealthCollector(
            ready=lambda: all(v == "ok" for v in registry.health().values()),
            schedulers=lambda: {n: m.scheduler.alive for n, m in registry.active.items()},
        )
        prometheus_registry.register(health)
        await registry.start()
        # What loading made lives as long as the server: moved out of the collector's sight, a
        # full collection no longer walks it (Python's `gc.freeze`, meant for this).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await registry.close()
            prometheus_registry.unregister(health)
            totals = server_metrics.outcome_totals()
            log.info("drained and stopped; requests by outcome: %s", json.dumps(totals))

    app = FastAPI(
        title="lunaserve",
        version="0.1.0",
        description="Scores LLM traffic with fine-tuned metric models under a latency budget.",
        lifespan=lifespan,
        redirect_slashes=False,  # "/v1/metrics/" is an unknown route (404), not a redirect to the list
    )
    install_error_handlers(app)
    app.include_router(scoring_router)
    app.include_router(router)

    def served_specs() -> dict[str, MetricSpec]:
        state: AppState | None = getattr(app.state, "lunaserve", None)
        return {} if state is None else {n: m.spec for n, m in state.registry.active.items()}

    app.openapi = served_metrics_openapi(app, settings.limits, served_specs)  # type: ignore[method-assign]
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.limits.max_body_bytes, clock=clock)
    return app
