"""The scoring endpoints' route class: FastAPI's routing, docs and error handlers, a lean call.

FastAPI's own request handler resolves every endpoint parameter through its dependency solver,
opens telemetry operations around it and validates the endpoint's returned model again before
serialising it: 0.08 ms of the event loop a request, measured (docs/benchmarks.md, "A lean route
for the two scoring endpoints"), on a core that inference shares.
A route of this class (FastAPI's documented extension point, a custom `APIRoute`) reads the body
itself by FastAPI's rules, validates it with the endpoint's body model, and calls the endpoint as
`endpoint(request=..., body=..., **path_params)`; the endpoint returns the response to send.
Its signature and `response_model` still describe the route to OpenAPI.

The rules kept from FastAPI (tests/unit/test_scoring_route.py sends the same bodies to both):
the body is parsed as JSON only under an `application/json` or `application/*+json` content
type, else it is validated as bytes (and refused); an empty body is a missing one; malformed
JSON is a 422 `json_invalid` at ("body", offset); validation errors are located under "body";
anything else that fails while reading or parsing (not UTF-8, nested too deep) is a 400.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any, get_type_hints

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    maintype, _, subtype = content_type.split(";", 1)[0].strip().lower().partition("/")
    return maintype == "application" and (subtype == "json" or subtype.endswith("+json"))


async def read_body(request: Request, model: type[BaseModel]) -> BaseModel:
    """The request's body as `model`; RequestValidationError (422) or HTTPException (400) if not."""
    try:
        raw = await request.body()
        value: Any = json.loads(raw) if raw and _is_json(request.headers.get("content-type")) else raw
    except json.JSONDecodeError as exc:
        invalid = {"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error",
                   "input": {}, "ctx": {"error": exc.msg}}  # fmt: skip
        raise RequestValidationError([invalid], body=exc.doc) from exc
    except Exception as exc:  # not UTF-8, nested past the parser's depth, the body not read
        raise HTTPException(400, "There was an error parsing the body") from exc
    if not raw:
        missing = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
        raise RequestValidationError([missing])
    try:
        return model.model_validate(value, from_attributes=True)  # as FastAPI validates a body
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors, body=value) from None


class ScoringRoute(APIRoute):
    """A route whose endpoint takes `request`, `body` (its annotation is the body model) and the
    path parameters, and returns the Response to send."""

    def get_route_handler(self) -> Handler:
        endpoint = self.endpoint
        model = get_type_hints(endpoint)["body"]

        async def handle(request: Request) -> Response:
            body = await read_body(request, model)
            response: Response = await endpoint(request=request, body=body, **request.path_params)
            return response

        return handle
