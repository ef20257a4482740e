"""service.batching.policy: plain values in, decisions out."""

from __future__ import annotations

from service.batching.policy import Decision, Priority, QueuedWindow, decide, fill_batch
from tests.conftest import batch_limits

GUARD, OBS = Priority.GUARDRAIL, Priority.OBSERVABILITY


def entry(
    key: int, tokens: int = 10, priority: Priority = OBS, deadline: float = 100.0, arrived: float = 0.0
) -> QueuedWindow:
    return QueuedWindow(key, tokens, priority, deadline, arrived, request=key)  # a request of its own


def test_policy_drops_expired_before_choosing() -> None:
    queue = [entry(1, deadline=5.0), entry(2, deadline=50.0)]
    decision = decide(10.0, queue, batch_limits(max_wait_s=0), model_was_idle=False)
    assert decision == Decision(run=(2,), expired=(1,))


def test_policy_anchor_is_most_urgent_and_budget_bounds_padded_tokens() -> None:
    limits = batch_limits(max_batch_tokens=300, max_batch_rows=8, max_wait_s=0)
    queue = [entry(1, 100, GUARD), entry(2, 100), entry(3, 100), entry(4, 100)]
    assert decide(0.0, queue, limits, model_was_idle=False).run == (1, 2, 3)


def test_policy_fills_guardrail_first_then_closest_lengths() -> None:
    limits = batch_limits(max_batch_tokens=10_000, max_batch_rows=3, max_wait_s=0)
    queue = [entry(1, 50, GUARD), entry(2, 400, GUARD), entry(3, 50), entry(4, 52)]
    # both guardrail entries go before any observability one, whatever their length
    assert fill_batch(queue, limits) == [queue[0], queue[1], queue[2]]
    limits = batch_limits(max_batch_tokens=10_000, max_batch_rows=2, max_wait_s=0)
    obs = [entry(1, 100), entry(2, 500), entry(3, 104), entry(4, 98)]
    assert [e.key for e in fill_batch(obs, limits)] == [1, 4]  # 98 is closer to 100 than 104


def test_policy_skips_rows_that_break_the_budget_but_keeps_filling() -> None:
    limits = batch_limits(max_batch_tokens=400, max_batch_rows=8, max_wait_s=0)
    queue = [entry(1, 100), entry(2, 300), entry(3, 90), entry(4, 95)]
    assert [e.key for e in fill_batch(queue, limits)] == [1, 4, 3]  # 3 x 100 <= 400; 300 would not fit


def test_policy_holds_an_underfull_first_batch_only_when_idle() -> None:
    limits = batch_limits(max_batch_tokens=1000, max_batch_rows=4, max_wait_s=0.002)
    queue = [entry(1, arrived=10.0)]
    assert decide(10.001, queue, limits, model_was_idle=True) == Decision(wake_at=10.002)
    assert decide(10.001, queue, limits, model_was_idle=False).run == (1,)
    assert decide(10.002, queue, limits, model_was_idle=True).run == (1,)
    full = [entry(k, 10, arrived=10.0) for k in range(4)]
    assert decide(10.0, full, limits, model_was_idle=True).run == (0, 1, 2, 3)


def test_policy_empty_queue_sleeps_without_timer() -> None:
    assert decide(0.0, [], batch_limits(), model_was_idle=True) == Decision()


def test_policy_drops_entries_that_cannot_finish_in_time() -> None:
    # 100 tokens at 1 ms a token need 100 ms: with 50 ms left, running it would only be late
    queue = [entry(1, 100, deadline=10.05), entry(2, 10, deadline=10.05)]
    decision = decide(10.0, queue, batch_limits(max_wait_s=0), model_was_idle=False, cost_per_token_s=0.001)
    assert decision == Decision(run=(2,), expired=(1,))


def test_policy_caps_observability_batches_while_guardrail_is_active() -> None:
    limits = batch_limits(
        max_batch_tokens=4096, max_batch_rows=32, max_wait_s=0, guardrail_active_batch_tokens=256
    )
    queue = [entry(k, 100) for k in range(10)]
    assert len(decide(0.0, queue, limits, model_was_idle=False).run) == 10
    assert decide(0.0, queue, limits, model_was_idle=False, guardrail_active=True).run == (0, 1)
    # a guardrail-led batch takes other guardrail rows freely, observability ones only up to the cap
    led_by_guardrail = [entry(90, 100, GUARD), entry(91, 100, GUARD), entry(92, 100, GUARD), *queue]
    assert decide(0.0, led_by_guardrail, limits, model_was_idle=False, guardrail_active=True).run == (
        90,
        91,
        92,
    )
    small_guard = [entry(90, 50, GUARD), *queue]
    assert decide(0.0, small_guard, limits, model_was_idle=False, guardrail_active=True).run == (90, 0)


def test_policy_company_never_makes_a_batch_member_late() -> None:
    # at 1 ms a token: the anchor (50 tokens, due in 80 ms) can take one 20-token row (70 ms),
    # not a second (90 ms); a roomy entry still joins when the batch stays within every deadline
    limits = batch_limits(max_batch_tokens=10_000, max_batch_rows=8, max_wait_s=0)
    queue = [entry(1, 50, deadline=10.08), entry(2, 20, deadline=11.0), entry(3, 20, deadline=11.0)]
    decision = decide(10.0, queue, limits, model_was_idle=False, cost_per_token_s=0.001)
    assert decision == Decision(run=(1, 2))
    # nor may a row join that would itself finish late in the batch
    queue = [entry(1, 50, deadline=11.0), entry(2, 20, deadline=10.065)]
    assert decide(10.0, queue, limits, model_was_idle=False, cost_per_token_s=0.001).run == (1,)
