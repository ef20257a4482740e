"""The row cap at which batching stops paying, measured on this machine when a model loads.

Whether a bigger batch is cheaper per row depends on the CPU, the thread count and the model,
and it decides whether batching helps latency or hurts it: on one core of the project's
machines batch 1 was the fastest per row and batches of 8 cost more per row, so a queue
drained in batches of 8 made every request wait for seven others and served fewer per second
(docs/benchmarks.md). So when a model loads its forward pass is timed at 1, 2, 4, ... rows
of one typical length, and batches are capped at the largest size that still earns its
latency: each step up must raise throughput by `min_gain` over the size chosen so far.

The measurement takes the fastest of a few repeats per size, in rounds over the sizes so
that a slow spell (a busy neighbour, another instance just loaded) slows every size rather
than deciding the cap: timing each size's repeats back to back once measured batch 1 at 46.6
rows/s beside 56.0 at 2 rows, where other loads measured 54-57 for both, and a server chose 2
rows.

A cap above one row is then confirmed: batch 1 and the chosen size are timed in turn a few more
times and the choice made again with those passes counted. Rounds protect against a spell
shorter than a round; a longer one that happened to cover batch 1's passes (a server once
measured batch 1 at 48.0 rows/s beside 56.5 at 4 rows, where other starts measured 54-57 for
batch 1 and 58-60 at 4, chose 4-row batches, and that run's p99 at 11 req/s was 122 ms against
74) slows both sides of the confirmation alike, so a cap stands only where it pays beside
batch 1 timed next to it. A cap of one row, the usual outcome on one or two cores, costs no
confirmation at all.

It knows only a `predict` callable, windows and a timer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from service.runtime.encoding import Window

Predict = Callable[[Sequence[Window]], object]


@dataclass(frozen=True)
class BatchCalibration:
    """What was measured and what it chose; reported in the logs and by GET /v1/metrics/{metric}."""

    tokens: int  # the length of every row measured
    seconds_by_rows: dict[int, float]  # fastest whole forward pass at each row count
    min_gain: float
    max_batch_rows: int  # the chosen cap

    def rows_per_s(self) -> dict[int, float]:
        return {rows: rows / s for rows, s in self.seconds_by_rows.items()}

    def seconds_per_token(self) -> float:
        """The cheapest cost per token measured: what an idle model does, before any request."""
        return min(s / (rows * self.tokens) for rows, s in self.seconds_by_rows.items())


def row_counts(max_rows: int) -> list[int]:
    """1, 2, 4, ... up to `max_rows`, which is always included."""
    counts, rows = [], 1
    while rows < max_rows:
        counts.append(rows)
        rows *= 2
    return [*counts, max_rows]


def choose_max_rows(seconds_by_rows: Mapping[int, float], min_gain: float) -> int:
    """The largest row count each of whose steps up from the size chosen before paid `min_gain`."""
    chosen = min(seconds_by_rows)
    for rows in sorted(seconds_by_rows):
        if rows / seconds_by_rows[rows] >= (1 + min_gain) * chosen / seconds_by_rows[chosen]:
            chosen = rows
    return chosen


def calibrate(
    predict: Predict,
    window: Window,
    *,
    max_rows: int,
    min_gain: float,
    repeats: int = 3,
    confirm_repeats: int = 6,
    timer: Callable[[], float] = time.perf_counter,
) -> BatchCalibration:
    """Time `predict` on 1, 2, 4, ... copies of `window` up to `max_rows` and choose the cap;
    a cap above one row is kept only if it still pays with batch 1 timed beside it."""
    sizes = row_counts(max_rows)
    for rows in sizes:
        predict([window] * rows)  # the first pass at a new shape allocates; do not count it
    best = dict.fromkeys(sizes, float("inf"))

    def time_pass(rows: int) -> None:
        batch = [window] * rows
        start = timer()
        predict(batch)
        best[rows] = max(min(best[rows], timer() - start), 1e-9)

    for _ in range(repeats):  # in rounds over the sizes: a slow spell slows every size, not one
        for rows in sizes:
            time_pass(rows)
    chosen, confirmed = choose_max_rows(best, min_gain), {1}
    while chosen not in confirmed:  # ends: each size is confirmed at most once
        for _ in range(confirm_repeats):
            time_pass(1)
            time_pass(chosen)
        confirmed.add(chosen)
        chosen = choose_max_rows(best, min_gain)
    return BatchCalibration(
        tokens=len(window), seconds_by_rows=dict(best), min_gain=min_gain, max_batch_rows=chosen
    )
