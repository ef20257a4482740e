"""Admission, pure: given a request's size and deadline and the queue's load, take it or say why not.

Refusing at once, with a reason and a Retry-After, is cheaper for everyone than queueing work
that will be shed later. The rules, in order: a request no queue could serve (bigger than its
class may queue, or slower alone than its timeout counted from its arrival) is refused for good;
then, while the scheduler is draining or dead, everything is refused; then the request and token
bounds, with observability held to its share of each so guardrail traffic always finds room;
last, the estimated completion (work in flight + work ahead + its own) must come before its deadline.
Guardrail work waits only behind guardrail work, so its estimate counts only that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from service.batching.policy import Priority

TOO_LARGE = "too_large"  # the one reason that retrying cannot cure


@dataclass(frozen=True)
class AdmissionLimits:
    """Admission's numbers; their defaults live in `service.config.AdmissionSettings` alone."""

    max_queue_requests: int
    max_queue_tokens: int
    observability_share: float  # observability may fill only this share of the token bound
    initial_cost_per_token_s: float  # until the first batch has been measured
    cost_quantile: float  # of recent batches' cost per token, for waits (service.batching.cost)
    cost_horizon_s: float  # how long a batch's cost counts as recent


class AdmissionError(Exception):
    """Refused at once: `reason` is a short label, `retry_after_s` a hint for the client."""

    def __init__(self, reason: str, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s


class RequestTooLargeError(ValueError):
    """The request could not be served even by an idle, empty queue: retrying will not help."""


@dataclass(frozen=True)
class QueueLoad:
    """What admission needs to know of one model's queue at one moment."""

    requests: int  # admitted and not finished: waiting, or in the batch that is running
    observability_requests: int  # of those, observability traffic
    tokens: int  # tokens of the windows waiting for a batch
    guardrail_tokens: int  # of those, guardrail traffic
    busy_for_s: float = 0.0  # estimated rest of the batch in flight
    cost_per_token_s: float = 0.0  # for waits: safe when batch times spread
    idle_cost_per_token_s: float | None = None  # for "even on an idle model" (None: the same)
    accepting: bool = True  # False while draining: a swap re-routes, a shutdown refuses
    alive: bool = True  # the worker is running
    instances: int = 1  # model instances taking batches from this queue, each at cost_per_token_s


@dataclass(frozen=True)
class Refusal:
    reason: str  # a label for metrics and problem+json: too_large, draining, unavailable, ...
    message: str

    @property
    def final(self) -> bool:
        """True when the request would be refused even by an idle, empty queue."""
        return self.reason == TOO_LARGE


def estimated_wait_s(load: QueueLoad, priority: Priority, tokens: int) -> float:
    """Time until a new request of `tokens` would be done: in-flight rest + work ahead + own.

    `busy_for_s` is the wait for the first free instance; the work ahead is shared by every
    instance, while the request's own tokens run on one.
    """
    ahead = load.guardrail_tokens if priority == Priority.GUARDRAIL else load.tokens
    return load.busy_for_s + (ahead / load.instances + tokens) * load.cost_per_token_s


def retry_after_s(load: QueueLoad) -> float:
    """When the current queue should have drained: a hint for Retry-After, at least 1 s."""
    return max(1.0, math.ceil(estimated_wait_s(load, Priority.OBSERVABILITY, 0)))


def admit(
    priority: Priority,
    tokens: int,
    deadline: float,
    *,
    now: float,
    load: QueueLoad,
    limits: AdmissionLimits,
    arrived: float | None = None,
) -> Refusal | None:
    """None to take the request, else why not (see the module docstring for the order of rules).

    `arrived` is when the request reached the server (default `now`). Whether it could be served
    at all is judged from then: time it spent waiting inside the server (a busy event loop, a
    thread pool) is load, answered with 503 and Retry-After, never blamed on its timeout.
    """
    start = now if arrived is None else min(arrived, now)
    return _too_large(priority, tokens, deadline, start, load, limits) or _refusal(
        priority, tokens, deadline, now, load, limits
    )


def _too_large(
    priority: Priority, tokens: int, deadline: float, arrived: float, load: QueueLoad, limits: AdmissionLimits
) -> Refusal | None:
    bound = limits.max_queue_tokens
    if priority == Priority.OBSERVABILITY:
        bound = int(limits.observability_share * bound)
    if tokens > bound:
        return Refusal(
            TOO_LARGE,
            f"the request has {tokens} tokens; this server queues at most {bound} for its traffic"
            " class: split it into smaller requests",
        )
    idle_cost = load.cost_per_token_s if load.idle_cost_per_token_s is None else load.idle_cost_per_token_s
    alone_s, timeout_s = tokens * idle_cost, max(deadline - arrived, 0.0)
    if alone_s > timeout_s:
        return Refusal(
            TOO_LARGE,
            f"the request needs about {alone_s * 1000:.0f} ms of inference even on an idle model,"
            f" more than its {timeout_s * 1000:.0f} ms timeout: raise timeout_ms or split it",
        )
    return None


def _refusal(
    priority: Priority, tokens: int, deadline: float, now: float, load: QueueLoad, limits: AdmissionLimits
) -> Refusal | None:
    observability = priority == Priority.OBSERVABILITY
    observability_requests_cap = limits.observability_share * limits.max_queue_requests
    shed = Refusal("shed", "observability traffic is shed while the queue is this full; retry later")
    if not load.accepting:
        return Refusal("draining", "the server is shutting down or swapping this model")
    if not load.alive:
        return Refusal("unavailable", "the model's scheduler is not running")
    if load.requests >= limits.max_queue_requests:
        return Refusal("queue_full", f"{load.requests} requests are queued, the limit")
    if observability and load.observability_requests + 1 > observability_requests_cap:
        return shed
    if load.tokens + tokens > limits.max_queue_tokens:
        return Refusal("queue_full", f"{load.tokens} tokens are queued; {tokens} more exceed the limit")
    if observability and load.tokens + tokens > limits.observability_share * limits.max_queue_tokens:
        return shed
    wait_s = estimated_wait_s(load, priority, tokens)
    if now + wait_s > deadline:
        return Refusal(
            "deadline", f"the estimated completion ({wait_s * 1000:.0f} ms) is past the request's deadline"
        )
    return None
