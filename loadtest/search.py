"""Step search for the highest sustainable rate: grow while steps pass, then bisect.

`probe(qps)` runs one short constant-rate step and says whether it stayed within the peak
latency budget, the error limit and the achieved-rate floor. The search starts at the stated
peak, multiplies the rate by `growth` while steps pass (or divides while they fail), then
bisects between the last pass and the first failure until the gap is within `resolution` of
the rate or the step budget is spent. Pure: tested against a model of a server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Probe:
    qps: float
    passed: bool
    p99_ms: float | None = None
    achieved_qps: float = 0.0
    error_ratio: float = 0.0
    failed: tuple[str, ...] = ()  # names of the checks that failed
    out_dir: str = ""


@dataclass(frozen=True)
class SearchResult:
    sustainable_qps: float | None  # highest rate that passed; None when none did
    first_failing_qps: float | None  # lowest rate that failed above it; None when none did
    probes: list[Probe] = field(default_factory=list)
    stopped_by: str = ""  # "resolution", "max_qps", "max_steps" or "min_qps"

    def to_dict(self) -> dict[str, Any]:
        return {
            "sustainable_qps": self.sustainable_qps,
            "first_failing_qps": self.first_failing_qps,
            "stopped_by": self.stopped_by,
            "probes": [vars(p) | {"failed": list(p.failed)} for p in self.probes],
        }


def step_search(
    probe: Callable[[float], Probe],
    start_qps: float,
    *,
    growth: float = 1.5,
    resolution: float = 0.1,
    max_steps: int = 10,
    max_qps: float | None = None,
    min_qps: float | None = None,
) -> SearchResult:
    if start_qps <= 0 or growth <= 1 or not 0 < resolution < 1 or max_steps < 1:
        raise ValueError("start_qps > 0, growth > 1, 0 < resolution < 1 and max_steps >= 1 are required")
    ceiling = max_qps if max_qps is not None else float("inf")
    floor = min_qps if min_qps is not None else start_qps / growth**6
    probes: list[Probe] = []
    passed_at: float | None = None
    failed_at: float | None = None

    def run(qps: float) -> bool:
        result = probe(qps)
        probes.append(result)
        return result.passed

    rate = min(start_qps, ceiling)
    stopped = "max_steps"
    # 1. bracket: grow while passing, shrink while failing
    while len(probes) < max_steps:
        if run(rate):
            passed_at = rate
            if failed_at is not None:
                break
            if rate >= ceiling:
                stopped = "max_qps"
                break
            rate = min(rate * growth, ceiling)
        else:
            failed_at = rate
            if passed_at is not None:
                break
            if rate / growth < floor:
                stopped = "min_qps"
                break
            rate = rate / growth
    # 2. bisect the bracket
    if passed_at is not None and failed_at is not None:
        stopped = "max_steps"
        while len(probes) < max_steps:
            if failed_at - passed_at <= resolution * passed_at:
                stopped = "resolution"
                break
            mid = (passed_at + failed_at) / 2
            if run(mid):
                passed_at = mid
            else:
                failed_at = mid
        else:
            if failed_at - passed_at <= resolution * passed_at:
                stopped = "resolution"
    return SearchResult(passed_at, failed_at, probes, stopped)
