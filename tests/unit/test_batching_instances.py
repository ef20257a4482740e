"""Several model instances on one queue (service.batching.scheduler): deterministic, no sleeps.

Each instance is a gated runner of its own, so a test holds one instance busy and watches where
the next batch goes.
"""

from __future__ import annotations

import asyncio
from asyncio import Future
from collections.abc import AsyncIterator

import pytest

from service.batching.admission import QueueLoad, estimated_wait_s
from service.batching.clock import FakeClock
from service.batching.policy import Priority
from service.batching.scheduler import BatchScheduler
from tests.conftest import admission_limits, batch_limits
from tests.unit.test_batching_scheduler import GUARD, OBS, GatedRunner, window


@pytest.fixture
async def pair() -> AsyncIterator[tuple[BatchScheduler, list[GatedRunner], FakeClock]]:
    clock = FakeClock()
    runners = [GatedRunner(), GatedRunner()]
    scheduler = BatchScheduler(
        runners,
        clock=clock,
        limits=batch_limits(max_batch_tokens=1000, max_batch_rows=1, max_wait_s=0),
        admission=admission_limits(max_queue_requests=20, max_queue_tokens=400, initial_cost_per_token_s=0),
    )
    scheduler.start()
    yield scheduler, runners, clock
    await scheduler.stop()


async def both_busy(scheduler: BatchScheduler, runners: list[GatedRunner], keys: range) -> list[Future]:
    """Close both instances' gates, submit one-window requests `keys`, and return once each
    instance holds a batch (the first two keys); the rest wait in the queue."""
    for runner in runners:
        runner.gate.clear()
        runner.started.clear()
    futures = [scheduler.submit([window(k)], OBS, deadline=2000.0) for k in keys]
    for runner in runners:
        await runner.started.wait()
    return futures


async def test_a_second_batch_runs_on_the_free_instance_while_the_first_is_busy(pair) -> None:  # type: ignore[no-untyped-def]
    scheduler, (one, two), _ = pair
    first, second = await both_busy(scheduler, [one, two], range(1, 3))  # both batches in flight at once
    assert one.batches == [[1]] and two.batches == [[2]]
    one.gate.set()
    two.gate.set()
    results = await asyncio.gather(first, second)
    assert [int(r.rows[0, 0]) for r in results] == [1, 2]
    assert scheduler.instances == 2


async def test_queued_work_goes_to_whichever_instance_frees_first(pair) -> None:  # type: ignore[no-untyped-def]
    scheduler, (one, two), _ = pair
    held = await both_busy(scheduler, [one, two], range(1, 3))
    third = scheduler.submit([window(3)], OBS, deadline=2000.0)
    assert scheduler.queued_tokens == 8  # both busy: the third waits
    two.started.clear()
    two.gate.set()  # instance two frees first; instance one stays busy
    assert int((await third).rows[0, 0]) == 3
    assert two.batches == [[2], [3]] and one.batches == [[1]]
    one.gate.set()
    await asyncio.gather(*held)


async def test_priorities_hold_across_instances(pair) -> None:  # type: ignore[no-untyped-def]
    scheduler, (one, two), _ = pair
    held = await both_busy(scheduler, [one, two], range(1, 3))
    late_obs = scheduler.submit([window(3)], OBS, deadline=1500.0)
    guard = scheduler.submit([window(4)], GUARD, deadline=1900.0)
    one.gate.set()  # one instance frees: the guardrail request goes first, then the other
    await asyncio.gather(guard, late_obs, held[0])
    assert one.batches == [[1], [4], [3]]
    two.gate.set()
    await held[1]


async def test_drain_finishes_what_every_instance_holds(pair) -> None:  # type: ignore[no-untyped-def]
    scheduler, (one, two), _ = pair
    futures = await both_busy(scheduler, [one, two], range(1, 6))
    drained = asyncio.ensure_future(scheduler.drain(timeout_s=None))
    one.gate.set()
    two.gate.set()
    await drained
    assert sorted(int(f.result().rows[0, 0]) for f in futures) == [1, 2, 3, 4, 5]
    assert sorted(k for b in one.batches + two.batches for k in b) == [1, 2, 3, 4, 5]


def test_waits_share_the_work_ahead_among_instances_but_not_a_request_s_own() -> None:
    load = QueueLoad(
        requests=4, observability_requests=4, tokens=400, guardrail_tokens=0, busy_for_s=0.0,
        cost_per_token_s=0.001, instances=1,
    )  # fmt: skip
    two = QueueLoad(**{**load.__dict__, "instances": 2})
    assert estimated_wait_s(load, Priority.OBSERVABILITY, 100) == pytest.approx(0.5)
    assert estimated_wait_s(two, Priority.OBSERVABILITY, 100) == pytest.approx(0.3)  # 200 ahead + its 100


def test_a_scheduler_needs_a_runner() -> None:
    with pytest.raises(ValueError, match="at least one runner"):
        BatchScheduler([], clock=FakeClock(), limits=batch_limits(), admission=admission_limits())


@pytest.fixture
async def reserved() -> AsyncIterator[tuple[BatchScheduler, list[GatedRunner]]]:
    """Two instances, the second kept for guardrail traffic."""
    runners = [GatedRunner(), GatedRunner()]
    scheduler = BatchScheduler(
        runners,
        clock=FakeClock(),
        limits=batch_limits(max_batch_tokens=1000, max_batch_rows=1, max_wait_s=0),
        admission=admission_limits(
            max_queue_requests=20, max_queue_tokens=400, initial_cost_per_token_s=0.001
        ),
        guardrail_instances=1,
    )
    scheduler.start()
    yield scheduler, runners
    await scheduler.stop()


async def test_a_guardrail_request_starts_on_its_instance_while_observability_holds_the_other(
    reserved,  # type: ignore[no-untyped-def]
) -> None:
    scheduler, (general, kept) = reserved
    general.gate.clear()
    held = scheduler.submit([window(1)], OBS, deadline=2000.0)
    await general.started.wait()
    waiting = scheduler.submit([window(2)], OBS, deadline=2000.0)
    guard = scheduler.submit([window(3)], GUARD, deadline=2000.0)
    assert int((await guard).rows[0, 0]) == 3  # answered while the observability batch is in flight
    # the kept instance was free all along and took the guardrail request alone: the second
    # observability request still waits for the general one
    assert kept.batches == [[3]] and not held.done() and scheduler.queued_tokens == 8
    general.gate.set()
    assert [int(r.rows[0, 0]) for r in await asyncio.gather(held, waiting)] == [1, 2]
    assert general.batches == [[1], [2]]
    assert (scheduler.instances, scheduler.guardrail_instances) == (2, 1)


async def test_a_guardrail_wait_is_estimated_on_its_free_instance(reserved) -> None:  # type: ignore[no-untyped-def]
    scheduler, (general, _) = reserved
    general.gate.clear()
    held = scheduler.submit([window(1)], OBS, deadline=2000.0)  # 4 tokens in flight on the general one
    await general.started.wait()
    assert scheduler.estimated_wait_s(GUARD, 10) == pytest.approx(0.010)  # its own tokens only
    assert scheduler.estimated_wait_s(OBS, 10) > 0.010  # behind the batch in flight
    general.gate.set()
    await held


def test_every_class_keeps_an_instance() -> None:
    with pytest.raises(ValueError, match="at least one runner for every class"):
        BatchScheduler(
            [GatedRunner()], clock=FakeClock(), limits=batch_limits(), admission=admission_limits(),
            guardrail_instances=1,
        )  # fmt: skip


async def test_guardrail_work_goes_to_the_kept_instance_while_it_is_free(reserved) -> None:  # type: ignore[no-untyped-def]
    scheduler, (general, kept) = reserved
    for key in (1, 2):  # one after the other: the kept instance is free for each
        assert int((await scheduler.submit([window(key)], GUARD, deadline=2000.0)).rows[0, 0]) == key
    assert kept.batches == [[1], [2]] and general.batches == []


async def test_guardrail_work_spills_to_the_others_while_every_kept_instance_is_busy(reserved) -> None:  # type: ignore[no-untyped-def]
    scheduler, (general, kept) = reserved
    kept.gate.clear()
    first = scheduler.submit([window(1)], GUARD, deadline=2000.0)
    second = scheduler.submit([window(2)], GUARD, deadline=2000.0)  # in the same turn of the loop
    assert int((await second).rows[0, 0]) == 2  # on the other instance, while the kept one holds the first
    assert general.batches == [[2]] and kept.batches == [[1]] and not first.done()
    kept.gate.set()
    await first


async def test_without_spilling_guardrail_work_waits_for_the_kept_instance() -> None:
    """On a core the instances share, a second guardrail pass beside the first would slow both:
    with `guardrail_spills` off the others never take guardrail work, and still serve observability."""
    general, kept = GatedRunner(), GatedRunner()
    scheduler = BatchScheduler(
        [general, kept], clock=FakeClock(),
        limits=batch_limits(max_batch_tokens=1000, max_batch_rows=1, max_wait_s=0),
        admission=admission_limits(max_queue_requests=20, max_queue_tokens=400, initial_cost_per_token_s=0),
        guardrail_instances=1, guardrail_spills=False,
    )  # fmt: skip
    scheduler.start()
    try:
        kept.gate.clear()
        first = scheduler.submit([window(1)], GUARD, deadline=2000.0)
        await kept.started.wait()
        second = scheduler.submit([window(2)], GUARD, deadline=2000.0)
        observability = scheduler.submit([window(3)], OBS, deadline=2000.0)
        assert int((await observability).rows[0, 0]) == 3  # the other instance works, on observability
        assert general.batches == [[3]] and not second.done()
        kept.gate.set()
        assert [int(r.rows[0, 0]) for r in await asyncio.gather(first, second)] == [1, 2]
        assert kept.batches == [[1], [2]] and not scheduler.guardrail_spills
    finally:
        await scheduler.stop()
