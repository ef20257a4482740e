"""Per-request samples of a load run, and the figures of a stretch of time computed from them.

Each request is recorded once when it completes: when it was sent (wall clock), how long it
took, its HTTP status (0: no response, -1: a 200 without one result per item, -2: due but
never sent), how late it left against its arrival schedule, which stage it belonged to and its
tokens. Stages are judged on the requests *due* within them.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path

import numpy as np

FIELDS = ("sent_at", "latency_ms", "status", "lag_ms", "stage", "tokens")


@dataclass(frozen=True)
class Sample:
    sent_at: float
    latency_ms: float
    status: int
    lag_ms: float
    stage: int
    tokens: int

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def due_at(self) -> float:
        """When the arrival schedule wanted it sent (a late send does not move it to a later stage)."""
        return self.sent_at - self.lag_ms / 1000


def write_samples(path: Path, samples: Iterable[Sample]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(FIELDS)
        for s in samples:
            writer.writerow(astuple(s))
    return path


def read_samples(path: Path) -> list[Sample]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return [
            Sample(
                float(r["sent_at"]),
                float(r["latency_ms"]),
                int(r["status"]),
                float(r["lag_ms"]),
                int(r["stage"]),
                int(r["tokens"]),
            )
            for r in reader
        ]


@dataclass(frozen=True)
class SpanFigures:
    """What happened to the requests sent in [start, end)."""

    seconds: float
    sent: int
    ok: int
    errors: int
    status_counts: dict[str, int]
    achieved_qps: float  # successful requests per second
    scheduled_qps: float  # arrivals the schedule put in the span, per second (its random draw)
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    lag_p99_ms: float | None  # how late the generator sent against its schedule
    mean_tokens: float | None

    @property
    def error_ratio(self) -> float:
        return self.errors / self.sent if self.sent else 0.0


def _pct(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if values.size else None


def span_figures(samples: Sequence[Sample], start: float, end: float) -> SpanFigures:
    inside = [s for s in samples if start <= s.due_at < end]
    seconds = max(end - start, 1e-9)
    good = np.array([s.latency_ms for s in inside if s.ok])
    lags = np.array([s.lag_ms for s in inside])
    statuses: dict[str, int] = {}
    for s in inside:
        statuses[str(s.status)] = statuses.get(str(s.status), 0) + 1
    ok = int(good.size)
    return SpanFigures(
        seconds=seconds,
        sent=len(inside),
        ok=ok,
        errors=len(inside) - ok,
        status_counts=statuses,
        achieved_qps=ok / seconds,
        scheduled_qps=len(inside) / seconds,
        p50_ms=_pct(good, 50),
        p95_ms=_pct(good, 95),
        p99_ms=_pct(good, 99),
        max_ms=float(good.max()) if good.size else None,
        lag_p99_ms=_pct(lags, 99),
        mean_tokens=float(np.mean([s.tokens for s in inside])) if inside else None,
    )


def per_second(samples: Sequence[Sample], start: float, end: float) -> dict[str, np.ndarray]:
    """Time series for plots: seconds from `start`, achieved QPS and p50/p99 latency per second."""
    n = max(int(np.ceil(end - start)), 1)
    t = np.arange(n, dtype=float)
    qps, p50, p99 = np.zeros(n), np.full(n, np.nan), np.full(n, np.nan)
    buckets: list[list[float]] = [[] for _ in range(n)]
    for s in samples:
        i = int(s.sent_at - start)
        if 0 <= i < n and s.ok:
            buckets[i].append(s.latency_ms)
    for i, lat in enumerate(buckets):
        if lat:
            qps[i] = len(lat)
            p50[i], p99[i] = np.percentile(lat, 50), np.percentile(lat, 99)
    return {"t": t, "qps": qps, "p50": p50, "p99": p99}
