"""Schemathesis checks that know what this server's 422 and 503 mean (loaded via SCHEMATHESIS_HOOKS).

Two built-in checks judge by status code alone, and both statuses below carry a promise the
schema cannot state: a schema-valid request may still be refused when its items need more
inference than its `timeout_ms` allows even on an idle server (422 `timeout-unmeetable`: the
request, not the load, is at fault), and any request may be shed under load (503 with
`Retry-After`). These replace `positive_data_acceptance` and `not_a_server_error` with stricter
forms: those two answers pass only with their exact problem type and headers; any other 5xx,
and any other 4xx to a schema-valid request, fails.
"""

from __future__ import annotations

from typing import Any

import schemathesis

from service.api.errors import TYPE_BASE

SHED_TYPES = {TYPE_BASE + "overloaded", TYPE_BASE + "not-ready"}
UNMEETABLE = TYPE_BASE + "timeout-unmeetable"
ACCEPTED = {401, 403, 404}  # no key, wrong key, a name the server does not serve


def _problem_type(response: Any) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("type") if isinstance(body, dict) else None


def _honest_shedding(response: Any) -> bool:
    return (
        response.status_code == 503
        and any(name.lower() == "retry-after" for name in response.headers)
        and _problem_type(response) in SHED_TYPES
    )


@schemathesis.check
def server_errors_only_as_honest_shedding(ctx: Any, response: Any, case: Any) -> None:
    """5xx only as a 503 with Retry-After and an overloaded/not-ready problem: never a crash."""
    if response.status_code >= 500 and not _honest_shedding(response):
        raise AssertionError(f"server error {response.status_code}: {response.text[:500]}")


@schemathesis.check
def schema_valid_requests_accepted(ctx: Any, response: Any, case: Any) -> None:
    """A request the schema allows is served, or refused only for a reason the schema cannot state."""
    meta = getattr(case, "meta", None)
    if meta is None or not meta.generation.mode.is_positive:
        return
    status = response.status_code
    if 200 <= status < 300 or status in ACCEPTED or _honest_shedding(response):
        return
    if status == 422 and _problem_type(response) == UNMEETABLE:
        return
    raise AssertionError(f"schema-valid request answered {status}: {response.text[:500]}")
