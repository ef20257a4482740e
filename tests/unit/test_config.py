"""Settings rules that requests depend on."""

from __future__ import annotations

import pytest

from service.config import DeadlineSettings


def test_deadline_is_the_stated_timeout_from_arrival_less_the_allowance() -> None:
    deadlines = DeadlineSettings(response_allowance_ms=10)
    assert deadlines.deadline(100.0, 500, ["observability"]) == pytest.approx(100.49)
    assert deadlines.deadline(0.0, 12, ["guardrail"]) == pytest.approx(0.006)  # allowance: half, at most


def test_deadline_without_a_timeout_takes_the_tightest_class_default_and_caps_a_stated_one() -> None:
    deadlines = DeadlineSettings(
        guardrail_timeout_ms=200, observability_timeout_ms=10_000, max_timeout_ms=1_000,
        response_allowance_ms=0,
    )  # fmt: skip
    assert deadlines.deadline(5.0, None, ["guardrail", "observability"]) == pytest.approx(5.2)
    assert deadlines.deadline(5.0, None, ["observability"]) == pytest.approx(6.0)  # 10 s, capped at 1 s
    assert deadlines.deadline(5.0, 60_000, ["guardrail"]) == pytest.approx(6.0)
