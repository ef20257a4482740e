"""Stage logic of the load shape, free of Locust so it can be tested with a fake clock.

`loadtest/locustfile.py` wraps `ShapeController` in a `LoadTestShape`: on each tick it asks for
the user count (offered rate = users x per-user Poisson rate) and is told when a new stage
begins so workers switch payload pools.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from loadtest.plan import LoadPlan, PlanStage

SPAWN_WITHIN_S = 0.25  # all of a stage's new users start within this many seconds
DRAIN_SPAWN_RATE = 1000.0  # users stopped per second once the last stage is over


@dataclass(frozen=True)
class StageWindow:
    index: int
    stage: PlanStage
    start: float  # wall-clock seconds
    end: float

    def judged_span(self, settle_s: float) -> tuple[float, float]:
        return self.start + settle_s, self.end


class StageSchedule:
    """Stages laid end to end from time 0."""

    def __init__(self, plan: LoadPlan) -> None:
        self.plan = plan
        self.starts: list[float] = []
        t = 0.0
        for stage in plan.stages:
            self.starts.append(t)
            t += stage.duration_s
        self.total_s = t

    def index_at(self, run_time_s: float) -> int | None:
        """The stage running at `run_time_s`, or None once every stage is over."""
        if run_time_s < 0 or run_time_s >= self.total_s:
            return None
        index = 0
        for i, start in enumerate(self.starts):
            if run_time_s >= start:
                index = i
        return index

    def users(self, index: int) -> int:
        return self.plan.users_for(self.plan.stages[index].target_qps)

    def spawn_rate(self, index: int) -> float:
        previous = self.users(index - 1) if index else 0
        return max(abs(self.users(index) - previous), 1) / SPAWN_WITHIN_S

    def windows(self, started_at: float) -> list[StageWindow]:
        return [
            StageWindow(i, stage, started_at + start, started_at + start + stage.duration_s)
            for i, (stage, start) in enumerate(zip(self.plan.stages, self.starts, strict=True))
        ]


class ShapeController:
    """What the shape returns on each tick, and the stage timeline it started."""

    def __init__(
        self,
        schedule: StageSchedule,
        run_time: Callable[[], float],
        wall: Callable[[], float],
        on_stage: Callable[[int], None] = lambda index: None,
    ) -> None:
        self.schedule = schedule
        self._run_time = run_time
        self._wall = wall
        self._on_stage = on_stage
        self.current: int | None = None
        self.started_at: float | None = None  # wall-clock time of run time 0

    def tick(self) -> tuple[int, float] | None:
        t = self._run_time()
        if self.started_at is None:
            self.started_at = self._wall() - t
        index = self.schedule.index_at(t)
        if index is None:
            if t < self.schedule.total_s + self.schedule.plan.drain_s:
                return 0, DRAIN_SPAWN_RATE  # users stop; answers in flight still arrive
            return None
        if index != self.current:
            self.current = index
            self._on_stage(index)
        return self.schedule.users(index), self.schedule.spawn_rate(index)

    def windows(self) -> list[StageWindow]:
        if self.started_at is None:
            return []
        return self.schedule.windows(self.started_at)
