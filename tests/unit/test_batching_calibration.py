"""service.batching.calibration: a fake predict whose cost a fake timer reads, so every choice is exact."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

from service.batching.calibration import calibrate, choose_max_rows, row_counts
from service.runtime.encoding import Window

WINDOW = Window(input_ids=np.arange(16, dtype=np.int64), token_type_ids=np.zeros(16, np.int64))


def test_calibration_row_counts_double_and_end_at_the_cap() -> None:
    assert row_counts(1) == [1]
    assert row_counts(8) == [1, 2, 4, 8]
    assert row_counts(6) == [1, 2, 4, 6]


@pytest.mark.parametrize(
    ("seconds", "min_gain", "chosen"),
    [
        ({1: 1.0, 2: 2.0, 4: 4.0}, 0.1, 1),  # no gain: batching only adds latency
        ({1: 1.0, 2: 1.2, 4: 2.0}, 0.1, 4),  # each step pays
        ({1: 1.0, 2: 1.95, 4: 3.0}, 0.1, 4),  # 2 rows gain 3% only, 4 rows 33% over 1
        ({1: 1.0, 2: 1.6, 4: 3.1}, 0.1, 2),  # 4 rows gain 3% over 2: not worth twice the wait
        ({1: 1.0, 2: 1.0, 4: 8.0}, 0.1, 2),  # a slower big batch is never chosen
        ({1: 1.0, 2: 1.95}, 0.0, 2),  # min_gain 0 takes any gain
    ],
)
def test_calibration_chooses_the_largest_batch_that_earns_its_latency(
    seconds: dict[int, float], min_gain: float, chosen: int
) -> None:
    assert choose_max_rows(seconds, min_gain) == chosen


class FakeModel:
    """predict() advances a fake clock by `cost(rows)`; the first pass at each shape costs extra."""

    def __init__(self, cost: Callable[[int], float]) -> None:
        self.cost = cost
        self.now = 0.0
        self.calls: list[int] = []

    def predict(self, windows: Sequence[Window]) -> None:
        rows = len(windows)
        assert all(w is WINDOW for w in windows)
        self.now += self.cost(rows) * (10 if rows not in self.calls else 1)
        self.calls.append(rows)

    def timer(self) -> float:
        return self.now


def test_calibration_times_each_size_without_its_first_pass_and_chooses() -> None:
    model = FakeModel(lambda rows: 0.010 + 0.001 * rows)  # fixed overhead: batching pays until 4
    result = calibrate(
        model.predict, WINDOW, max_rows=8, min_gain=0.2, repeats=2, confirm_repeats=2, timer=model.timer
    )
    # untimed first passes, then rounds, then the cap of 8 confirmed beside batch 1
    assert model.calls == [1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8, 1, 8, 1, 8]
    assert result.seconds_by_rows == pytest.approx({1: 0.011, 2: 0.012, 4: 0.014, 8: 0.018})
    assert result.tokens == 16
    # rows/s: 90.9, 166.7, 285.7, 444.4: each step up gains over 20%
    assert result.max_batch_rows == 8
    assert result.rows_per_s()[8] == pytest.approx(8 / 0.018)
    # what admission first assumes an idle model costs: the cheapest per token, 8 rows of 16
    assert result.seconds_per_token() == pytest.approx(0.018 / (8 * 16))


def test_a_slow_spell_does_not_decide_the_cap() -> None:
    """Linear cost (batch 1 is best), and the two passes after the first run three times as
    long: timed back to back they would be batch 1's two timed passes and make 2 rows look
    cheaper; in rounds over the sizes the spell cannot take every pass of one size."""
    model = FakeModel(lambda rows: 0.016 * rows)
    predict = model.predict

    def spelled(windows: Sequence[Window]) -> None:
        before = model.now
        predict(windows)
        if len(model.calls) - 1 in (1, 2):  # the second and third calls
            model.now += 2 * (model.now - before)

    result = calibrate(spelled, WINDOW, max_rows=8, min_gain=0.1, repeats=2, timer=model.timer)
    assert result.seconds_by_rows[1] == pytest.approx(0.016) and result.max_batch_rows == 1


def test_a_spell_over_every_batch_1_pass_of_the_rounds_is_caught_by_the_confirmation() -> None:
    """Bigger batches gain 5% (as on the project's machine at 128 tokens), and every pass of
    batch 1 in the rounds runs 20% slow: the rounds alone choose 2 rows; timed beside 2 rows,
    batch 1 is back to its speed and the cap goes back to one row."""
    model = FakeModel(lambda rows: 0.016 * rows * (1.0 if rows == 1 else 0.95))
    predict = model.predict
    rounds_end = 4 + 3 * 4  # first passes, then three rounds over 1, 2, 4, 8

    def spelled(windows: Sequence[Window]) -> None:
        before = model.now
        predict(windows)
        if len(windows) == 1 and len(model.calls) <= rounds_end:
            model.now += 0.2 * (model.now - before)

    result = calibrate(spelled, WINDOW, max_rows=8, min_gain=0.1, repeats=3, timer=model.timer)
    assert model.calls[rounds_end : rounds_end + 4] == [1, 2, 1, 2]  # 2 rows looked 26% better
    assert result.seconds_by_rows[1] == pytest.approx(0.016)
    assert result.max_batch_rows == 1
    assert model.calls.count(4) == 4 and model.calls.count(8) == 4  # no other size re-timed


def test_a_cap_that_pays_beside_batch_1_is_kept() -> None:
    model = FakeModel(lambda rows: 0.010 + 0.008 * rows)  # 2 rows +38%, 4 +24% over 2, 8 +13% over 4
    result = calibrate(model.predict, WINDOW, max_rows=8, min_gain=0.15, timer=model.timer)
    assert result.max_batch_rows == 4
    assert model.calls[4 + 3 * 4 :] == [1, 4] * 6  # confirmed once, with the default repeats


def test_calibration_keeps_one_row_when_cost_is_linear() -> None:
    model = FakeModel(lambda rows: 0.016 * rows)
    result = calibrate(model.predict, WINDOW, max_rows=8, min_gain=0.1, timer=model.timer)
    assert result.max_batch_rows == 1
    assert len(model.calls) == 4 + 3 * 4  # nothing to confirm


def test_calibration_stretched_window_has_the_asked_length() -> None:
    row = WINDOW.stretched(40)
    assert len(row) == 40 and row.input_ids[16] == 0 and row.input_ids[39] == 7
    assert not row.token_type_ids.any()
