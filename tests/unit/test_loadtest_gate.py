"""The SLO gate on synthetic samples: every stage check, and arrivals never sent count."""

from __future__ import annotations

from loadtest.gate import judge
from loadtest.plan import Budget, LoadPlan, PlanStage
from loadtest.samples import Sample
from loadtest.shape import StageSchedule

T0 = 2_000_000.0


def plan(arrivals: str = "constant") -> LoadPlan:
    stages = [
        PlanStage(name="warmup", duration_s=2, target_qps=10, pool="a"),
        PlanStage(name="peak", duration_s=10, target_qps=10, pool="a", budget=Budget(p50=20, p95=40, p99=50)),
    ]
    return LoadPlan(
        metric="m",
        stages=stages,
        pools={},
        pool_tokens={},
        per_user_qps=0.5,
        arrivals=arrivals,
        max_error_ratio=0.01,
        settle_s=1.0,
        out_dir="/unused",
    )


def steady(latency_ms: float, start: float = T0 + 2, seconds: int = 10, qps: int = 10) -> list[Sample]:
    return [Sample(start + i / qps, latency_ms, 200, 0.0, 1, 64) for i in range(seconds * qps)]


def checks_by_name(verdict: dict) -> dict[str, dict]:
    return {c["name"]: c for c in verdict["checks"]}


def test_gate_passes_a_steady_stage_and_skips_the_warmup() -> None:
    p = plan()
    verdict = judge(p, StageSchedule(p).windows(T0), steady(10.0))
    assert verdict["passed"]
    assert {c["name"].split(":")[0] for c in verdict["checks"]} == {"peak"}
    peak = verdict["stages"][1]
    assert peak["judged_from"] == T0 + 3  # settle_s left out
    assert peak["figures"]["achieved_qps"] == 10.0


def test_gate_fails_latency_and_names_the_percentile() -> None:
    p = plan()
    verdict = judge(p, StageSchedule(p).windows(T0), steady(45.0))
    checks = checks_by_name(verdict)
    assert not verdict["passed"]
    assert not checks["peak: p50 latency"]["passed"] and not checks["peak: p95 latency"]["passed"]
    assert checks["peak: p99 latency"]["passed"]


def test_gate_counts_unsent_arrivals_and_shed_requests_as_errors() -> None:
    p = plan()
    samples = steady(10.0)
    samples += [Sample(T0 + 5 + i / 10, 0.0, -2, 0.0, 1, 0) for i in range(5)]
    samples += [Sample(T0 + 6 + i / 10, 3.0, 503, 0.0, 1, 64) for i in range(5)]
    checks = checks_by_name(judge(p, StageSchedule(p).windows(T0), samples))
    error = checks["peak: error ratio"]
    assert not error["passed"]
    assert "(10 of 100)" in error["measured"] and "-2: 5" in error["note"] and "503: 5" in error["note"]


def test_gate_fails_a_stage_that_falls_short_of_its_rate() -> None:
    p = plan()
    checks = checks_by_name(judge(p, StageSchedule(p).windows(T0), steady(10.0, qps=8)))
    assert not checks["peak: achieved QPS"]["passed"]
    assert checks["peak: achieved QPS"]["measured"] == "8.00"


def test_gate_without_a_started_shape_fails() -> None:
    verdict = judge(plan(), [], [])
    assert not verdict["passed"] and verdict["checks"][0]["name"] == "load run"
