"""The API's error hierarchy and the only place exceptions become HTTP statuses.

Core code (registry, scheduler, runtime) raises its own domain errors and knows nothing of HTTP;
`DOMAIN_ERRORS` is the one table that turns each into a problem+json error (`api_error`).
Handlers: ours (ApiError, and every domain error through the table), framework errors (unknown
route, wrong method) in the same shape, request validation (422), and a catch-all 500 that logs
the traceback under an error id and never shows exception text to the client.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.schemas import Problem
from service.batching.scheduler import (
    AdmissionError,
    BatchFailedError,
    DeadlineExceededError,
    RequestTooLargeError,
)
from service.loaded_metric import UnscorableItemsError
from service.registry import MetricNotFoundError
from service.runtime.artifact import ArtifactError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://lunaserve.dev/problems/"


class ApiError(Exception):
    status = 500
    slug = "internal"
    title = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.errors = errors

    def problem(self, instance: str | None) -> Problem:
        return Problem(
            type=TYPE_BASE + self.slug, title=self.title, status=self.status,
            detail=self.detail, instance=instance, errors=self.errors,
        )  # fmt: skip


class NotFoundError(ApiError):
    status, slug, title = 404, "not-found", "Not found"


class FrameworkError(ApiError):
    """An error the framework raised (unknown route, wrong method), with its own status."""

    slug = "http"

    def __init__(self, status: int, detail: str, headers: dict[str, str]) -> None:
        super().__init__(detail, headers=headers)
        self.status = status
        self.title = HTTPStatus(status).phrase


class RequestInvalidError(ApiError):
    status, slug, title = 422, "validation", "Invalid request"


class InvalidItemsError(ApiError):
    status, slug, title = 422, "invalid-items", "Items cannot be scored"


class TimeoutUnmeetableError(ApiError):
    """The items need more inference than their timeout allows even on an idle server: a retry
    cannot help (raise timeout_ms or split the items). Load is never the reason: that is a 503."""

    status, slug, title = 422, "timeout-unmeetable", "Timeout too short for these items"


class UnauthorizedError(ApiError):
    status, slug, title = 401, "unauthorized", "Missing or wrong API key"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="lunaserve"'})


class ForbiddenError(ApiError):
    status, slug, title = 403, "forbidden", "Key not allowed here"


class PayloadTooLargeError(ApiError):
    status, slug, title = 413, "payload-too-large", "Request body too large"


class UnverifiableArtifactError(ApiError):
    status, slug, title = 422, "unverifiable-artifact", "Artifact failed verification"


class OverloadedError(ApiError):
    status, slug, title = 503, "overloaded", "Cannot serve this request now"

    def __init__(self, detail: str, *, reason: str, retry_after_s: float) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, math.ceil(retry_after_s)))})
        self.reason = reason


class NotReadyError(ApiError):
    status, slug, title = 503, "not-ready", "Not ready"


class InferenceFailedError(ApiError):
    status, slug, title = 500, "inference-failed", "Inference failed"


def _overloaded(exc: AdmissionError) -> ApiError:
    return OverloadedError(str(exc), reason=exc.reason, retry_after_s=exc.retry_after_s)


def _expired(exc: DeadlineExceededError) -> ApiError:
    # Shed after admission: the queue moved slower than estimated. A 503 with Retry-After,
    # like any other shed request, tells the client to come back rather than that it erred.
    return OverloadedError(str(exc), reason="expired", retry_after_s=exc.retry_after_s)


def _failed(exc: BatchFailedError) -> ApiError:
    return InferenceFailedError(f"inference failed; quote error id {exc.error_id} to the operator")


def _unscorable(exc: UnscorableItemsError) -> ApiError:
    return InvalidItemsError(exc.detail, errors=exc.problems)


def _unverifiable(exc: ArtifactError) -> ApiError:
    return UnverifiableArtifactError(f"{exc}; still serving the previous version")


# Domain error -> API error: the only such table. A class not listed here is a bug (500).
DOMAIN_ERRORS: dict[type[Exception], Callable[[Any], ApiError]] = {
    MetricNotFoundError: lambda exc: NotFoundError(str(exc)),
    UnscorableItemsError: _unscorable,
    RequestTooLargeError: lambda exc: TimeoutUnmeetableError(str(exc)),
    AdmissionError: _overloaded,
    DeadlineExceededError: _expired,
    BatchFailedError: _failed,
    ArtifactError: _unverifiable,
}


def api_error(exc: Exception) -> ApiError | None:
    """The problem+json error for `exc` (itself when it is one), None when it is not expected."""
    if isinstance(exc, ApiError):
        return exc
    for cls in type(exc).__mro__:
        if cls in DOMAIN_ERRORS:
            return DOMAIN_ERRORS[cls](exc)
    return None


def request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def problem_response(error: ApiError, instance: str | None) -> JSONResponse:
    body = error.problem(instance).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=error.status, headers=error.headers, media_type=PROBLEM_JSON)


def install_error_handlers(app: FastAPI) -> None:
    async def _api_error(request: Request, exc: Exception) -> JSONResponse:
        error = api_error(exc)
        assert error is not None  # registered for ApiError and the table's classes only
        return problem_response(error, request_id(request))

    handled: list[type[Exception]] = [ApiError, *DOMAIN_ERRORS]
    for cls in handled:
        app.add_exception_handler(cls, _api_error)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Framework errors (unknown route, wrong method) in the same problem+json shape."""
        error = FrameworkError(exc.status_code, str(exc.detail), dict(exc.headers or {}))
        return problem_response(error, request_id(request))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        error = RequestInvalidError("the request does not match the schema", errors=errors)
        return problem_response(error, request_id(request))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:12]
        log.error("unhandled error %s on %s %s", error_id, request.method, request.url.path, exc_info=exc)
        return problem_response(
            InferenceFailedError(f"internal error; quote error id {error_id} to the operator"),
            request_id(request),
        )


# Statuses each kind of route can answer, for the OpenAPI spec.
def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Body is not JSON (or not UTF-8)",
        401: "Missing or wrong API key", 403: "Key not allowed here",
        404: "Unknown metric or version (admin routes: admin is disabled)",
        413: "Body too large", 422: "Invalid request or items",
        500: "Inference failed (error id in detail)",
        503: "Shed: queue full, deadline unreachable or passed, draining (Retry-After)",
    }  # fmt: skip
    return {s: {"model": Problem, "description": text[s], "content": {PROBLEM_JSON: {}}} for s in statuses}
