"""Capacity planning from the measured per-replica capacity: headroom, replicas, cost."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from loadtest.checks import Check


@dataclass(frozen=True)
class CapacityPlan:
    sustainable_qps: float | None  # per replica, within the peak latency budget
    peak_qps: float
    average_qps: float
    headroom: float | None  # sustainable / peak
    replicas_for_peak: int | None  # at the measured capacity, no margin
    evaluations_per_request: int
    replica_hourly_usd: float | None
    usd_per_1000_at_capacity: float | None  # one replica running flat out
    usd_per_1000_at_average: float | None  # replicas sized for peak, serving the average load

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_capacity(
    sustainable_qps: float | None,
    peak_qps: float,
    average_qps: float,
    evaluations_per_request: int = 1,
    replica_hourly_usd: float | None = None,
) -> CapacityPlan:
    ok = sustainable_qps is not None and sustainable_qps > 0
    headroom = sustainable_qps / peak_qps if ok else None  # type: ignore[operator]
    replicas = math.ceil(peak_qps / sustainable_qps - 1e-9) if ok else None  # type: ignore[operator]
    at_capacity = at_average = None
    if ok and replica_hourly_usd is not None:
        per_hour = sustainable_qps * 3600 * evaluations_per_request  # type: ignore[operator]
        at_capacity = replica_hourly_usd / per_hour * 1000
        at_average = replicas * replica_hourly_usd / (average_qps * 3600 * evaluations_per_request) * 1000  # type: ignore[operator]
    return CapacityPlan(
        sustainable_qps,
        peak_qps,
        average_qps,
        headroom,
        replicas,
        evaluations_per_request,
        replica_hourly_usd,
        at_capacity,
        at_average,
    )


def capacity_checks(plan: CapacityPlan, min_headroom: float) -> list[Check]:
    measured = (
        "no rate passed"
        if plan.headroom is None
        else f"{plan.headroom:.2f}x ({plan.sustainable_qps:.1f} QPS)"
    )
    return [
        Check(
            "capacity: headroom (sustainable / peak QPS)",
            f">= {min_headroom:g}x",
            measured,
            plan.headroom is not None and plan.headroom >= min_headroom,
        )
    ]
