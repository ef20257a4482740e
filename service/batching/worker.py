"""The worker loop alone: take a batch as soon as the model is free, run it off the loop, fan out.

One worker per model instance; a model served by several instances has as many workers taking
batches from one queue (service.batching.scheduler), each awaiting its own runner. A worker
takes the traffic classes it `serves`: every class, or guardrail alone (a reserved instance).

Each turn drops what no longer needs an answer (client gone, deadline out of reach), asks
`policy.choose_batch` for the next batch, runs it through the runner (a thread: the event
loop never runs inference) and gives each request its result when its last window is back.
It never polls: between turns it waits for new work or for the policy's `wake_at`. A failing
batch fails only its own requests (one log line with an error id) and the loop goes on; a
bug in the loop itself fails what is queued and leaves the loop dead for readiness to report.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

from service.batching.clock import Clock
from service.batching.cost import CostEstimate
from service.batching.observer import SchedulerObserver
from service.batching.policy import BatchLimits, Priority, choose_batch
from service.batching.queue import QueuedRequest, RequestQueue
from service.batching.runner import Runner

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
        self._running = False  # the loop runs (a worker that died on a bug is never free)
        self.busy_until: float | None = None  # estimated end of the batch in flight
        self.idle = asyncio.Event()  # set while no request is admitted (and once the loop ended)
        self.idle.set()
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()  # set while the loop waits, having seen every change

    def wake(self) -> None:
        """Something changed (a request came or left): decide again."""
        self._wake.set()
        self._settled.clear()

    async def settled(self) -> None:
        """Return once the loop has acted on every change so far and waits for the next one."""
        await self._settled.wait()

    @property
    def is_settled(self) -> bool:
        return self._settled.is_set()

    @property
    def is_free(self) -> bool:
        """The loop runs and no batch of this instance is in flight."""
        return self._running and self.busy_until is None

    def _classes_now(self) -> frozenset[Priority]:
        if any(w.is_free for w in self.defers_guardrail_to):
            return self.serves - {Priority.GUARDRAIL}
        return self.serves

    async def run(self) -> None:
        model_was_idle = True
        self._running = True
        try:
            while True:
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
                    model_was_idle=model_was_idle,
                    cost_per_token_s=self.cost.per_token_s,
                    guardrail_active=since_guardrail < self.limits.guardrail_active_s,
                )
                if decision.run:
                    model_was_idle = False
                    batch = self.queue.take(decision.run)
                    for other in self.deferring:  # this one is busy now: guardrail work is theirs too
                        other.wake()
                    await self._run_batch(batch)
                    self.on_batch_done()
                    continue
                if not self.queue.requests:
                    model_was_idle = True
                    self.idle.set()
                self._wake.clear()
                self._settled.set()
                await self.clock.wait(self._wake, decision.wake_at)
                self._settled.clear()
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug in the loop itself: fail what is queued, stay dead; readiness reports it.
            log.exception("scheduler %s stopped on an unexpected error", self.name)
            self.fail_all(BatchFailedError("scheduler-" + uuid.uuid4().hex[:12]))
        finally:
            self._running = False
            self.idle.set()  # nothing will run any more: let a drain return
            self._settled.set()

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

    async def _run_batch(self, batch: list[tuple[QueuedRequest, int]]) -> None:
        now = self.clock.now()
        requests = list(dict.fromkeys(request for request, _ in batch))
        for request in requests:
            if request.started_at is None:
                request.started_at = now
                self.observer.queue_waited(request.priority, now - request.arrived)
        windows = [request.windows[index] for request, index in batch]
        real = sum(len(w) for w in windows)
        padded = len(windows) * max(len(w) for w in windows)
        self.busy_until = now + real * self.cost.per_token_s
        try:
            probs = await self.runner(windows)
            if len(probs) != len(windows):
                raise ValueError(f"the model returned {len(probs)} rows for {len(windows)} windows")
        except Exception:
            error_id = uuid.uuid4().hex[:12]
            log.exception("batch of %d windows failed on %s (error id %s)", len(windows), self.name, error_id)
            for request in requests:
                self._drop(request)
                if not request.future.done():
                    request.future.set_exception(BatchFailedError(error_id))
            return
        finally:
            self.busy_until = None
        seconds = self.clock.now() - now
        # the model's own time when the runner knows it (runner.py); one batch at a time per runner
        measured = getattr(self.runner, "last_run_s", None)
        self.cost.learn(measured if measured is not None else seconds, real)
        self.observer.cost_changed(self.cost.per_token_s, self.cost.idle_per_token_s)
        self.observer.batch_done(len(windows), real, padded, seconds)
        for request in requests:
            request.inference_s += seconds
        for (request, index), row in zip(batch, probs, strict=True):
            if request.answer(index, row):
                self.queue.remove(request)
                if not request.future.done():
                    request.future.set_result(request.result())
        self.observer.queue_changed(self.queue.requests, self.queue.tokens)
