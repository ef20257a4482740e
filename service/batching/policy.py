"""Pure batching decisions: given the time and the queue, what to run next or when to look again.

No I/O, no clock of its own, no asyncio: the scheduler hands in what it sees and acts on the
answer, so every rule here is tested with plain values.

Vocabulary, shared with the scheduler and the metrics: a client's *request* holds *items*; an
item is scored in one or more *windows* (one model row each); a *batch* is the windows of one
forward pass. The queue holds windows; a request leaves it whole (done, expired or gone).

Order of service: guardrail before observability; within a class, earliest deadline first.
A batch starts from the most urgent window and is filled, within the token budget (rows x
longest row, i.e. padded tokens) and the row cap, first with windows of its own class and then
of the other, preferring windows whose length is close to the batch's so padding stays low.

`decide` states the rule on a whole queue (a list in service order); the scheduler's queue
finds the same late requests and the same head without walking every window
(`batching.queue.RequestQueue`) and hands them to `choose_batch`, the rest of `decide`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import IntEnum


class Priority(IntEnum):
    """Lower is served first."""

    GUARDRAIL = 0
    OBSERVABILITY = 1


@dataclass(frozen=True)
class BatchLimits:
    """The batching rules' numbers; their defaults and what each trades off live in
    `service.config.BatchingSettings` alone (`BatchingSettings().limits()`)."""

    max_batch_tokens: int  # padded tokens (rows x longest row) in one forward pass
    max_batch_rows: int
    max_wait_s: float  # hold an under-full batch this long after the model was idle
    lookahead_rows: int  # windows considered when grouping by length
    # While guardrail traffic is active, a batch led by observability work is capped at this
    # many padded tokens: a guardrail request then waits behind one short batch at most, not
    # behind a long one it cannot preempt.
    guardrail_active_batch_tokens: int
    guardrail_active_s: float  # guardrail traffic counts as active this long after its last arrival


@dataclass(frozen=True)
class QueuedWindow:
    """One window waiting for the model; every window of a request shares its priority and deadline."""

    key: int
    tokens: int
    priority: Priority
    deadline: float
    arrived: float
    request: int  # the key of the request it belongs to: a request expires whole


@dataclass(frozen=True)
class Decision:
    run: tuple[int, ...] = ()  # keys of the windows to run now, as one batch
    expired: tuple[int, ...] = ()  # keys to drop: their deadline passed before inference
    wake_at: float | None = None  # nothing to run yet: look again at this time


def padded_tokens(lengths: Sequence[int]) -> int:
    return len(lengths) * max(lengths, default=0)


def is_late(deadline: float, tokens: int, now: float, cost_per_token_s: float) -> bool:
    """Could a window of `tokens` no longer finish by `deadline` even if it ran alone now?"""
    return deadline <= now + tokens * cost_per_token_s


def decide(
    now: float,
    queue: Sequence[QueuedWindow],
    limits: BatchLimits,
    *,
    model_was_idle: bool,
    cost_per_token_s: float = 0.0,
    guardrail_active: bool = False,
) -> Decision:
    """What to do with `queue` (every waiting window, in service order) when the model is free at `now`.

    A request with a window that could not finish by its deadline even if it ran now (its own
    tokens at the running cost per token) is dropped whole instead of run: its answer would
    come too late anyway, and running it would make the windows behind it late too.
    """
    late = {w.request for w in queue if is_late(w.deadline, w.tokens, now, cost_per_token_s)}
    expired = tuple(w.key for w in queue if w.request in late)
    live = [w for w in queue if w.request not in late]
    decision = choose_batch(
        now,
        live[: limits.lookahead_rows],
        limits,
        head_is_all=len(live) <= limits.lookahead_rows,
        model_was_idle=model_was_idle,
        cost_per_token_s=cost_per_token_s,
        guardrail_active=guardrail_active,
    )
    return replace(decision, expired=expired)


def choose_batch(
    now: float,
    head: Sequence[QueuedWindow],
    limits: BatchLimits,
    *,
    head_is_all: bool,
    model_was_idle: bool,
    cost_per_token_s: float = 0.0,
    guardrail_active: bool = False,
) -> Decision:
    """The batch to run now, or when to look again, from the live (not late) queue's `head`.

    `head` is the first `limits.lookahead_rows` live windows in service order; `head_is_all`
    says no other live window waits. An under-full batch that takes every waiting window is
    held up to `max_wait_s` after the oldest one arrived if the model was idle: company may come.
    """
    if not head:
        return Decision()
    observability_budget = limits.max_batch_tokens
    if guardrail_active:
        observability_budget = min(observability_budget, limits.guardrail_active_batch_tokens)
    batch = fill_batch(head, limits, observability_budget, now=now, cost_per_token_s=cost_per_token_s)
    if model_was_idle and head_is_all and len(batch) == len(head) and _has_room(batch, limits):
        hold_until = min(w.arrived for w in head) + limits.max_wait_s
        if now < hold_until:
            return Decision(wake_at=hold_until)
    return Decision(run=tuple(w.key for w in batch))


def _has_room(batch: Sequence[QueuedWindow], limits: BatchLimits) -> bool:
    """Could one more row as long as the longest still join?"""
    rows = len(batch) + 1
    return rows <= limits.max_batch_rows and rows * max(w.tokens for w in batch) <= limits.max_batch_tokens


def fill_batch(
    candidates: Sequence[QueuedWindow],
    limits: BatchLimits,
    observability_budget: int | None = None,
    *,
    now: float = 0.0,
    cost_per_token_s: float = 0.0,
) -> list[QueuedWindow]:
    """The most urgent window, then the closest lengths that fit, own priority class first.

    Guardrail rows may fill the batch to `max_batch_tokens` padded tokens; observability rows
    only while it stays within `observability_budget` (lower while guardrail traffic flows).
    A row joins only if the batch, estimated at `cost_per_token_s` per real token, would still
    finish before every member's deadline: company must not make the anchor late. The anchor
    always runs, even if it alone exceeds the budget.
    """
    budget = limits.max_batch_tokens
    obs_budget = budget if observability_budget is None else observability_budget
    anchor = candidates[0]
    chosen = [anchor]
    rest = sorted(
        candidates[1:],
        key=lambda e: (e.priority, abs(e.tokens - anchor.tokens), e.deadline),
    )
    longest, real, due = anchor.tokens, anchor.tokens, anchor.deadline
    for window in rest:
        if len(chosen) >= limits.max_batch_rows:
            break
        new_longest = max(longest, window.tokens)
        cap = budget if window.priority == Priority.GUARDRAIL else obs_budget
        if (len(chosen) + 1) * new_longest > cap:
            continue
        if now + (real + window.tokens) * cost_per_token_s >= min(due, window.deadline):
            continue
        chosen.append(window)
        longest, real, due = new_longest, real + window.tokens, min(due, window.deadline)
    return chosen
