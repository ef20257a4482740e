"""service.batching.scheduler with a fake clock and a gated runner: deterministic, no sleeps.

Tests wait on events (the runner's `started`, the scheduler's `settled`), never on a count of
yields.

Each window's ids are all its own key, and the runner answers row [key, length], so every
result can be traced back to the window that produced it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import numpy as np
import pytest

from service.batching.clock import FakeClock
from service.batching.observer import NullObserver
from service.batching.policy import Priority
from service.batching.queue import RequestResult
from service.batching.scheduler import (
    AdmissionError,
    BatchFailedError,
    BatchScheduler,
    DeadlineExceededError,
    RequestTooLargeError,
)
from service.runtime.encoding import Window
from tests.conftest import admission_limits, batch_limits

GUARD, OBS = Priority.GUARDRAIL, Priority.OBSERVABILITY


def window(key: int, tokens: int = 8) -> Window:
    return Window(input_ids=np.full(tokens, key, np.int64), token_type_ids=np.zeros(tokens, np.int64))


class GatedRunner:
    """Records each batch's keys; blocks while the gate is closed; fails on a poisoned key."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()
        self.poison: set[int] = set()

    async def __call__(self, windows: Sequence[Window]) -> np.ndarray:
        keys = [int(w.input_ids[0]) for w in windows]
        self.batches.append(keys)
        self.started.set()
        await self.gate.wait()
        if self.poison & set(keys):
            raise RuntimeError("poisoned batch")
        return np.array([[k, len(w)] for k, w in zip(keys, windows, strict=True)], float)


class RecordingObserver(NullObserver):
    def __init__(self) -> None:
        self.rejections: list[tuple[Priority, str]] = []
        self.drops: list[tuple[Priority, str]] = []
        self.batch_rows: list[int] = []

    def rejected(self, priority: Priority, reason: str) -> None:
        self.rejections.append((priority, reason))

    def dropped(self, priority: Priority, reason: str) -> None:
        self.drops.append((priority, reason))

    def batch_done(self, windows: int, real_tokens: int, padded_tokens: int, seconds: float) -> None:
        self.batch_rows.append(windows)


@pytest.fixture
async def setup() -> AsyncIterator[tuple[BatchScheduler, GatedRunner, FakeClock, RecordingObserver]]:
    clock = FakeClock()
    runner = GatedRunner()
    observer = RecordingObserver()
    scheduler = BatchScheduler(
        runner,
        clock=clock,
        limits=batch_limits(max_batch_tokens=1000, max_batch_rows=8, max_wait_s=0),
        admission=admission_limits(max_queue_requests=10, max_queue_tokens=400, initial_cost_per_token_s=0),
        observer=observer,
    )
    scheduler.start()
    yield scheduler, runner, clock, observer
    await scheduler.stop()


async def hold_first_batch(
    scheduler: BatchScheduler, runner: GatedRunner, key: int = 0
) -> asyncio.Future[RequestResult]:
    runner.gate.clear()
    first = scheduler.submit([window(key)], OBS, deadline=2000.0)
    await runner.started.wait()
    return first


async def test_scheduler_batches_what_queued_while_the_model_was_busy(setup) -> None:  # type: ignore[no-untyped-def]
    scheduler, runner, clock, observer = setup
    first = await hold_first_batch(scheduler, runner)
    later = [scheduler.submit([window(k)], OBS, deadline=2000.0) for k in range(1, 6)]
    clock.advance(0.25)  # batch 1 takes 250 ms of fake time
    runner.gate.set()
    results = await asyncio.gather(first, *later)
    assert runner.batches == [[0], [1, 2, 3, 4, 5]]
    assert [int(r.rows[0, 0]) for r in results] == [0, 1, 2, 3, 4, 5]
    assert observer.batch_rows == [1, 5]
    assert (results[0].queued_s, results[0].inference_s) == (0.0, 0.25)
    assert (results[1].queued_s, results[1].inference_s) == (0.25, 0.0)


async def test_scheduler_serves_guardrail_first_then_earliest_deadline(setup) -> None:  # type: ignore[no-untyped-def]
    scheduler, runner, _, _ = setup
    scheduler.limits = batch_limits(max_batch_tokens=1000, max_batch_rows=2, max_wait_s=0)
    first = await hold_first_batch(scheduler, runner)
    futures = [
        scheduler.submit([window(1)], OBS, deadline=1500.0),
        scheduler.submit([window(2)], OBS, deadline=1100.0),
        scheduler.submit([window(3)], GUARD, deadline=1900.0),
        scheduler.submit([window(4)], GUARD, deadline=1800.0),
    ]
    runner.gate.set()
    await asyncio.gather(first, *futures)
    assert runner.batches == [[0], [4, 3], [2, 1]]


async def test_scheduler_drops_expired_requests_before_inference(setup) -> None:  # type: ignore[no-untyped-def]
    scheduler, runner, clock, observer = setup
    first = await hold_first_batch(scheduler, runner)
    doomed = scheduler.submit([window(1)], GUARD, deadline=clock.now() + 0.05)
    kept = scheduler.submit([window(2)], OBS, deadline=clock.now() + 10)
    clock.advance(0.1)
    runner.gate.set()
    await first
    assert (await kept).rows[0, 0] == 2
    with pytest.raises(DeadlineExceededError):
        await doomed
    assert runner.batches == [[0], [2]]
    assert observer.drops == [(GUARD, "expired")]


async def test_scheduler_skips_requests_whose_client_left(setup) -> None:  # type: ignore[no-untyped-def]
    scheduler, runner, _, observer = setup
    first = await hold_first_batch(scheduler, runner)
    gone = scheduler.submit([window(1)], OBS, deadline=2000.0)
    stays = scheduler.submit([window(2)], OBS, deadline=2000.0)
    gone.cancel()
    runner.gate.set()
    await asyncio.gather(first, stays)
    assert runner.batches == [[0], [2]]
    assert observer.drops == [(OBS, "cancelled")]


async def test_scheduler_failing_batch_fails_only_its_requests(setup) -> None:  # type: ignore[no-untyped-def]
    scheduler, runner, _, _ = setup
    runner.poison = {0}
    first = await hold_first_batch(scheduler, runner)
    after = scheduler.submit([window(1)], OBS, deadline=2000.0)
    runner.gate.set()
    with pytest.raises(BatchFailedError) as failed:
        await first
    assert len(failed.value.error_id) == 12
    assert (await after).rows[0, 0] == 1
    assert scheduler.alive


async def test_scheduler_long_request_windows_fan_back_in_order(setup) -> None:  # type: ignore[no-untyped-def]
    scheduler, runner, _, _ = setup
    scheduler.limits = batch_limits(max_batch_tokens=1000, max_batch_rows=2, max_wait_s=0)
    result = (await scheduler.submit([window(7, 5), window(8, 6), window(9, 7)], OBS, deadline=2000.0)).rows
    assert result[:, 0].tolist() == [7, 8, 9] and result[:, 1].tolist() == [5, 6, 7]
    assert sorted(k for b in runner.batches for k in b) == [7, 8, 9]


async def test_scheduler_admission_bounds_and_shedding(setup) -> None:  # type: ignore[no-untyped-def]
    scheduler, runner, _, observer = setup
    first = await hold_first_batch(scheduler, runner)
    scheduler.submit([window(1, 290)], GUARD, deadline=2000.0)  # 290 of 400 queued tokens
    with pytest.raises(AdmissionError) as shed:
        scheduler.submit([window(2, 20)], OBS, deadline=2000.0)  # observability may fill 300
    assert shed.value.reason == "shed" and shed.value.retry_after_s >= 1
    scheduler.submit([window(3, 100)], GUARD, deadline=2000.0)  # guardrail may fill all 400
    with pytest.raises(AdmissionError) as full:
        scheduler.submit([window(4, 20)], GUARD, deadline=2000.0)
    assert full.value.reason == "queue_full"
    assert observer.rejections == [(OBS, "shed"), (GUARD, "queue_full")]
    runner.gate.set()
    await first


async def test_scheduler_rejects_what_cannot_meet_its_deadline(setup) -> None:  # type: ignore[no-untyped-def]
    scheduler, runner, clock, observer = setup
    scheduler.cost_per_token_s = 0.001  # 1 ms a token, as if learned
    first = await hold_first_batch(scheduler, runner)
    scheduler.submit([window(1, 100)], OBS, deadline=clock.now() + 10)  # 100 ms of work queued
    # a guardrail request jumps the observability queue: 50 tokens = 50 ms fits in 60 ms
    scheduler.submit([window(2, 50)], GUARD, deadline=clock.now() + 0.06)
    with pytest.raises(AdmissionError) as late:  # observability waits behind all 150 tokens
        scheduler.submit([window(3, 50)], OBS, deadline=clock.now() + 0.12)
    assert late.value.reason == "deadline" and "estimated completion" in str(late.value)
    assert observer.rejections == [(OBS, "deadline")]
    runner.gate.set()
    await first


async def test_scheduler_drain_finishes_accepted_and_refuses_new(setup) -> None:  # type: ignore[no-untyped-def]
    scheduler, runner, _, _ = setup
    first = await hold_first_batch(scheduler, runner)
    queued = scheduler.submit([window(1)], OBS, deadline=2000.0)
    draining = asyncio.ensure_future(scheduler.drain())  # refuses new requests from the call on
    with pytest.raises(AdmissionError) as refused:
        scheduler.submit([window(2)], GUARD, deadline=2000.0)
    assert refused.value.reason == "draining"
    runner.gate.set()
    await draining
    assert (await first).rows[0, 0] == 0 and (await queued).rows[0, 0] == 1
    assert not scheduler.alive


async def test_scheduler_holds_underfull_batch_for_max_wait_when_idle() -> None:
    clock = FakeClock()
    runner = GatedRunner()
    scheduler = BatchScheduler(
        runner, clock=clock, limits=batch_limits(max_wait_s=0.002), admission=admission_limits()
    )
    scheduler.start()
    a = scheduler.submit([window(1)], OBS, deadline=2000.0)
    await scheduler.settled()
    b = scheduler.submit([window(2)], OBS, deadline=2000.0)
    await scheduler.settled()
    assert runner.batches == []  # held: under-full, model idle, max wait not reached
    clock.advance(0.002)
    await asyncio.gather(a, b)
    assert runner.batches == [[1, 2]]
    await scheduler.stop()


async def test_scheduler_small_batches_while_guardrail_traffic_flows(setup) -> None:  # type: ignore[no-untyped-def]
    scheduler, runner, _, _ = setup
    scheduler.limits = batch_limits(
        max_batch_tokens=1000, max_batch_rows=8, max_wait_s=0, guardrail_active_batch_tokens=16
    )
    first = await hold_first_batch(scheduler, runner)  # observability, 8 tokens
    later = [scheduler.submit([window(k)], OBS, deadline=2000.0) for k in range(1, 5)]
    guard = scheduler.submit([window(9)], GUARD, deadline=2000.0)
    runner.gate.set()
    await asyncio.gather(first, guard, *later)
    # the guardrail request leads the next batch; observability rows join it, and form the
    # batches after it, only up to 16 padded tokens (2 rows of 8) while guardrail traffic flows
    assert runner.batches == [[0], [9, 1], [2, 3], [4]]


async def test_scheduler_expires_a_request_whole_and_survives(setup) -> None:  # type: ignore[no-untyped-def]
    scheduler, runner, clock, _ = setup
    scheduler.cost_per_token_s = 0.001
    first = await hold_first_batch(scheduler, runner)
    # one request, a long and a short window: at 170 ms only the short one could still finish
    mixed = scheduler.submit([window(1, 150), window(2, 20)], GUARD, deadline=clock.now() + 0.2)
    other = scheduler.submit([window(3, 10)], OBS, deadline=clock.now() + 10)
    clock.advance(0.17)
    runner.gate.set()
    await first
    with pytest.raises(DeadlineExceededError):
        await mixed
    assert (await other).rows[0, 0] == 3
    assert scheduler.alive and runner.batches == [[0], [3]]


async def test_scheduler_observability_cannot_fill_the_request_limit(setup) -> None:  # type: ignore[no-untyped-def]
    scheduler, runner, _, _ = setup
    first = await hold_first_batch(scheduler, runner)  # one observability request queued... in flight
    for k in range(1, 7):  # 0.75 x 10 requests: observability may hold 7 (the first is done queuing)
        scheduler.submit([window(k, 1)], OBS, deadline=2000.0)
    with pytest.raises(AdmissionError) as shed:
        scheduler.submit([window(8, 1)], OBS, deadline=2000.0)
    assert shed.value.reason == "shed"
    scheduler.submit([window(9, 1)], GUARD, deadline=2000.0)  # guardrail still gets in
    runner.gate.set()
    await first


async def test_scheduler_refuses_what_no_queue_could_serve(setup) -> None:  # type: ignore[no-untyped-def]
    scheduler, _, clock, _ = setup
    with pytest.raises(RequestTooLargeError, match="split it"):
        scheduler.submit([window(1, 350)], OBS, deadline=2000.0)  # observability may queue 300
    scheduler.cost_per_token_s = 0.01
    with pytest.raises(RequestTooLargeError, match="raise timeout_ms"):
        scheduler.submit([window(2, 50)], GUARD, deadline=clock.now() + 0.1)  # needs 500 ms alone


async def test_scheduler_wrong_row_count_fails_only_that_batch() -> None:
    async def wrong_rows(windows: Sequence[Window]) -> np.ndarray:
        return np.zeros((len(windows) + 1, 2))

    scheduler = BatchScheduler(
        wrong_rows, clock=FakeClock(), limits=batch_limits(max_wait_s=0), admission=admission_limits()
    )
    scheduler.start()
    with pytest.raises(BatchFailedError):
        await scheduler.submit([window(1)], OBS, deadline=2000.0)
    assert scheduler.alive
    await scheduler.stop()


async def test_scheduler_drain_returns_when_the_loop_dies(setup) -> None:  # type: ignore[no-untyped-def]
    scheduler, runner, _, observer = setup

    def broken(*_: object) -> None:
        raise RuntimeError("a bug in the loop's own bookkeeping")

    first = await hold_first_batch(scheduler, runner)
    queued = scheduler.submit([window(1)], OBS, deadline=2000.0)
    observer.batch_done = broken  # the loop itself dies after batch 1
    draining = asyncio.ensure_future(scheduler.drain(timeout_s=30))
    runner.gate.set()
    await draining  # returns instead of hanging on a dead loop
    assert not scheduler.alive
    for doomed in (first, queued):
        with pytest.raises(BatchFailedError):
            await doomed


async def test_scheduler_refuses_early_what_submit_would_refuse_and_queues_nothing(setup) -> None:  # type: ignore[no-untyped-def]
    """Before tokenising (loaded_metric): a lower bound of the tokens is enough to refuse."""
    scheduler, runner, _, observer = setup
    first = await hold_first_batch(scheduler, runner)
    queued = [scheduler.submit([window(k, tokens=100)], OBS, deadline=2000.0) for k in range(1, 4)]
    scheduler.refuse_early(OBS, 2000.0, tokens=0)  # room for a request of no tokens: no refusal
    with pytest.raises(AdmissionError) as early:
        scheduler.refuse_early(OBS, 2000.0, tokens=100)  # 300 queued + 100 > 300 observability may fill
    with pytest.raises(AdmissionError) as late:
        scheduler.submit([window(9, tokens=100)], OBS, deadline=2000.0)
    assert early.value.reason == late.value.reason == "shed"
    assert scheduler.queued_requests == 4 and scheduler.queued_tokens == 300
    assert observer.rejections == [(OBS, "shed"), (OBS, "shed")]
    runner.gate.set()
    await asyncio.gather(first, *queued)


async def test_worker_learns_the_models_own_time_when_the_runner_knows_it(setup) -> None:  # type: ignore[no-untyped-def]
    """Timed on the event loop a batch also counts the loop's backlog (runner.py)."""
    scheduler, runner, clock, _ = setup
    first = await hold_first_batch(scheduler, runner)
    runner.last_run_s = 0.004  # type: ignore[attr-defined]  # the model took 4 ms of its 8 tokens
    clock.advance(0.5)  # the loop noticed only 500 ms later
    runner.gate.set()
    await first
    assert scheduler.cost_per_token_s == pytest.approx(0.0005)
    assert scheduler.idle_cost_per_token_s == pytest.approx(0.0005)


async def test_a_runner_that_refuses_a_batch_outright_fails_only_that_batch() -> None:
    calls: list[int] = []

    def refuses_once(windows: Sequence[Window]) -> asyncio.Future[np.ndarray]:
        calls.append(len(windows))
        if len(calls) == 1:
            raise RuntimeError("no thread to run it on")
        answered: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        answered.set_result(np.zeros((len(windows), 2)))
        return answered

    scheduler = BatchScheduler(
        refuses_once, clock=FakeClock(), limits=batch_limits(max_wait_s=0), admission=admission_limits()
    )
    scheduler.start()
    with pytest.raises(BatchFailedError):
        await scheduler.submit([window(1)], OBS, deadline=2000.0)
    assert (await scheduler.submit([window(2)], OBS, deadline=2000.0)).rows.shape == (1, 2)
    assert scheduler.alive
    await scheduler.stop()
