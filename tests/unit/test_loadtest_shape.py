"""The load shape's stage logic, driven by a fake clock (no Locust, no sleeping)."""

from __future__ import annotations

import pytest

from loadtest.plan import Budget, LoadPlan, PlanStage
from loadtest.shape import DRAIN_SPAWN_RATE, ShapeController, StageSchedule

BUDGET = Budget(p50=10, p95=20, p99=30)


class FakeClock:
    def __init__(self, wall_at_zero: float = 1000.0) -> None:
        self.t = 0.0
        self.wall_at_zero = wall_at_zero

    def run_time(self) -> float:
        return self.t

    def wall(self) -> float:
        return self.wall_at_zero + self.t


def plan(drain_s: float = 2.0) -> LoadPlan:
    stages = [
        PlanStage(name="warmup", duration_s=5, target_qps=10, pool="average"),
        PlanStage(name="average", duration_s=10, target_qps=10, pool="average", budget=BUDGET),
        PlanStage(name="peak", duration_s=10, target_qps=25, pool="peak", budget=BUDGET),
        PlanStage(name="recovery", duration_s=5, target_qps=10, pool="average", budget=BUDGET),
    ]
    return LoadPlan(
        metric="m",
        stages=stages,
        pools={},
        pool_tokens={},
        per_user_qps=0.5,
        drain_s=drain_s,
        out_dir="/unused",
    )


def controller(clock: FakeClock, seen: list[int], drain_s: float = 2.0) -> ShapeController:
    return ShapeController(StageSchedule(plan(drain_s)), clock.run_time, clock.wall, seen.append)


def test_shape_users_follow_each_stage_target() -> None:
    clock, seen = FakeClock(), []
    shape = controller(clock, seen)
    users = {}
    for t in (0, 4.9, 5, 14.9, 15, 24.9, 25, 29.9):
        clock.t = t
        tick = shape.tick()
        assert tick is not None
        users[t] = tick[0]
    assert users == {0: 20, 4.9: 20, 5: 20, 14.9: 20, 15: 50, 24.9: 50, 25: 20, 29.9: 20}
    assert seen == [0, 1, 2, 3]  # each stage announced once, in order


def test_shape_spawns_a_stage_change_within_a_quarter_second() -> None:
    clock, seen = FakeClock(), []
    shape = controller(clock, seen)
    clock.t = 15
    tick = shape.tick()
    assert tick is not None
    _users, rate = tick
    assert (50 - 20) / rate == pytest.approx(0.25)


def test_shape_drains_then_stops() -> None:
    clock, seen = FakeClock(), []
    shape = controller(clock, seen, drain_s=2.0)
    clock.t = 30.0
    assert shape.tick() == (0, DRAIN_SPAWN_RATE)
    clock.t = 31.9
    assert shape.tick() == (0, DRAIN_SPAWN_RATE)
    clock.t = 32.0
    assert shape.tick() is None


def test_shape_windows_are_anchored_at_the_first_tick() -> None:
    clock, seen = FakeClock(wall_at_zero=5000.0), []
    shape = controller(clock, seen)
    assert shape.windows() == []
    clock.t = 0.3  # Locust's first tick comes a little after its start time
    shape.tick()
    windows = shape.windows()
    assert [(w.stage.name, w.start, w.end) for w in windows] == [
        ("warmup", 5000.0, 5005.0),
        ("average", 5005.0, 5015.0),
        ("peak", 5015.0, 5025.0),
        ("recovery", 5025.0, 5030.0),
    ]
    assert windows[1].judged_span(1.0) == (5006.0, 5015.0)


def test_shape_offered_rate_is_at_least_the_target() -> None:
    p = plan()
    for qps in (0.3, 10, 25, 33.3):
        assert qps <= p.offered_qps(qps) <= qps + p.per_user_qps
