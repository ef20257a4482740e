"""Settings rules that requests depend on."""

from __future__ import annotations

import pytest

from service.config import DeadlineSettings, Settings


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


def test_the_usable_cpus_are_shared_among_every_instance_of_a_metric_guardrail_ones_included(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("service.config.usable_cpus", lambda: 8)
    settings = Settings(instances=2, guardrail_instances=2, metric_instances={"solo": 1})
    assert settings.threads_per_instance("any") == 2  # 8 CPUs over 2 + 2 instances
    assert settings.threads_per_instance("solo") == 2  # 8 over 1 + 2, rounded down
    assert Settings(intra_op_threads=3, guardrail_instances=1).threads_per_instance("any") == 3
    assert not settings.instances_share_cores("any")  # 4 instances x 2 threads on 8 CPUs
    assert Settings(intra_op_threads=5, guardrail_instances=1).instances_share_cores("any")  # 10 on 8
    with pytest.raises(ValueError, match="guardrail_instances"):
        Settings(guardrail_instances=-1)
