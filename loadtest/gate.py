"""The SLO gate: each judged stage's achieved QPS, latency percentiles and error ratio against
the plan. Run by the Locust master (or local runner) when it quits; its verdict is the exit code."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from loadtest.checks import Check
from loadtest.plan import LoadPlan
from loadtest.samples import Sample, SpanFigures, span_figures
from loadtest.shape import StageWindow


def _ms(value: float | None) -> str:
    return "no successful request" if value is None else f"{value:.1f} ms"


def stage_checks(plan: LoadPlan, window: StageWindow, fig: SpanFigures) -> list[Check]:
    stage = window.stage
    budget = stage.budget
    if budget is None:
        return []
    name = stage.name
    # Poisson arrivals put sqrt(N) noise on a stage's count: judge what was achieved against
    # what the schedule asked for when its draw fell below the target.
    reference = min(stage.target_qps, fig.scheduled_qps) if plan.arrivals == "poisson" else stage.target_qps
    floor = plan.min_achieved_ratio * reference
    notes = [f"scheduled {fig.scheduled_qps:.2f}/s"]
    if fig.lag_p99_ms is not None:
        notes.append(f"generator lag p99 {fig.lag_p99_ms:.0f} ms")
    checks = [
        Check(
            f"{name}: achieved QPS",
            f">= {floor:.2f} ({plan.min_achieved_ratio:.0%} of {reference:.2f})",
            f"{fig.achieved_qps:.2f}",
            fig.achieved_qps >= floor,
            "; ".join(notes),
        )
    ]
    for q in ("p50", "p95", "p99"):
        limit = getattr(budget, q)
        value = getattr(fig, f"{q}_ms")
        checks.append(
            Check(
                f"{name}: {q} latency", f"<= {limit:g} ms", _ms(value), value is not None and value <= limit
            )
        )
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(fig.status_counts.items()) if k != "200")
    checks.append(
        Check(
            f"{name}: error ratio",
            f"<= {plan.max_error_ratio:.2%}",
            f"{fig.error_ratio:.2%} ({fig.errors} of {fig.sent})",
            fig.sent > 0 and fig.error_ratio <= plan.max_error_ratio,
            statuses,
        )
    )
    return checks


def judge(plan: LoadPlan, windows: Sequence[StageWindow], samples: Sequence[Sample]) -> dict[str, Any]:
    """Figures per stage and the checks of every judged stage, as JSON-ready data."""
    if not windows:
        check = Check("load run", "stages ran", "the load shape never started", False)
        return {"passed": False, "stages": [], "checks": [check.to_dict()]}
    stages, checks = [], []
    for w in windows:
        start, end = w.judged_span(plan.settle_s if w.stage.budget else 0.0)
        fig = span_figures(samples, start, end)
        stages.append(
            {
                "index": w.index,
                "name": w.stage.name,
                "start": w.start,
                "end": w.end,
                "judged_from": start,
                "target_qps": w.stage.target_qps,
                "offered_qps": plan.offered_qps(w.stage.target_qps),
                "users": plan.users_for(w.stage.target_qps),
                "budget_ms": w.stage.budget.model_dump() if w.stage.budget else None,
                "figures": {**asdict(fig), "error_ratio": fig.error_ratio},
            }
        )
        checks += stage_checks(plan, w, fig)
    return {
        "passed": all(c.passed for c in checks),
        "stages": stages,
        "checks": [c.to_dict() for c in checks],
    }


def write_verdict(path: Path, verdict: dict[str, Any]) -> Path:
    path.write_text(json.dumps(verdict, indent=2) + "\n", encoding="utf-8")
    return path
