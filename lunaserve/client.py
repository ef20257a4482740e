"""Python client for lunaserve's scoring API: sync and async, deadlines, safe retries, guardrails.

Its callers are LLM applications (a guardrail in the request path) and logging pipelines
(observability). Dependencies: httpx only, so an application can take it without the server.

    from lunaserve.client import Client, guard

    with Client("http://127.0.0.1:8000", api_key="...") as client:
        result = client.score("context_adherence", [{"input": q, "context": c, "output": a}], timeout_ms=200)
        decision = guard(client, "context_adherence", [...], timeout_ms=200, fail_open=False)

Deadlines: a call's `timeout_ms` is sent to the server (which sheds what it cannot finish in
time) and enforced here too: no attempt, wait or retry goes past it. Retries: only where safe,
on connection failures and on 503 whose Retry-After fits in what is left of the deadline, with
jittered backoff. Scoring has no side effects, so a retried request cannot do harm twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import httpx

log = logging.getLogger("lunaserve.client")

try:
    VERSION = metadata.version("lunaserve")
except metadata.PackageNotFoundError:  # running from a source tree
    VERSION = "0.1.0"
USER_AGENT = f"lunaserve-client/{VERSION}"
MIN_SERVER_TIMEOUT_MS = 10  # the server refuses less: it cannot be met across a network

Item = Mapping[str, str]


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemResult:
    score: float  # probability of the metric's positive ("good") label
    label: str
    passed: bool  # score >= the metric's threshold
    windows: int
    truncated_tokens: int

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> ItemResult:
        return cls(
            float(raw["score"]),
            str(raw["label"]),
            bool(raw["passed"]),
            int(raw["windows"]),
            int(raw["truncated_tokens"]),
        )


@dataclass(frozen=True)
class ScoreResult:
    metric: str
    version: str
    results: list[ItemResult]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)


@dataclass(frozen=True)
class MetricOutcome:
    """One metric's part of a multi-metric call: `results` when `status` is "ok", else `error`."""

    metric: str
    status: str
    version: str | None
    results: list[ItemResult] | None
    error: LunaserveError | None


@dataclass(frozen=True)
class MetricInfo:
    name: str
    active_version: str | None
    versions: list[str]
    use_case: str | None
    description: str | None


# -- errors, from the server's problem+json ----------------------------------------------------


class LunaserveError(Exception):
    """A call that did not give results; `status` is the HTTP status (0: none was received)."""

    def __init__(self, message: str, *, status: int = 0, problem: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.problem = dict(problem or {})


class OverloadedError(LunaserveError):
    """503: the server cannot serve this now; `retry_after_s` says when to come back."""

    def __init__(self, message: str, *, retry_after_s: float, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after_s = retry_after_s


class NotFoundError(LunaserveError):
    """404: no such metric (or the admin API is off)."""


class InvalidInputError(LunaserveError):
    """422/413/400: the request is wrong; `errors` lists the field errors the server gave."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        return list(self.problem.get("errors") or [])


class UnauthorizedError(LunaserveError):
    """401/403: a missing, wrong or not permitted API key."""


class DeadlineExceededError(LunaserveError):
    """The call's deadline passed before an answer (here, or at the server)."""


class ServerError(LunaserveError):
    """5xx other than 503: the server failed; the detail quotes an error id for the operator."""


class ConnectionFailedError(LunaserveError):
    """No connection could be made (after the retries the deadline allowed)."""


def error_from_response(response: httpx.Response) -> LunaserveError:
    try:
        problem = response.json()
        if not isinstance(problem, dict):
            problem = {}
    except ValueError:
        problem = {}
    detail = str(problem.get("detail") or response.text[:300] or response.reason_phrase)
    status = response.status_code
    message = f"HTTP {status}: {detail}"
    if status == 503:
        retry = response.headers.get("retry-after")
        try:
            retry_after = float(retry) if retry is not None else 1.0
        except ValueError:
            retry_after = 1.0
        return OverloadedError(message, retry_after_s=retry_after, status=status, problem=problem)
    kind: type[LunaserveError] = {
        401: UnauthorizedError,
        403: UnauthorizedError,
        404: NotFoundError,
        400: InvalidInputError,
        413: InvalidInputError,
        422: InvalidInputError,
    }.get(status, ServerError if status >= 500 else LunaserveError)
    return kind(message, status=status, problem=problem)


# -- retries and deadlines ---------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """At most `attempts` tries; waits of `backoff_s` x 2^n (x 0.5-1.5 jitter), capped, or the
    server's Retry-After; never past the call's deadline."""

    attempts: int = 3
    backoff_s: float = 0.05
    max_backoff_s: float = 2.0

    def wait_s(self, attempt: int, error: LunaserveError) -> float:
        if isinstance(error, OverloadedError):
            return float(error.retry_after_s)
        base: float = min(self.max_backoff_s, self.backoff_s * 2.0**attempt)
        return base * (0.5 + random.random())


def _retryable(error: LunaserveError) -> bool:
    return isinstance(error, (OverloadedError, ConnectionFailedError))


class _Deadline:
    def __init__(self, timeout_ms: float | None) -> None:
        self.end = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000

    def remaining_s(self) -> float | None:
        return None if self.end is None else self.end - time.monotonic()

    def server_timeout_ms(self) -> float | None:
        """What to send as `timeout_ms` now; raises when too little is left to be worth sending."""
        left = self.remaining_s()
        if left is None:
            return None
        if left * 1000 < MIN_SERVER_TIMEOUT_MS:
            raise DeadlineExceededError("the deadline passed before the request could be sent")
        return round(left * 1000, 1)

    def allows_wait(self, wait_s: float) -> bool:
        left = self.remaining_s()
        return left is None or wait_s + MIN_SERVER_TIMEOUT_MS / 1000 < left


def _body(
    items: Iterable[Item], traffic_class: str | None, timeout_ms: float | None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"items": [dict(i) for i in items], **extra}
    if traffic_class:
        body["traffic_class"] = traffic_class
    if timeout_ms is not None:
        body["timeout_ms"] = timeout_ms
    return body


def _score_result(data: Mapping[str, Any]) -> ScoreResult:
    return ScoreResult(data["metric"], data["version"], [ItemResult.of(r) for r in data["results"]])


def _outcomes(data: Mapping[str, Any]) -> list[MetricOutcome]:
    out = []
    for o in data["outcomes"]:
        error = None
        if o.get("problem"):
            p = o["problem"]
            error = LunaserveError(
                f"{o['status']}: {p.get('detail', '')}", status=int(p.get("status", 0)), problem=p
            )
        results = [ItemResult.of(r) for r in o["results"]] if o.get("results") is not None else None
        out.append(MetricOutcome(o["metric"], o["status"], o.get("version"), results, error))
    return out


def _infos(data: Mapping[str, Any]) -> list[MetricInfo]:
    return [
        MetricInfo(
            m["name"],
            m.get("active_version"),
            list(m.get("versions", [])),
            m.get("use_case"),
            m.get("description"),
        )
        for m in data["metrics"]
    ]


class _Base:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None,
        timeout_ms: float | None,
        traffic_class: str | None,
        retry: RetryPolicy | None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.default_timeout_ms = timeout_ms
        self.default_class = traffic_class
        self.retry = retry or RetryPolicy()
        self.headers = {"User-Agent": USER_AGENT}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def _pool(self, transport: Any, max_connections: int) -> dict[str, Any]:
        """The httpx client's settings, the same for the sync and the async client."""
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        return {"base_url": self.base_url, "headers": self.headers, "transport": transport, "limits": limits}

    def _attempts(
        self,
        items: Sequence[Item],
        traffic_class: str | None,
        timeout_ms: float | None,
        extra: dict[str, Any],
    ) -> _Attempts:
        deadline = _Deadline(timeout_ms if timeout_ms is not None else self.default_timeout_ms)
        return _Attempts(self, deadline, items, traffic_class or self.default_class, extra)

    def _http_timeout(self, deadline: _Deadline) -> httpx.Timeout:
        left = deadline.remaining_s()
        return httpx.Timeout(30.0 if left is None else max(left, 0.001))

    @staticmethod
    def _transport_error(exc: httpx.HTTPError, deadline: _Deadline) -> LunaserveError:
        if isinstance(exc, httpx.TimeoutException) and deadline.end is not None:
            return DeadlineExceededError(f"no answer within the deadline ({type(exc).__name__})")
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            return ConnectionFailedError(f"cannot connect: {exc}")
        return LunaserveError(f"{type(exc).__name__}: {exc}")


class _Attempts:
    """The retry loop without its I/O, shared by `Client` and `AsyncClient`: each attempt's body and
    timeout, and after each outcome either the answer, a wait before the next attempt, or the error."""

    def __init__(
        self,
        base: _Base,
        deadline: _Deadline,
        items: Sequence[Item],
        traffic_class: str | None,
        extra: dict[str, Any],
    ) -> None:
        self.base, self.deadline, self.items, self.traffic_class, self.extra = (
            base,
            deadline,
            items,
            traffic_class,
            extra,
        )
        self.attempt = 0

    def request(self) -> tuple[dict[str, Any], httpx.Timeout]:
        """The next attempt's body (with what is left of the deadline) and its HTTP timeout."""
        body = _body(self.items, self.traffic_class, self.deadline.server_timeout_ms(), **self.extra)
        return body, self.base._http_timeout(self.deadline)

    def outcome(
        self, response: httpx.Response | None, failure: BaseException | None
    ) -> dict[str, Any] | float:
        """The answer's JSON, or how long to wait before trying again; raises when not retrying."""
        if response is not None and response.status_code == 200:
            return dict(response.json())
        if response is not None:
            error = error_from_response(response)
        elif isinstance(failure, httpx.HTTPError):
            error = self.base._transport_error(failure, self.deadline)
        else:
            error = DeadlineExceededError("no answer within the deadline")
        wait = self.base.retry.wait_s(self.attempt, error)
        self.attempt += 1
        if (
            not _retryable(error)
            or self.attempt >= self.base.retry.attempts
            or not self.deadline.allows_wait(wait)
        ):
            raise error
        return wait


class Client(_Base):
    """Blocking client; one connection pool, reused across calls and threads."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_ms: float | None = None,
        traffic_class: str | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        max_connections: int = 32,
    ) -> None:
        super().__init__(
            base_url, api_key=api_key, timeout_ms=timeout_ms, traffic_class=traffic_class, retry=retry
        )
        self._http = httpx.Client(**self._pool(transport, max_connections))

    def score(
        self,
        metric: str,
        items: Sequence[Item],
        *,
        traffic_class: str | None = None,
        timeout_ms: float | None = None,
    ) -> ScoreResult:
        data = self._call(f"/v1/metrics/{metric}/score", items, traffic_class, timeout_ms)
        return _score_result(data)

    def score_many(
        self,
        metrics: Sequence[str],
        items: Sequence[Item],
        *,
        traffic_class: str | None = None,
        timeout_ms: float | None = None,
    ) -> list[MetricOutcome]:
        return _outcomes(self._call("/v1/score", items, traffic_class, timeout_ms, metrics=list(metrics)))

    def metrics(self) -> list[MetricInfo]:
        response = self._http.get("/v1/metrics", timeout=30)
        if response.status_code != 200:
            raise error_from_response(response)
        return _infos(response.json())

    def _call(
        self,
        path: str,
        items: Sequence[Item],
        traffic_class: str | None,
        timeout_ms: float | None,
        **extra: Any,
    ) -> dict[str, Any]:
        attempts = self._attempts(items, traffic_class, timeout_ms, extra)
        while True:
            body, timeout = attempts.request()
            try:
                outcome = attempts.outcome(self._http.post(path, json=body, timeout=timeout), None)
            except httpx.HTTPError as exc:
                outcome = attempts.outcome(None, exc)
            if isinstance(outcome, dict):
                return outcome
            time.sleep(outcome)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Base):
    """asyncio client with the same calls, results and errors as `Client`."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_ms: float | None = None,
        traffic_class: str | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 32,
    ) -> None:
        super().__init__(
            base_url, api_key=api_key, timeout_ms=timeout_ms, traffic_class=traffic_class, retry=retry
        )
        self._http = httpx.AsyncClient(**self._pool(transport, max_connections))

    async def score(
        self,
        metric: str,
        items: Sequence[Item],
        *,
        traffic_class: str | None = None,
        timeout_ms: float | None = None,
    ) -> ScoreResult:
        return _score_result(
            await self._call(f"/v1/metrics/{metric}/score", items, traffic_class, timeout_ms)
        )

    async def score_many(
        self,
        metrics: Sequence[str],
        items: Sequence[Item],
        *,
        traffic_class: str | None = None,
        timeout_ms: float | None = None,
    ) -> list[MetricOutcome]:
        return _outcomes(
            await self._call("/v1/score", items, traffic_class, timeout_ms, metrics=list(metrics))
        )

    async def metrics(self) -> list[MetricInfo]:
        response = await self._http.get("/v1/metrics", timeout=30)
        if response.status_code != 200:
            raise error_from_response(response)
        return _infos(response.json())

    async def _call(
        self,
        path: str,
        items: Sequence[Item],
        traffic_class: str | None,
        timeout_ms: float | None,
        **extra: Any,
    ) -> dict[str, Any]:
        attempts = self._attempts(items, traffic_class, timeout_ms, extra)
        while True:
            body, timeout = attempts.request()
            try:
                post = self._http.post(path, json=body, timeout=timeout)
                response = await asyncio.wait_for(post, attempts.deadline.remaining_s())  # a total bound
                outcome = attempts.outcome(response, None)
            except (httpx.HTTPError, TimeoutError) as exc:
                outcome = attempts.outcome(None, exc)
            if isinstance(outcome, dict):
                return outcome
            await asyncio.sleep(outcome)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


# -- guardrail helper ------------------------------------------------------------------------


@dataclass(frozen=True)
class GuardDecision:
    """Whether to show the response: `allowed`, and why (`reason`), with the scores when known."""

    allowed: bool
    reason: str  # "passed" | "blocked" | "failed_open" | "failed_closed"
    result: ScoreResult | None = None
    error: LunaserveError | None = None


# The service could not answer in time: the caller's policy decides. Anything else (a wrong key,
# an unknown metric, invalid items) is a bug in the caller and is raised, whatever the policy.
UNAVAILABLE = (OverloadedError, DeadlineExceededError, ConnectionFailedError, ServerError)


def _decide(
    result: ScoreResult | None, error: LunaserveError | None, fail_open: bool, metric: str
) -> GuardDecision:
    if result is not None:
        return GuardDecision(result.passed, "passed" if result.passed else "blocked", result)
    assert error is not None
    reason = "failed_open" if fail_open else "failed_closed"
    log.warning("guard %s: %s (%s): %s", metric, reason, type(error).__name__, error)
    return GuardDecision(fail_open, reason, None, error)


def guard(
    client: Client,
    metric: str,
    items: Sequence[Item],
    *,
    timeout_ms: float,
    fail_open: bool,
    traffic_class: str = "guardrail",
) -> GuardDecision:
    """Allow when every item passes; when the service cannot answer within `timeout_ms`, allow
    (`fail_open=True`) or block (`fail_open=False`), and log which."""
    try:
        result = client.score(metric, items, traffic_class=traffic_class, timeout_ms=timeout_ms)
    except UNAVAILABLE as exc:
        return _decide(None, exc, fail_open, metric)
    return _decide(result, None, fail_open, metric)


async def guard_async(
    client: AsyncClient,
    metric: str,
    items: Sequence[Item],
    *,
    timeout_ms: float,
    fail_open: bool,
    traffic_class: str = "guardrail",
) -> GuardDecision:
    """`guard` for an `AsyncClient`."""
    try:
        result = await client.score(metric, items, traffic_class=traffic_class, timeout_ms=timeout_ms)
    except UNAVAILABLE as exc:
        return _decide(None, exc, fail_open, metric)
    return _decide(result, None, fail_open, metric)


# -- observability helper --------------------------------------------------------------------


@dataclass
class BatcherStats:
    submitted: int = 0
    sent: int = 0  # items scored
    dropped: int = 0  # the oldest items, pushed out of a full queue
    failed: int = 0  # items whose batch failed after the retries
    batches: int = 0


@dataclass
class ObservabilityBatcher:
    """Collects items in a bounded queue and sends them in batches (traffic class observability)
    from a background thread; a full queue drops its oldest items (counted), `close` flushes.

    `on_result(items, result)` receives each scored batch, `on_error(items, error)` each failed
    one; both run on the background thread.
    """

    client: Client
    metric: str
    max_batch: int = 32
    max_queue: int = 10_000
    flush_interval_s: float = 1.0
    timeout_ms: float | None = 10_000
    on_result: Callable[[list[dict[str, str]], ScoreResult], None] | None = None
    on_error: Callable[[list[dict[str, str]], LunaserveError], None] | None = None
    stats: BatcherStats = field(default_factory=BatcherStats)

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_queue < 1:
            raise ValueError("max_batch and max_queue must be at least 1")
        self._queue: deque[dict[str, str]] = deque()
        self._lock = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="lunaserve-batcher", daemon=True)
        self._thread.start()

    def submit(self, item: Item) -> None:
        """Never blocks: a full queue drops its oldest item to make room."""
        with self._lock:
            if self._closing:
                raise RuntimeError("the batcher is closed")
            if len(self._queue) >= self.max_queue:
                self._queue.popleft()
                self.stats.dropped += 1
            self._queue.append(dict(item))
            self.stats.submitted += 1
            if len(self._queue) >= self.max_batch:
                self._lock.notify()

    def _take(self) -> list[dict[str, str]] | None:
        with self._lock:
            deadline = time.monotonic() + self.flush_interval_s
            while len(self._queue) < self.max_batch and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            if not self._queue:
                return None if self._closing else []
            return [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            if not batch:
                continue
            try:
                result = self.client.score(
                    self.metric, batch, traffic_class="observability", timeout_ms=self.timeout_ms
                )
            except LunaserveError as exc:
                self.stats.failed += len(batch)
                if self.on_error:
                    self.on_error(batch, exc)
                else:
                    log.warning("observability batch of %d failed: %s", len(batch), exc)
                continue
            self.stats.sent += len(batch)
            self.stats.batches += 1
            if self.on_result:
                self.on_result(batch, result)

    def close(self, timeout_s: float = 30) -> BatcherStats:
        """Send what is queued, stop the thread, and return the counts."""
        with self._lock:
            self._closing = True
            self._lock.notify()
        self._thread.join(timeout_s)
        return self.stats

    def __enter__(self) -> ObservabilityBatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
