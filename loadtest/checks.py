"""One judged requirement: what was asked, what was measured, and whether it passed."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Check:
    """A row of the sign-off's pass/fail table."""

    name: str  # e.g. "peak: p99 latency"
    target: str  # e.g. "<= 300 ms"
    measured: str  # e.g. "212 ms"
    passed: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Check:
        return cls(**raw)

    def __str__(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        note = f" ({self.note})" if self.note else ""
        return f"{verdict}  {self.name}: {self.measured} (target {self.target}){note}"


def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if not c.passed]
