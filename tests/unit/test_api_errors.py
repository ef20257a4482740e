"""service.api.errors: the one table from domain errors to problem+json errors."""

from __future__ import annotations

import pytest

from service.api import errors as e
from service.batching.scheduler import (
    AdmissionError,
    BatchFailedError,
    DeadlineExceededError,
    RequestTooLargeError,
)
from service.loaded_metric import UnscorableItemsError, check_items
from service.registry import MetricNotFoundError
from service.runtime.artifact import ArtifactError
from tests.conftest import counting_spec


@pytest.mark.parametrize(
    ("error", "status", "slug"),
    [
        (MetricNotFoundError("no metric named 'x' is served"), 404, "not-found"),
        (UnscorableItemsError("1 problem(s) in the items", [{"item": 0, "msg": "m"}]), 422, "invalid-items"),
        (RequestTooLargeError("split it"), 422, "timeout-unmeetable"),
        (AdmissionError("queue_full", "the queue is full", 2.5), 503, "overloaded"),
        (DeadlineExceededError("too late", retry_after_s=3.0), 503, "overloaded"),
        (BatchFailedError("abc123"), 500, "inference-failed"),
        (ArtifactError("folder: bad hash"), 422, "unverifiable-artifact"),
    ],
)
def test_errors_every_domain_error_has_one_status(error: Exception, status: int, slug: str) -> None:
    api = e.api_error(error)
    assert api is not None and api.status == status and api.problem(None).type.endswith(slug)


def test_errors_carry_retry_after_reason_and_item_problems() -> None:
    shed = e.api_error(DeadlineExceededError("too late", retry_after_s=2.2))
    assert isinstance(shed, e.OverloadedError) and shed.reason == "expired"
    assert shed.headers == {"Retry-After": "3"}
    failed = e.api_error(BatchFailedError("abc123"))
    assert failed is not None and failed.detail == "inference failed; quote error id abc123 to the operator"
    items = e.api_error(UnscorableItemsError("an item cannot be scored", [{"item": 1, "msg": "too long"}]))
    assert items is not None and items.errors == [{"item": 1, "msg": "too long"}]


def test_errors_unexpected_exceptions_are_not_in_the_table() -> None:
    assert e.api_error(ValueError("internal detail")) is None
    assert e.api_error(KeyError("x")) is None


def test_errors_item_check_names_every_item_and_field() -> None:
    items = [{"output": "ok", "context": "c"}, {"output": " ", "context": "x" * 11}]
    with pytest.raises(UnscorableItemsError) as caught:
        check_items(counting_spec(), items, max_chars=10)
    assert caught.value.detail == "2 problem(s) in the items"
    assert caught.value.problems == [
        {"item": 1, "field": "output", "msg": "context_adherence requires output"},
        {"item": 1, "field": "context", "msg": "11 characters; the limit is 10"},
    ]
