"""One model's queue and worker: admission, batching, inference off the loop, fan-out.

The scheduler owns its queue state alone (text-embeddings-inference's queue is the model). A
request ("job") is the windows of its items; each window is one queue entry, so a long item's
windows can share batches with other requests. The worker takes a batch as soon as the model is
free, asks `policy.decide` which entries, runs them through the runner (a thread: the event
loop never runs inference) and resolves each job's future when its last window is done.
Entries of jobs that are already finished (client gone, deadline passed, failed) are skipped.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from service.batching.clock import Clock
from service.batching.policy import BatchLimits, Priority, QueuedWindow, decide
from service.runtime.encoding import Window

log = logging.getLogger(__name__)

Runner = Callable[[Sequence[Window]], Awaitable[np.ndarray]]
GUARDRAIL_ACTIVE_S = 1.0  # guardrail traffic counts as active this long after its last arrival


class AdmissionError(Exception):
    """Refused at once: `reason` is a short label, `retry_after_s` a hint for the client."""

    def __init__(self, reason: str, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s


class RequestTooLargeError(ValueError):
    """The request could not be served even by an idle, empty queue: retrying will not help."""


class DeadlineExceededError(Exception):
    """The request's deadline passed while it waited; it was dropped before inference."""


class BatchFailedError(Exception):
    """The batch holding this request failed; `error_id` is in the log beside the traceback."""

    def __init__(self, error_id: str) -> None:
        super().__init__(f"inference failed (error id {error_id})")
        self.error_id = error_id


@dataclass(frozen=True)
class AdmissionLimits:
    max_queue_requests: int = 1024
    max_queue_tokens: int = 262_144
    observability_share: float = 0.75  # observability may fill only this share of the token bound
    initial_cost_per_token_s: float = 1e-4  # until the first batch has been measured
    cost_smoothing: float = 0.2  # weight of the newest batch in the running cost estimate


class SchedulerObserver(Protocol):
    """What the scheduler reports; service.metrics turns it into Prometheus series."""

    def batch_done(self, rows: int, real_tokens: int, padded_tokens: int, seconds: float) -> None: ...
    def queue_waited(self, priority: Priority, seconds: float) -> None: ...
    def rejected(self, priority: Priority, reason: str) -> None: ...
    def dropped(self, priority: Priority, reason: str) -> None: ...
    def queue_changed(self, requests: int, tokens: int) -> None: ...


class NullObserver:
    def batch_done(self, rows: int, real_tokens: int, padded_tokens: int, seconds: float) -> None:
        pass

    def queue_waited(self, priority: Priority, seconds: float) -> None:
        pass

    def rejected(self, priority: Priority, reason: str) -> None:
        pass

    def dropped(self, priority: Priority, reason: str) -> None:
        pass

    def queue_changed(self, requests: int, tokens: int) -> None:
        pass


class ThreadRunner:
    """Runs `predict` on one dedicated thread: one model, one inference at a time."""

    def __init__(self, predict: Callable[[Sequence[Window]], np.ndarray], name: str) -> None:
        self._predict = predict
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{name}")

    async def __call__(self, windows: Sequence[Window]) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._predict, windows)

    def close(self) -> None:
        self._executor.shutdown(wait=False)


@dataclass(frozen=True)
class JobResult:
    """A request's probability rows (one per window, in order) and where its time went."""

    rows: np.ndarray
    queued_s: float  # arrival to the start of its first batch
    inference_s: float  # time spent in batches that held its windows


@dataclass(eq=False)
class _Job:
    windows: Sequence[Window]
    priority: Priority
    deadline: float
    arrived: float
    future: asyncio.Future[JobResult]
    rows: list[np.ndarray | None] = field(default_factory=list)
    pending: set[int] = field(default_factory=set)  # entry keys still queued
    started_at: float | None = None
    inference_s: float = 0.0

    @property
    def tokens(self) -> int:
        return sum(len(w) for w in self.windows)


class BatchScheduler:
    def __init__(
        self,
        runner: Runner,
        *,
        clock: Clock,
        limits: BatchLimits | None = None,
        admission: AdmissionLimits | None = None,
        observer: SchedulerObserver | None = None,
        name: str = "model",
    ) -> None:
        self._runner = runner
        self.clock = clock
        self.limits = limits or BatchLimits()
        self.admission = admission or AdmissionLimits()
        self.observer: SchedulerObserver = observer or NullObserver()
        self.name = name
        self.cost_per_token_s = self.admission.initial_cost_per_token_s
        self._entries: dict[int, tuple[_Job, int, QueuedWindow]] = {}
        self._order: dict[Priority, list[tuple[float, int]]] = {p: [] for p in Priority}
        self._tokens = {p: 0 for p in Priority}
        self._jobs: set[_Job] = set()
        self._next_key = 0
        self._wake = asyncio.Event()
        self._busy_until: float | None = None
        self._accepting = True
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.batches = 0
        self._last_guardrail_s = -math.inf

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"scheduler-{self.name}")

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def queued_requests(self) -> int:
        return len(self._jobs)

    @property
    def queued_tokens(self) -> int:
        return sum(self._tokens.values())

    async def drain(self, timeout_s: float | None = None) -> None:
        """Stop accepting, let every accepted request finish (within `timeout_s`), then stop."""
        self._accepting = False

        async def finished() -> None:
            while self._jobs and self.alive:
                self._idle.clear()
                self._wake.set()
                await self._idle.wait()

        try:
            await asyncio.wait_for(finished(), timeout_s)
        except TimeoutError:
            log.error(
                "drain of %s timed out after %ss; failing %d requests", self.name, timeout_s, len(self._jobs)
            )
        await self.stop()

    async def stop(self) -> None:
        self._accepting = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._fail_all(AdmissionError("stopped", "the model was unloaded", 1.0))
        close = getattr(self._runner, "close", None)
        if callable(close):
            close()

    # -- admission -------------------------------------------------------------------------

    def submit(
        self, windows: Sequence[Window], priority: Priority, deadline: float
    ) -> asyncio.Future[JobResult]:
        """Queue a request's windows, or refuse at once.

        Raises AdmissionError (retry later) when the queue cannot take it now, and
        RequestTooLargeError when it could not be served even with the queue empty.
        """
        now = self.clock.now()
        tokens = sum(len(w) for w in windows)
        self._check_size(priority, tokens, deadline, now)
        reason = self._refusal(priority, tokens, deadline, now)
        if reason is not None:
            if reason[0] != "draining":  # a swap re-routes these; shutdown counts its own
                self.observer.rejected(priority, reason[0])
            raise AdmissionError(reason[0], reason[1], self.retry_after_s())
        future: asyncio.Future[JobResult] = asyncio.get_running_loop().create_future()
        job = _Job(windows, priority, deadline, now, future, rows=[None] * len(windows))
        job_id = self._next_key
        for index, window in enumerate(windows):
            key = self._next_key
            self._next_key += 1
            entry = QueuedWindow(
                key=key, tokens=len(window), priority=priority, deadline=deadline, arrived=now, request=job_id
            )
            self._entries[key] = (job, index, entry)
            bisect.insort(self._order[priority], (deadline, key))
            job.pending.add(key)
        self._tokens[priority] += tokens
        self._jobs.add(job)
        if priority == Priority.GUARDRAIL:
            self._last_guardrail_s = now
        self.observer.queue_changed(self.queued_requests, self.queued_tokens)
        self._wake.set()
        return future

    def estimated_wait_s(self, priority: Priority, tokens: int) -> float:
        """Time until a new request of `tokens` would be done: in-flight rest + work ahead + own."""
        now = self.clock.now()
        in_flight = max(0.0, (self._busy_until or now) - now)
        ahead = self._tokens[Priority.GUARDRAIL] if priority == Priority.GUARDRAIL else self.queued_tokens
        return in_flight + (ahead + tokens) * self.cost_per_token_s

    def retry_after_s(self) -> float:
        """When the current queue should have drained: a hint for Retry-After."""
        return max(1.0, math.ceil(self.estimated_wait_s(Priority.OBSERVABILITY, 0)))

    def _check_size(self, priority: Priority, tokens: int, deadline: float, now: float) -> None:
        limits = self.admission
        bound = limits.max_queue_tokens
        if priority == Priority.OBSERVABILITY:
            bound = int(limits.observability_share * bound)
        if tokens > bound:
            raise RequestTooLargeError(
                f"the request has {tokens} tokens; this server queues at most {bound} for its traffic"
                " class: split it into smaller requests"
            )
        alone_s = tokens * self.cost_per_token_s
        if now + alone_s > deadline:
            raise RequestTooLargeError(
                f"the request needs about {alone_s * 1000:.0f} ms of inference even on an idle model,"
                f" more than its {max(deadline - now, 0) * 1000:.0f} ms timeout: raise timeout_ms or split it"
            )

    def _refusal(
        self, priority: Priority, tokens: int, deadline: float, now: float
    ) -> tuple[str, str] | None:
        limits = self.admission
        if not self._accepting:
            return "draining", "the server is shutting down or swapping this model"
        if not self.alive:
            return "unavailable", "the model's scheduler is not running"
        if len(self._jobs) >= limits.max_queue_requests:
            return "queue_full", f"{len(self._jobs)} requests are queued, the limit"
        observability_jobs = sum(1 for j in self._jobs if j.priority == Priority.OBSERVABILITY)
        if (
            priority == Priority.OBSERVABILITY
            and observability_jobs + 1 > limits.observability_share * limits.max_queue_requests
        ):
            return "shed", "observability traffic is shed while the queue is this full; retry later"
        if self.queued_tokens + tokens > limits.max_queue_tokens:
            return "queue_full", f"{self.queued_tokens} tokens are queued; {tokens} more exceed the limit"
        shed_at = limits.observability_share * limits.max_queue_tokens
        if priority == Priority.OBSERVABILITY and self.queued_tokens + tokens > shed_at:
            return "shed", "observability traffic is shed while the queue is this full; retry later"
        if now + self.estimated_wait_s(priority, tokens) > deadline:
            wait_ms = self.estimated_wait_s(priority, tokens) * 1000
            return "deadline", f"the estimated completion ({wait_ms:.0f} ms) is past the request's deadline"
        return None

    # -- worker ----------------------------------------------------------------------------

    async def _loop(self) -> None:
        idle = True
        try:
            while True:
                self._purge_finished()
                decision = decide(
                    self.clock.now(),
                    self._service_order(),
                    self.limits,
                    model_was_idle=idle,
                    cost_per_token_s=self.cost_per_token_s,
                    guardrail_active=self.clock.now() - self._last_guardrail_s < GUARDRAIL_ACTIVE_S,
                )
                self._expire(decision.expired)
                run = [key for key in decision.run if key in self._entries]
                if run:
                    idle = False
                    await self._run_batch([self._take(key) for key in run])
                    continue
                if not self._jobs:
                    idle = True
                    self._idle.set()
                self._wake.clear()
                await self.clock.wait(self._wake, decision.wake_at)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug in the loop itself: fail what is queued, stay dead; readiness reports it.
            log.exception("scheduler %s stopped on an unexpected error", self.name)
            self._fail_all(BatchFailedError("scheduler-" + uuid.uuid4().hex[:12]))
        finally:
            self._idle.set()  # nothing will run any more: let a drain return

    def _service_order(self) -> list[QueuedWindow]:
        return [self._entries[key][2] for p in Priority for _, key in self._order[p]]

    def _take(self, key: int) -> tuple[_Job, int, QueuedWindow]:
        job, index, entry = self._entries.pop(key)
        self._order[entry.priority].remove((entry.deadline, key))
        self._tokens[entry.priority] -= entry.tokens
        job.pending.discard(key)
        return job, index, entry

    def _drop_job(self, job: _Job) -> None:
        for key in list(job.pending):
            self._take(key)
        self._jobs.discard(job)
        self.observer.queue_changed(self.queued_requests, self.queued_tokens)

    def _purge_finished(self) -> None:
        """Skip jobs that no longer need an answer: client gone or already failed."""
        for job in [j for j in self._jobs if j.future.done()]:
            if job.future.cancelled():
                self.observer.dropped(job.priority, "cancelled")
            self._drop_job(job)

    def _expire(self, keys: Sequence[int]) -> None:
        for key in keys:
            if key not in self._entries:
                continue
            job = self._entries[key][0]
            self._drop_job(job)
            self.observer.dropped(job.priority, "expired")
            if not job.future.done():
                job.future.set_exception(
                    DeadlineExceededError("the request could not be served before its deadline")
                )

    async def _run_batch(self, batch: list[tuple[_Job, int, QueuedWindow]]) -> None:
        now = self.clock.now()
        for job, _, entry in batch:
            if job.started_at is None:
                job.started_at = now
                self.observer.queue_waited(job.priority, now - entry.arrived)
        windows = [job.windows[index] for job, index, _ in batch]
        real = sum(len(w) for w in windows)
        padded = len(windows) * max(len(w) for w in windows)
        self._busy_until = now + real * self.cost_per_token_s
        try:
            probs = await self._runner(windows)
            if len(probs) != len(windows):
                raise ValueError(f"the model returned {len(probs)} rows for {len(windows)} windows")
        except Exception:
            error_id = uuid.uuid4().hex[:12]
            log.exception("batch of %d windows failed on %s (error id %s)", len(windows), self.name, error_id)
            for job in {job for job, _, _ in batch}:
                self._drop_job(job)
                if not job.future.done():
                    job.future.set_exception(BatchFailedError(error_id))
            return
        finally:
            self._busy_until = None
        seconds = self.clock.now() - now
        self.batches += 1
        self._learn_cost(seconds, real)
        self.observer.batch_done(len(windows), real, padded, seconds)
        for job in {job for job, _, _ in batch}:
            job.inference_s += seconds
        for (job, index, _), row in zip(batch, probs, strict=True):
            job.rows[index] = row
            if not job.pending and all(r is not None for r in job.rows):
                self._jobs.discard(job)
                if not job.future.done():
                    job.future.set_result(self._result(job))
        self.observer.queue_changed(self.queued_requests, self.queued_tokens)

    @staticmethod
    def _result(job: _Job) -> JobResult:
        started = job.started_at if job.started_at is not None else job.arrived
        return JobResult(
            rows=np.stack([r for r in job.rows if r is not None]),
            queued_s=started - job.arrived,
            inference_s=job.inference_s,
        )

    def _learn_cost(self, seconds: float, tokens: int) -> None:
        if seconds <= 0 or tokens <= 0:
            return
        alpha = self.admission.cost_smoothing
        self.cost_per_token_s = (1 - alpha) * self.cost_per_token_s + alpha * seconds / tokens

    def _fail_all(self, error: Exception) -> None:
        for job in list(self._jobs):
            self._drop_job(job)
            if not job.future.done():
                job.future.set_exception(error)
