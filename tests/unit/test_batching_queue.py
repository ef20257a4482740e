"""service.batching.queue: the queue state, one change at a time, read as a decision reads it.

Windows' ids are all their request's tag, so every window can be traced to its request.
"""

from __future__ import annotations

import asyncio
import random

import numpy as np

from service.batching.policy import Priority, QueuedWindow, choose_batch, decide
from service.batching.queue import QueuedRequest, RequestQueue, RequestResult
from service.runtime.encoding import Window
from tests.conftest import batch_limits

GUARD, OBS = Priority.GUARDRAIL, Priority.OBSERVABILITY


def window(tokens: int = 8, tag: int = 0) -> Window:
    return Window(input_ids=np.full(tokens, tag, np.int64), token_type_ids=np.zeros(tokens, np.int64))


def add(
    queue: RequestQueue, tokens: list[int], priority: Priority, deadline: float, now: float = 0.0
) -> QueuedRequest:
    future: asyncio.Future[RequestResult] = asyncio.get_running_loop().create_future()
    return queue.add([window(t) for t in tokens], priority, deadline, now, future)


def keys(windows: list[QueuedWindow]) -> list[int]:
    return [w.key for w in windows]


async def test_queue_head_is_guardrail_first_then_deadline_then_arrival() -> None:
    queue = RequestQueue()
    obs_late = add(queue, [8], OBS, deadline=50.0)
    obs_soon = add(queue, [8, 8], OBS, deadline=20.0)
    guard_late = add(queue, [8], GUARD, deadline=90.0)
    obs_soon_too = add(queue, [8], OBS, deadline=20.0)
    guard_soon = add(queue, [8], GUARD, deadline=80.0)
    head, head_is_all = queue.head(10)
    assert keys(head) == [
        guard_soon.key, guard_late.key, obs_soon.key, obs_soon.key + 1, obs_soon_too.key, obs_late.key
    ]  # fmt: skip
    assert head_is_all
    assert [w.request for w in head] == [guard_soon.key, guard_late.key, obs_soon.key, obs_soon.key,
                                         obs_soon_too.key, obs_late.key]  # fmt: skip
    first_three, head_is_all = queue.head(3)
    assert keys(first_three) == keys(head[:3]) and not head_is_all
    assert keys(queue.head(6)[0]) == keys(head) and queue.head(6)[1]  # reading changes nothing


async def test_queue_take_moves_windows_into_a_batch_and_keeps_the_request() -> None:
    queue = RequestQueue()
    long = add(queue, [100, 20, 30], OBS, deadline=50.0)
    guard = add(queue, [10], GUARD, deadline=50.0)
    assert (queue.requests, queue.windows, queue.tokens) == (2, 4, 160)
    assert (queue.tokens_of(GUARD), queue.tokens_of(OBS)) == (10, 150)
    batch = queue.take([guard.key, long.key + 1])
    assert batch == [(guard, 0), (long, 1)]
    assert (queue.requests, queue.windows, queue.tokens) == (2, 2, 130)  # in flight still counts as a request
    assert (queue.requests_of(GUARD), queue.requests_of(OBS)) == (1, 1)
    assert keys(queue.head(10)[0]) == [long.key, long.key + 2]
    queue.remove(guard)
    assert (queue.requests, queue.requests_of(GUARD)) == (1, 0)


async def test_queue_answers_a_request_when_its_last_row_is_back() -> None:
    queue = RequestQueue()
    request = add(queue, [5, 6], OBS, deadline=50.0)
    queue.take([request.key + 1, request.key])
    assert not request.answer(1, np.array([1.0, 6.0]))
    assert request.answer(0, np.array([0.0, 5.0]))
    assert request.result().rows.tolist() == [[0.0, 5.0], [1.0, 6.0]]


async def test_queue_remove_takes_every_waiting_window_of_the_request() -> None:
    queue = RequestQueue()
    doomed = add(queue, [10, 20, 30], GUARD, deadline=10.0)
    kept = add(queue, [40], OBS, deadline=99.0)
    queue.take([doomed.key])
    queue.remove(doomed)
    queue.remove(doomed)  # a second removal changes nothing
    assert keys(queue.head(10)[0]) == [kept.key]
    assert (queue.requests, queue.windows, queue.tokens, queue.tokens_of(GUARD)) == (1, 1, 40, 0)


async def test_queue_cancelled_request_is_not_live_and_is_removed_once_seen() -> None:
    told = asyncio.Event()
    queue = RequestQueue(on_abandoned=told.set)
    gone = add(queue, [8], OBS, deadline=10.0)
    stays = add(queue, [8], OBS, deadline=20.0)
    gone.future.cancel()
    assert keys(queue.head(10)[0]) == [stays.key]  # not live even before the callback ran
    assert queue.requests == 2
    await told.wait()
    assert queue.remove_abandoned() == [gone]
    assert queue.remove_abandoned() == []
    assert (queue.requests, queue.windows) == (1, 1)


async def test_queue_answered_request_is_not_reported_abandoned() -> None:
    told = asyncio.Event()
    queue = RequestQueue(on_abandoned=told.set)
    done = add(queue, [8], OBS, deadline=10.0)
    queue.take([done.key])
    queue.remove(done)  # the worker removes a request before it resolves its future
    callbacks_ran = asyncio.Event()
    done.future.add_done_callback(lambda _: callbacks_ran.set())  # runs after the queue's own
    done.future.set_result(RequestResult(np.zeros((1, 2)), 0.0, 0.0))
    await callbacks_ran.wait()
    assert not told.is_set() and queue.remove_abandoned() == []


async def test_queue_late_finds_requests_past_reach_in_service_order() -> None:
    queue = RequestQueue()
    now, cost = 10.0, 0.001  # 1 ms a token
    mixed = add(queue, [150, 20], OBS, deadline=now + 0.1)  # its 150-token window cannot make it
    fits = add(queue, [50], OBS, deadline=now + 0.1)
    guard = add(queue, [200], GUARD, deadline=now + 0.15)
    passed = add(queue, [1], OBS, deadline=now)  # deadline already here
    far = add(queue, [500], OBS, deadline=now + 60)
    assert queue.late(now, cost) == [guard, passed, mixed]
    assert queue.late(now, 0.0) == [passed]
    queue.take([mixed.key])  # once the long window runs, the short one can still finish
    assert queue.late(now, cost) == [guard, passed]
    assert fits not in queue.late(now, cost) and far not in queue.late(now, cost)
    assert queue.windows == 5  # reading removes nothing


async def test_queue_stays_in_order_through_many_changes() -> None:
    rng = random.Random(7)
    queue = RequestQueue()
    live: list[QueuedRequest] = []
    for step in range(4000):  # enough removals to rebuild the heaps several times
        live.append(add(queue, [rng.randint(1, 64)], rng.choice([GUARD, OBS]), rng.uniform(0, 100), step))
        if rng.random() < 0.8:
            queue.remove(live.pop(rng.randrange(len(live))))
    expected = sorted((r.priority, r.deadline, r.key) for r in live)
    head, head_is_all = queue.head(len(live))
    assert [w.key for w in head] == [key for _, _, key in expected] and head_is_all
    assert queue.tokens == sum(len(r.windows[0]) for r in live)


async def test_queue_decision_matches_the_policy_on_the_whole_queue() -> None:
    """The worker's path (late, then head, then choose_batch) decides exactly as `decide`."""
    rng = random.Random(11)
    limits = batch_limits(max_batch_tokens=512, max_batch_rows=8, max_wait_s=0.002, lookahead_rows=16)
    for trial in range(200):
        queue = RequestQueue()
        now, cost = 10.0, rng.choice([0.0, 1e-4, 1e-3])
        for _ in range(rng.choice([0, 1, 2, 3, 8, 40])):
            lengths = [rng.randint(1, 128) for _ in range(rng.choice([1, 1, 1, 3]))]
            deadline, arrived = now + rng.uniform(-0.01, 0.3), now - rng.uniform(0, 0.003)
            add(queue, lengths, rng.choice([GUARD, OBS]), deadline, arrived)
        idle, active = rng.random() < 0.5, rng.random() < 0.5
        everything, _ = queue.head(queue.windows)
        expected = decide(
            now, everything, limits, model_was_idle=idle, cost_per_token_s=cost, guardrail_active=active
        )
        expired = [w.key for r in queue.late(now, cost) for w in everything if w.request == r.key]
        for request in queue.late(now, cost):
            queue.remove(request)
        head, head_is_all = queue.head(limits.lookahead_rows)
        chosen = choose_batch(
            now, head, limits, head_is_all=head_is_all, model_was_idle=idle, cost_per_token_s=cost,
            guardrail_active=active,
        )  # fmt: skip
        assert (tuple(expired), chosen.run, chosen.wake_at) == (
            expected.expired,
            expected.run,
            expected.wake_at,
        ), f"trial {trial}"
