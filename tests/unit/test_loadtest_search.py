"""The step search against a fake server: p99 is a pure function of the offered rate."""

from __future__ import annotations

import pytest

from loadtest.capacity import capacity_checks, plan_capacity
from loadtest.search import Probe, step_search

BUDGET_MS = 100.0


class FakeServer:
    """An M/M/1-like server: p99 grows as 1 / (1 - rate / capacity); it fails past capacity."""

    def __init__(self, capacity: float, base_ms: float = 10.0) -> None:
        self.capacity = capacity
        self.base_ms = base_ms
        self.calls: list[float] = []

    def p99(self, qps: float) -> float:
        return float("inf") if qps >= self.capacity else self.base_ms / (1 - qps / self.capacity)

    def probe(self, qps: float) -> Probe:
        self.calls.append(qps)
        p99 = self.p99(qps)
        return Probe(qps=qps, passed=p99 <= BUDGET_MS, p99_ms=p99)

    @property
    def true_limit(self) -> float:  # p99 == budget
        return self.capacity * (1 - self.base_ms / BUDGET_MS)


@pytest.mark.parametrize("capacity", [30.0, 100.0, 1000.0])
def test_search_finds_the_limit_within_resolution(capacity: float) -> None:
    server = FakeServer(capacity)
    result = step_search(server.probe, start_qps=20, growth=1.5, resolution=0.05, max_steps=30)
    assert result.sustainable_qps is not None and result.first_failing_qps is not None
    assert result.sustainable_qps <= server.true_limit < result.first_failing_qps
    assert result.first_failing_qps - result.sustainable_qps <= 0.05 * result.sustainable_qps
    assert result.stopped_by == "resolution"
    assert len(server.calls) == len(result.probes)


def test_search_steps_down_when_the_peak_already_fails() -> None:
    server = FakeServer(capacity=10)
    result = step_search(server.probe, start_qps=50, growth=2, resolution=0.1, max_steps=20)
    assert server.calls[:3] == [50, 25, 12.5]
    assert result.sustainable_qps is not None and result.sustainable_qps <= server.true_limit


def test_search_respects_max_qps_and_max_steps() -> None:
    server = FakeServer(capacity=1000)
    capped = step_search(server.probe, start_qps=10, growth=2, max_qps=50, max_steps=10)
    assert server.calls == [10, 20, 40, 50]
    assert (capped.sustainable_qps, capped.first_failing_qps, capped.stopped_by) == (50, None, "max_qps")
    few = step_search(FakeServer(1000).probe, start_qps=10, growth=2, max_steps=3)
    assert len(few.probes) == 3 and few.stopped_by == "max_steps"


def test_search_reports_none_when_nothing_passes() -> None:
    result = step_search(FakeServer(capacity=0.001).probe, start_qps=10, growth=2, max_steps=50)
    assert result.sustainable_qps is None
    assert result.stopped_by == "min_qps"


def test_search_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        step_search(FakeServer(10).probe, start_qps=10, growth=1.0)


def test_capacity_headroom_replicas_and_cost() -> None:
    plan = plan_capacity(sustainable_qps=40, peak_qps=100, average_qps=50, replica_hourly_usd=0.36)
    assert plan.headroom == pytest.approx(0.4)
    assert plan.replicas_for_peak == 3
    assert plan.usd_per_1000_at_capacity == pytest.approx(0.36 / (40 * 3600) * 1000)
    assert plan.usd_per_1000_at_average == pytest.approx(3 * 0.36 / (50 * 3600) * 1000)
    [check] = capacity_checks(plan, min_headroom=1.0)
    assert not check.passed and "0.40x" in check.measured
    none = plan_capacity(None, 100, 50)
    assert none.headroom is None and not capacity_checks(none, 1.0)[0].passed
