"""One model instance's worker: take a batch as soon as the model is free, run it off the loop, fan out.

One worker per model instance; a model served by several instances has as many workers taking
batches from one queue (service.batching.scheduler), each with its own runner. A worker takes
the traffic classes it `serves`: every class, or guardrail alone (a reserved instance).

Each turn drops what no longer needs an answer (client gone, deadline out of reach), asks
`policy.choose_batch` for the next batch, hands it to the runner (a thread: the event loop
never runs inference) and gives each request its result when its last window is back.
It never polls: a turn runs when something changed (a request came or left, a batch ended) or
at the policy's `wake_at`. A failing batch fails only its own requests (one log line with an
error id) and the worker goes on; a bug in the worker itself fails what is queued and leaves
it dead for readiness to report.

Turns are callbacks on the event loop, not the steps of a task: a request's way to the model
and back is one loop callback each way (a turn scheduled by `submit`, the turn that follows a
batch's end), where a task cost a wake-up through an Event, a step and a resumption on either
side: 0.034-0.041 ms of the loop's core a request at idle, measured end to end against the same
code with the task (docs/benchmarks.md, "The scheduler's own cost").
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from service.batching.clock import Clock, Timer
from service.batching.cost import CostEstimate
from service.batching.observer import SchedulerObserver
from service.batching.policy import BatchLimits, Priority, choose_batch
from service.batching.queue import QueuedRequest, RequestQueue
from service.batching.runner import Runner
from service.runtime.encoding import Window

Batch = list[tuple[QueuedRequest, int]]  # (request, index of its window) per row


@dataclass(frozen=True)
class _Flight:
    """A batch handed to the runner, as its end needs it back."""

    batch: Batch
    requests: list[QueuedRequest]  # each once, in the batch's order
    windows: list[Window]
    tokens: int  # real tokens of the windows
    started: float


log = logging.getLogger(__name__)


class DeadlineExceededError(Exception):
    """The request's deadline passed while it waited; it was dropped before inference.

    `retry_after_s` is a hint for the client; the registry sets it from the queue's load.
    """

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BatchFailedError(Exception):
    """The batch holding this request failed; `error_id` is in the log beside the traceback."""

    def __init__(self, error_id: str) -> None:
        super().__init__(f"inference failed (error id {error_id})")
        self.error_id = error_id


class BatchWorker:
    def __init__(
        self,
        queue: RequestQueue,
        runner: Runner,
        *,
        clock: Clock,
        limits: BatchLimits,
        cost: CostEstimate,
        observer: SchedulerObserver,
        name: str,
        on_batch_done: Callable[[], None] = lambda: None,
        serves: frozenset[Priority] = frozenset(Priority),
    ) -> None:
        self.queue = queue
        self.runner = runner
        self.clock = clock
        self.limits = limits
        self.cost = cost
        self.observer = observer
        self.name = name
        # Tells the other instances' workers on the same queue that a batch ended: what it left
        # (a request's last windows answered, a drain now complete) may be theirs to act on.
        self.on_batch_done = on_batch_done
        # The traffic classes this instance takes: all, or guardrail alone for an instance kept
        # so that a guardrail request never waits for an observability batch in flight.
        self.serves = serves
        # Instances kept for guardrail: while one of them is free, this one leaves guardrail work
        # to it. On a core they share, two passes at once would each run at half speed.
        self.defers_guardrail_to: list[BatchWorker] = []
        self.deferring: list[BatchWorker] = []  # the workers that defer guardrail work to this one
        self._running = False  # started and not stopped (a worker that died on a bug is never free)
        self.busy_until: float | None = None  # estimated end of the batch in flight
        self.idle = asyncio.Event()  # set while no request is admitted (and once the worker ended)
        self.idle.set()
        self._settled = asyncio.Event()  # set while nothing is due: no turn scheduled, no batch running
        self._settled.set()
        self._turn_due = False  # a turn is scheduled on the loop
        self._timer: Timer | None = None  # the next turn the policy asked for (`wake_at`)
        self._in_flight: asyncio.Future[np.ndarray] | None = None
        self._model_was_idle = True
        self._ended: asyncio.Future[None] | None = None  # done when the worker dies on a bug

    def wake(self) -> None:
        """Something changed (a request came or left): take a turn once the loop is free.

        Deferred, not run here: requests that arrive in the same pass of the loop can join one
        batch, and no caller's own bookkeeping is interrupted by a turn.
        """
        if not self._running:
            return
        self._settled.clear()
        if self.busy_until is not None or self._turn_due:
            return  # the batch's end takes the next turn
        self._turn_due = True
        asyncio.get_running_loop().call_soon(self._scheduled_turn)

    async def settled(self) -> None:
        """Return once the worker has acted on every change so far and waits for work or time."""
        await self._settled.wait()

    @property
    def is_settled(self) -> bool:
        return self._settled.is_set()

    @property
    def is_free(self) -> bool:
        """The worker runs and no batch of this instance is in flight."""
        return self._running and self.busy_until is None

    def _classes_now(self) -> frozenset[Priority]:
        if any(w.is_free for w in self.defers_guardrail_to):
            return self.serves - {Priority.GUARDRAIL}
        return self.serves

    async def run(self) -> None:
        """Serve until cancelled (the scheduler stops) or a bug ends the worker."""
        self._ended = asyncio.get_running_loop().create_future()
        self._running = True
        try:
            self.wake()  # anything queued before the start
            await self._ended
        finally:
            self._running = False
            if self._timer is not None:
                self._timer.cancel()
            if self._in_flight is not None:
                self._in_flight.cancel()
            self.idle.set()  # nothing will run any more: let a drain return
            self._settled.set()

    def _scheduled_turn(self) -> None:
        self._turn_due = False
        self._turn()

    def _turn(self) -> None:
        """Start the next batch if the model is free and the policy says so, else wait for a change."""
        if not self._running or self.busy_until is not None:
            return
        try:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._drop_abandoned()
            now = self.clock.now()
            since_guardrail = now - self.queue.last_arrival[Priority.GUARDRAIL]
            self._expire(self.queue.late(now, self.cost.per_token_s))
            head, head_is_all = self.queue.head(self.limits.lookahead_rows, self._classes_now())
            decision = choose_batch(
                now,
                head,
                self.limits,
                head_is_all=head_is_all,
                model_was_idle=self._model_was_idle,
                cost_per_token_s=self.cost.per_token_s,
                guardrail_active=since_guardrail < self.limits.guardrail_active_s,
            )
            if decision.run:
                self._model_was_idle = False
                self._start(self.queue.take(decision.run), now)
                for other in self.deferring:  # this one is busy now: guardrail work is theirs too
                    other.wake()
                return
            if not self.queue.requests:
                self._model_was_idle = True
                self.idle.set()
            if decision.wake_at is not None:
                self._timer = self.clock.call_at(decision.wake_at, self.wake)
            self._settled.set()
        except Exception:
            self._die()

    def _die(self) -> None:
        """A bug in the worker itself: fail what is queued, stay dead; readiness reports it."""
        log.exception("scheduler %s stopped on an unexpected error", self.name)
        self._running = False
        self.fail_all(BatchFailedError("scheduler-" + uuid.uuid4().hex[:12]))
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(None)

    def fail_all(self, error: Exception) -> None:
        for request in self.queue.every_request():
            self._drop(request)
            if not request.future.done():
                request.future.set_exception(error)

    def _drop(self, request: QueuedRequest) -> None:
        self.queue.remove(request)
        self.observer.queue_changed(self.queue.requests, self.queue.tokens)

    def _drop_abandoned(self) -> None:
        """Skip requests that no longer need an answer: the client went away."""
        for request in self.queue.remove_abandoned():
            if request.future.cancelled():
                self.observer.dropped(request.priority, "cancelled")
            self.observer.queue_changed(self.queue.requests, self.queue.tokens)

    def _expire(self, late: list[QueuedRequest]) -> None:
        for request in late:
            self._drop(request)
            self.observer.dropped(request.priority, "expired")
            if not request.future.done():
                request.future.set_exception(
                    DeadlineExceededError("the request could not be served before its deadline")
                )

    def _start(self, batch: Batch, now: float) -> None:
        """Hand `batch` to the runner; `_finished` takes it back when it ends."""
        requests = list(dict.fromkeys(request for request, _ in batch))
        for request in requests:
            if request.started_at is None:
                request.started_at = now
                self.observer.queue_waited(request.priority, now - request.arrived)
        windows = [request.windows[index] for request, index in batch]
        tokens = sum(len(w) for w in windows)
        self.busy_until = now + tokens * self.cost.per_token_s
        self._settled.clear()
        running: asyncio.Future[np.ndarray]
        try:
            running = asyncio.ensure_future(self.runner(windows))
        except Exception as exc:  # the runner refused the batch outright
            running = asyncio.get_running_loop().create_future()
            running.set_exception(exc)
        self._in_flight = running
        flight = _Flight(batch, requests, windows, tokens, now)
        running.add_done_callback(functools.partial(self._finished, flight))

    def _finished(self, flight: _Flight, running: asyncio.Future[np.ndarray]) -> None:
        self._in_flight = None
        self.busy_until = None
        if not self._running:
            return  # stopped: its requests were failed with the rest of the queue
        try:
            self._answer(flight, running)
            self.on_batch_done()
        except Exception:
            self._die()
            return
        self._turn()  # the model is free: the next batch now, not after a pass of the loop

    def _answer(self, flight: _Flight, running: asyncio.Future[np.ndarray]) -> None:
        """Give each request of the batch its rows (the last one missing completes it), or fail them."""
        batch, requests, windows = flight.batch, flight.requests, flight.windows
        try:
            probs = running.result()
            if len(probs) != len(windows):
                raise ValueError(f"the model returned {len(probs)} rows for {len(windows)} windows")
        except (Exception, asyncio.CancelledError):
            error_id = uuid.uuid4().hex[:12]
            log.exception("batch of %d windows failed on %s (error id %s)", len(windows), self.name, error_id)
            for request in requests:
                self._drop(request)
                if not request.future.done():
                    request.future.set_exception(BatchFailedError(error_id))
            return
        seconds, real = self.clock.now() - flight.started, flight.tokens
        # the model's own time when the runner knows it (runner.py); one batch at a time per runner
        measured = getattr(self.runner, "last_run_s", None)
        self.cost.learn(measured if measured is not None else seconds, real)
        self.observer.cost_changed(self.cost.per_token_s, self.cost.idle_per_token_s)
        self.observer.batch_done(len(windows), real, len(windows) * max(len(w) for w in windows), seconds)
        for request in requests:
            request.inference_s += seconds
        for (request, index), row in zip(batch, probs, strict=True):
            if request.answer(index, row):
                self.queue.remove(request)
                if not request.future.done():
                    request.future.set_result(request.result())
        self.observer.queue_changed(self.queue.requests, self.queue.tokens)
