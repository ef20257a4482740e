"""One model's scheduler: admit a request at once or refuse it, queue its windows, drain on swap.

The public face of service/batching/ (routes and the registry use only this module and the
errors it names). It wires parts that each do one job, the way `policy.decide` is kept pure:
`admission` (pure: take a request or say why not), `queue` (the queue state, one method per
change), `worker` (its turns: batch, run off the event loop, fan results and errors out; one
per model instance), `cost` (the learned cost per token of one instance), `runner` (an
instance's inference thread) and `observer` (what `service.metrics` hears). It knows only
windows, futures, runners and a clock (text-embeddings-inference's queue.rs and infer.rs are
the model).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Coroutine, Sequence
from typing import Any

from service.batching.admission import (
    AdmissionError,
    AdmissionLimits,
    QueueLoad,
    RequestTooLargeError,
    admit,
    estimated_wait_s,
    retry_after_s,
)
from service.batching.clock import Clock
from service.batching.cost import CostEstimate
from service.batching.observer import NullObserver, SchedulerObserver
from service.batching.policy import BatchLimits, Priority
from service.batching.queue import RequestQueue, RequestResult
from service.batching.runner import Runner
from service.batching.worker import BatchFailedError, BatchWorker, DeadlineExceededError
from service.runtime.encoding import Window

# The errors `submit` and its future raise, and the limits it is built with, are named here too
# so a caller needs this module alone.
__all__ = [
    "AdmissionError",
    "AdmissionLimits",
    "BatchFailedError",
    "BatchScheduler",
    "DeadlineExceededError",
    "RequestTooLargeError",
]

log = logging.getLogger(__name__)


class BatchScheduler:
    """One queue, one admission, and a worker per model instance (`runners`: one runner each).

    Several instances (Triton's instance groups) let a many-core host run several batches at
    once when batch 1 is fastest: each instance has its own session and threads, and a batch
    goes to the first instance that is free; order of service, priorities and deadlines are
    those of the one queue.

    The last `guardrail_instances` of the runners take guardrail traffic alone. Priority puts a
    guardrail request ahead of every queued observability one, but with every instance busy it
    still waits for a batch in flight to end (up to one longest item); an instance kept for
    guardrail is free whenever no guardrail work is, so it starts at once: on a core of its own
    at its idle speed, on a shared core at the share the OS gives its thread (the registry
    lowers the others' priority). With `guardrail_spills` the other instances take guardrail
    work while every kept one is busy (when each instance has cores of its own); without, never:
    on a shared core two passes at once each run at half speed or worse, and the guardrail
    request is answered sooner behind the kept instance's pass than beside it.
    """

    def __init__(
        self,
        runners: Runner | Sequence[Runner],
        *,
        clock: Clock,
        limits: BatchLimits,
        admission: AdmissionLimits,
        observer: SchedulerObserver | None = None,
        name: str = "model",
        guardrail_instances: int = 0,
        guardrail_spills: bool = True,
    ) -> None:
        self.clock = clock
        self.admission = admission
        self.name = name
        self._runners = [runners] if callable(runners) else list(runners)
        if not 0 <= guardrail_instances < len(self._runners):
            raise ValueError(
                f"a scheduler needs at least one runner for every class: {len(self._runners)} runner(s),"
                f" {guardrail_instances} kept for guardrail"
            )
        general = len(self._runners) - guardrail_instances
        self._cost = CostEstimate(
            admission.initial_cost_per_token_s,
            quantile=admission.cost_quantile,
            horizon_s=admission.cost_horizon_s,
            clock=clock.now,
        )
        self._queue = RequestQueue(on_abandoned=self._wake)
        several = len(self._runners) > 1
        kept_serves = frozenset({Priority.GUARDRAIL})
        spills = guardrail_spills or not guardrail_instances
        shared_serves = frozenset(Priority) if spills else frozenset({Priority.OBSERVABILITY})
        self._workers = [
            BatchWorker(
                self._queue,
                runner,
                clock=clock,
                limits=limits,
                cost=self._cost,
                observer=observer or NullObserver(),
                name=f"{name}#{index}" if several else name,
                on_batch_done=functools.partial(self._wake, but=index),
                serves=kept_serves if index >= general else shared_serves,
            )
            for index, runner in enumerate(self._runners)
        ]
        kept, shared = self._workers[general:], self._workers[:general]
        if spills:
            for worker in shared:
                worker.defers_guardrail_to = kept
            for worker in kept:
                worker.deferring = shared
        self._accepting = True
        self._tasks: list[asyncio.Task[None]] = []

    # -- what callers may read and set -----------------------------------------------------

    @property
    def instances(self) -> int:
        """Every instance, those kept for guardrail included."""
        return len(self._workers)

    @property
    def guardrail_instances(self) -> int:
        return sum(Priority.OBSERVABILITY not in w.serves for w in self._workers)

    @property
    def guardrail_spills(self) -> bool:
        """Whether the other instances take guardrail work while every kept one is busy."""
        return all(Priority.GUARDRAIL in w.serves for w in self._workers)

    @property
    def limits(self) -> BatchLimits:
        return self._workers[0].limits

    @limits.setter
    def limits(self, limits: BatchLimits) -> None:
        for worker in self._workers:
            worker.limits = limits

    @property
    def observer(self) -> SchedulerObserver:
        return self._workers[0].observer

    @observer.setter
    def observer(self, observer: SchedulerObserver) -> None:
        for worker in self._workers:
            worker.observer = observer

    @property
    def cost_per_token_s(self) -> float:
        return self._cost.per_token_s

    @cost_per_token_s.setter
    def cost_per_token_s(self, seconds: float) -> None:
        """Take `seconds` as measured on an idle model (the load-time calibration, tests)."""
        self._cost.pin(seconds)

    @property
    def idle_cost_per_token_s(self) -> float:
        return self._cost.idle_per_token_s

    @property
    def alive(self) -> bool:
        """Every instance's worker runs (one that died on a bug makes the model unready)."""
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    @property
    def queued_requests(self) -> int:
        return self._queue.requests

    @property
    def queued_tokens(self) -> int:
        return self._queue.tokens

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(w.run(), name=f"scheduler-{w.name}") for w in self._workers]

    def _wake(self, but: int | None = None) -> None:
        for index, worker in enumerate(self._workers):
            if index != but:
                worker.wake()

    async def settled(self) -> None:
        """Return once every worker has acted on every request so far and waits for work or time."""
        while not all(w.is_settled for w in self._workers):
            await asyncio.gather(*(w.settled() for w in self._workers))

    def drain(self, timeout_s: float | None = None) -> Coroutine[Any, Any, None]:
        """Stop accepting now; await the result to let every accepted request finish (within
        `timeout_s`), after which the scheduler stops."""
        self._accepting = False
        return self._drained(timeout_s)

    async def _drained(self, timeout_s: float | None) -> None:
        async def finished() -> None:
            while self._queue.requests and self.alive:
                for worker in self._workers:
                    worker.idle.clear()
                self._wake()
                await asyncio.gather(*(w.idle.wait() for w in self._workers))

        try:
            await asyncio.wait_for(finished(), timeout_s)
        except TimeoutError:
            left = self._queue.requests
            log.error("drain of %s timed out after %ss; failing %d requests", self.name, timeout_s, left)
        await self.stop()

    async def stop(self) -> None:
        self._accepting = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers[0].fail_all(AdmissionError("stopped", "the model was unloaded", 1.0))
        for runner in self._runners:
            close = getattr(runner, "close", None)
            if callable(close):
                close()

    # -- admission -------------------------------------------------------------------------

    def submit(
        self, windows: Sequence[Window], priority: Priority, deadline: float, *, arrived: float | None = None
    ) -> asyncio.Future[RequestResult]:
        """Queue a request's windows, or refuse at once.

        Raises AdmissionError (retry later) when the queue cannot take it now, and
        RequestTooLargeError when it could not be served even with the queue empty from its
        arrival (`arrived`, app clock; default now).
        """
        now = self.clock.now()
        self._admit(priority, sum(len(w) for w in windows), deadline, now, arrived)
        future: asyncio.Future[RequestResult] = asyncio.get_running_loop().create_future()
        self._queue.add(windows, priority, deadline, now, future)
        self.observer.queue_changed(self._queue.requests, self._queue.tokens)
        self._wake()
        return future

    def refuse_early(
        self, priority: Priority, deadline: float, *, tokens: int = 0, arrived: float | None = None
    ) -> None:
        """Raise as `submit` would (AdmissionError, RequestTooLargeError) for a request of at least `tokens`.

        Called before a request is tokenised, with a lower bound of its tokens: in a burst most
        requests are refused, and tokenising each first spends the event loop's time that the
        answers of admitted ones wait for. Admission is monotone in tokens, so this refuses
        nothing that `submit` would take, and its reason is the one `submit` would give.
        """
        self._admit(priority, tokens, deadline, self.clock.now(), arrived)

    def _admit(
        self, priority: Priority, tokens: int, deadline: float, now: float, arrived: float | None
    ) -> None:
        load = self._load(now, priority)
        limits = self.admission
        refusal = admit(priority, tokens, deadline, now=now, load=load, limits=limits, arrived=arrived)
        if refusal is None:
            return
        if refusal.final:
            raise RequestTooLargeError(refusal.message)
        if refusal.reason != "draining":  # a swap re-routes these; shutdown counts its own
            self.observer.rejected(priority, refusal.reason)
        raise AdmissionError(refusal.reason, refusal.message, retry_after_s(load))

    def estimated_wait_s(self, priority: Priority, tokens: int) -> float:
        """Time until a new request of `tokens` would be done: in-flight rest + work ahead + own."""
        return estimated_wait_s(self._load(self.clock.now(), priority), priority, tokens)

    def retry_after_s(self) -> float:
        """When the current queue should have drained: a hint for Retry-After."""
        return retry_after_s(self._load(self.clock.now()))

    def _load(self, now: float, priority: Priority = Priority.OBSERVABILITY) -> QueueLoad:
        """The queue as a request of `priority` sees it: served by the instances that take its class."""
        queue = self._queue
        workers = [w for w in self._workers if priority in w.serves]
        # The first instance to be free: a free one now, else the earliest end of those in flight.
        ends = [w.busy_until for w in workers]
        busy_until = None if None in ends else min(e for e in ends if e is not None)
        return QueueLoad(
            requests=queue.requests,
            observability_requests=queue.requests_of(Priority.OBSERVABILITY),
            tokens=queue.tokens,
            guardrail_tokens=queue.tokens_of(Priority.GUARDRAIL),
            busy_for_s=max(0.0, (busy_until or now) - now),
            cost_per_token_s=self._cost.per_token_s,
            idle_cost_per_token_s=self._cost.idle_per_token_s,
            accepting=self._accepting,
            alive=self.alive,
            instances=len(workers),
        )
