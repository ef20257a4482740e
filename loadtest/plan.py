"""The load plan: everything one Locust run needs, written by the orchestrator as JSON.

The plan is the only contract between `lunaserve signoff` and `loadtest/locustfile.py`: stages
with their target rates and latency budgets, the payload pools, and how requests look on the
wire. Master and workers read the same file (pass `--plan` to each).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_USERS_PER_PLAN = 4000  # one Locust process handles a few thousand idle FastHttpUsers
USERS_AT_SMALLEST_STAGE = 20  # offered rate is quantised to users x per-user rate: <= 5% over
LATENCY_GAPS = 5.0  # a user's mean gap between arrivals is >= 5x the p99 budget (rarely late)


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    p50: float
    p95: float
    p99: float


class PlanStage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    duration_s: float = Field(gt=0)
    target_qps: float = Field(gt=0)
    pool: str = Field(description="Key of the payload pool this stage draws items from.")
    budget: Budget | None = Field(None, description="Latency budget in ms; None: the stage is not judged.")


class LoadPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    metric: str
    stages: list[PlanStage] = Field(min_length=1)
    pools: dict[str, list[dict[str, str]]]
    pool_tokens: dict[str, list[int]]
    per_user_qps: float = Field(gt=0)
    arrivals: Literal["poisson", "constant"] = "poisson"
    items_per_request: int = 1
    traffic_class: str | None = None
    timeout_ms: float | None = None
    client_timeout_s: float = 30.0
    max_error_ratio: float = 0.001
    min_achieved_ratio: float = 0.95
    settle_s: float = 1.0
    drain_s: float = Field(
        1.0, ge=0, description="After the last stage: users stopped, answers in flight collected."
    )
    seed: int = 0
    out_dir: str = Field(description="Where the master writes samples.csv and gate.json.")

    @property
    def path(self) -> str:
        return f"/v1/metrics/{self.metric}/score"

    def users_for(self, qps: float) -> int:
        return max(1, math.ceil(qps / self.per_user_qps - 1e-9))

    def offered_qps(self, qps: float) -> float:
        return self.users_for(qps) * self.per_user_qps

    @property
    def duration_s(self) -> float:
        return sum(s.duration_s for s in self.stages)

    def body(self, items: list[dict[str, str]]) -> dict[str, Any]:
        body: dict[str, Any] = {"items": items}
        if self.traffic_class:
            body["traffic_class"] = self.traffic_class
        if self.timeout_ms:
            body["timeout_ms"] = self.timeout_ms
        return body

    def write(self, path: Path) -> Path:
        path.write_text(self.model_dump_json(), encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: Path) -> LoadPlan:
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))


def per_user_qps(targets: list[float], p99_budget_ms: float) -> float:
    """Each user's Poisson rate: slow enough that a user is rarely still waiting on its last
    answer when its next arrival is due (open loop), and fine enough that the smallest stage
    has USERS_AT_SMALLEST_STAGE users; raised only if the largest stage would need too many."""
    by_latency = 1000.0 / (LATENCY_GAPS * p99_budget_ms)
    rate = min(by_latency, min(targets) / USERS_AT_SMALLEST_STAGE)
    return max(rate, max(targets) / MAX_USERS_PER_PLAN)
