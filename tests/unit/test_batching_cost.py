"""service.batching.cost: a safe reading for waits, the lowest for "even on an idle model", both aging."""

from __future__ import annotations

import pytest

from service.batching.admission import QueueLoad, admit
from service.batching.cost import CostEstimate
from service.batching.policy import Priority
from tests.conftest import admission_limits


class Now:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def estimate(now: Now, **options: float) -> CostEstimate:
    return CostEstimate(1e-4, clock=now, **options)  # type: ignore[arg-type]


def load_of(cost: CostEstimate) -> QueueLoad:
    """An empty queue read with `cost`'s two readings, as the scheduler reads it."""
    wait, idle = cost.per_token_s, cost.idle_per_token_s
    return QueueLoad(0, 0, 0, 0, cost_per_token_s=wait, idle_cost_per_token_s=idle)


def test_the_configured_guess_holds_until_a_batch_is_measured() -> None:
    cost = estimate(Now())
    assert cost.per_token_s == cost.idle_per_token_s == 1e-4
    cost.learn(0.0, 100)  # nothing measured: ignored
    cost.learn(0.1, 0)
    assert cost.per_token_s == cost.idle_per_token_s == 1e-4


def test_waits_read_a_high_quantile_weighted_by_tokens() -> None:
    cost = estimate(Now(), quantile=0.9)
    for _ in range(8):
        cost.learn(0.050, 1000)  # 50 us a token, 8,000 tokens
    cost.learn(0.002, 10)  # a small batch's overhead: 200 us a token, 10 tokens
    assert cost.per_token_s == pytest.approx(50e-6)  # the overhead of 10 tokens does not set the waits
    cost.learn(0.100, 1000)  # one slow batch of 1,000 tokens: 11% of the tokens
    assert cost.per_token_s == pytest.approx(100e-6)  # the reading is safe for the slow share
    assert cost.idle_per_token_s == pytest.approx(50e-6)


def test_the_idle_reading_is_the_lowest_ever_measured() -> None:
    now = Now()
    cost = estimate(now, horizon_s=10)
    cost.learn(0.030, 1000)
    now.t += 60
    cost.learn(0.500, 1000)  # a burst: 500 us a token
    assert cost.idle_per_token_s == pytest.approx(30e-6)
    assert cost.per_token_s == pytest.approx(500e-6)


def test_an_inflated_estimate_ages_out_when_nothing_refreshes_it() -> None:
    """The percentile tried first (docs/benchmarks.md) was set by a burst's slow batches; since
    only admitted work refreshed it, every later request was refused and nothing ran again."""
    now = Now()
    cost = estimate(now, horizon_s=10)
    cost.learn(0.030, 1000)
    for _ in range(5):
        cost.learn(0.500, 1000)
    load = load_of(cost)
    limits = admission_limits()
    deadline = now.t + 0.2  # 490 tokens: 245 ms at the burst's cost, 15 ms at the idle one
    refusal = admit(Priority.OBSERVABILITY, 490, deadline, now=now.t, load=load, limits=limits)
    assert refusal is not None and refusal.reason == "deadline" and not refusal.final  # 503, not 422
    now.t += 10.5  # no batch ran since: the model has been idle
    assert cost.per_token_s == pytest.approx(30e-6)
    load = load_of(cost)
    assert admit(Priority.OBSERVABILITY, 490, now.t + 0.2, now=now.t, load=load, limits=limits) is None


def test_only_the_idle_reading_can_refuse_for_good() -> None:
    limits = admission_limits()
    load = QueueLoad(0, 0, 0, 0, cost_per_token_s=400e-6, idle_cost_per_token_s=50e-6)
    # 500 tokens: 200 ms at the wait reading, 25 ms idle; 100 ms allowed -> load, 503
    busy = admit(Priority.GUARDRAIL, 500, 100.1, now=100.0, load=load, limits=limits)
    assert busy is not None and not busy.final
    # 20 ms allowed: not even an idle model serves it -> 422
    never = admit(Priority.GUARDRAIL, 500, 100.02, now=100.0, load=load, limits=limits)
    assert never is not None and never.final and "25 ms" in never.message


def test_pin_reads_one_value_both_ways_until_the_next_batch() -> None:
    cost = estimate(Now())
    cost.learn(0.5, 1000)
    cost.pin(2e-5)
    assert cost.per_token_s == cost.idle_per_token_s == 2e-5
    cost.learn(0.04, 1000)
    assert cost.per_token_s == pytest.approx(4e-5) and cost.idle_per_token_s == 2e-5


def test_a_reading_follows_every_change_of_the_samples() -> None:
    """The quantile is kept between reads: each way the samples change must show in the next read."""
    now = Now()
    cost = estimate(now, quantile=0.5, horizon_s=10, max_samples=2)
    cost.learn(0.010, 1000)  # 10 us a token
    assert cost.per_token_s == pytest.approx(10e-6)
    assert cost.per_token_s == pytest.approx(10e-6)  # read twice: the same
    cost.learn(0.040, 3000)  # a new batch after a read: 3/4 of the tokens at 13.3 us
    assert cost.per_token_s == pytest.approx(40e-3 / 3000)
    now.t += 5
    cost.learn(0.090, 3000)  # the third batch pushes the first out (max_samples 2): 30 us
    assert cost.per_token_s == pytest.approx(40e-3 / 3000)  # half the tokens at 13.3 us
    now.t += 6  # the 13.3 us batch ages out; the 30 us one stays
    assert cost.per_token_s == pytest.approx(30e-6)
    now.t += 10  # everything ages out: the idle reading again
    assert cost.per_token_s == cost.idle_per_token_s == pytest.approx(10e-6)
    cost.learn(0.020, 1000)
    assert cost.per_token_s == pytest.approx(20e-6)
    cost.pin(7e-6)
    assert cost.per_token_s == cost.idle_per_token_s == 7e-6


def test_the_quantile_kept_in_order_matches_one_sorted_afresh() -> None:
    """Samples enter, age out and are pushed out by newer ones: the reading is always the
    token-weighted quantile of exactly the samples of the horizon (the last 8 at most)."""
    now = Now()
    cost = estimate(now, quantile=0.75, horizon_s=1.0, max_samples=8)  # type: ignore[arg-type]
    seen: list[tuple[float, float, int]] = []  # (when, cost, tokens)
    for step in range(200):
        now.t += (0.05, 0.3, 1.5)[step % 7 % 3]  # some samples age out, some are pushed out
        seconds, tokens = (step * 37 % 11 + 1) / 1000, step * 13 % 40 + 1
        cost.learn(seconds, tokens)
        seen = [s for s in [*seen, (now.t, seconds / tokens, tokens)] if s[0] >= now.t - 1.0][-8:]
        ranked = sorted((c, t) for _, c, t in seen)
        total, reached = sum(t for _, t in ranked), 0
        expected = next(c for c, t in ranked if (reached := reached + t) >= 0.75 * total)
        assert cost.per_token_s == expected, step
