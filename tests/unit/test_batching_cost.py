"""service.batching.cost: a high percentile of recent batches, not a lagging mean."""

from __future__ import annotations

import pytest

from service.batching.cost import CostEstimate, percentile


def test_percentile_interpolates_like_numpy() -> None:
    np = pytest.importorskip("numpy")
    values = [0.5, 1.0, 2.0, 8.0, 3.0]
    for q in (0.0, 0.5, 0.9, 1.0):
        assert percentile(sorted(values), q) == pytest.approx(float(np.quantile(values, q)))


def test_spread_batches_are_estimated_from_their_slow_end() -> None:
    cost = CostEstimate(1e-4, window=10, percentile=0.9)
    for seconds in [0.010] * 8 + [0.020, 0.030]:  # 100 tokens a batch: 0.1 ms a token, two slow ones
        cost.learn(seconds, 100)
    mean = sum([0.010] * 8 + [0.020, 0.030]) / 10 / 100
    assert cost.per_token_s == pytest.approx(0.000210)  # between the two slow batches
    assert cost.per_token_s > mean * 1.5  # a mean would admit work that misses its deadline


def test_a_machine_that_slows_down_is_followed_within_the_window() -> None:
    cost = CostEstimate(1e-4, window=8, percentile=0.9)
    for _ in range(100):
        cost.learn(0.010, 100)
    assert cost.per_token_s == pytest.approx(1e-4)
    for _ in range(2):  # a quarter of the window at 2.5x: the estimate already moved
        cost.learn(0.025, 100)
    assert cost.per_token_s > 1.5e-4
    for _ in range(8):
        cost.learn(0.025, 100)
    assert cost.per_token_s == pytest.approx(2.5e-4)


def test_setting_the_cost_starts_over_from_it() -> None:
    cost = CostEstimate(1e-4, window=4, percentile=0.9)
    cost.learn(1.0, 10)
    cost.per_token_s = 0.001
    assert cost.per_token_s == 0.001
    cost.learn(0.0, 10)  # nothing measured: ignored
    assert cost.per_token_s == 0.001
    with pytest.raises(ValueError, match="window"):
        CostEstimate(1e-4, window=0, percentile=0.9)
