"""Pure batching decisions: given the time and the queue, what to run next or when to look again.

No I/O, no clock of its own, no asyncio: the scheduler hands in a snapshot and acts on the
answer, so every rule here is tested with plain values.

Order of service: guardrail before observability; within a class, earliest deadline first.
A batch starts from the most urgent entry and is filled, within the token budget (rows x
longest row, i.e. padded tokens) and the row cap, first with entries of its own class and then
of the other, preferring entries whose length is close to the batch's so padding stays low.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum


class Priority(IntEnum):
    """Lower is served first."""

    GUARDRAIL = 0
    OBSERVABILITY = 1


@dataclass(frozen=True)
class BatchLimits:
    max_batch_tokens: int = 1024  # padded tokens (rows x longest row) in one forward pass
    max_batch_rows: int = 32
    max_wait_s: float = 0.002  # hold an under-full batch this long after the model was idle
    lookahead_rows: int = 128  # entries considered when grouping by length
    # While guardrail traffic is active, a batch led by observability work is capped at this
    # many padded tokens: a guardrail request then waits behind one short batch at most, not
    # behind a long one it cannot preempt.
    guardrail_active_batch_tokens: int = 512


@dataclass(frozen=True)
class Entry:
    """One window waiting for the model."""

    key: int
    tokens: int
    priority: Priority
    deadline: float
    arrived: float
    group: int = -1  # the request the window belongs to: a request expires whole (-1: its own key)

    @property
    def request(self) -> int:
        return self.key if self.group < 0 else self.group


@dataclass(frozen=True)
class Decision:
    run: tuple[int, ...] = ()  # keys of the entries to run now, as one batch
    expired: tuple[int, ...] = ()  # keys to drop: their deadline passed before inference
    wake_at: float | None = None  # nothing to run yet: look again at this time


def padded_tokens(lengths: Sequence[int]) -> int:
    return len(lengths) * max(lengths, default=0)


def decide(
    now: float,
    queue: Sequence[Entry],
    limits: BatchLimits,
    *,
    model_was_idle: bool,
    cost_per_token_s: float = 0.0,
    guardrail_active: bool = False,
) -> Decision:
    """What to do with `queue` (in service order) when the model is free at `now`.

    An entry that could not finish by its deadline even if it ran now (its own tokens at the
    running cost per token) is dropped instead of run: its answer would come too late anyway,
    and running it would make the entries behind it late too.
    """
    late = {e.request for e in queue if e.deadline <= now + e.tokens * cost_per_token_s}
    expired = tuple(e.key for e in queue if e.request in late)
    live = [e for e in queue if e.request not in late]
    if not live:
        return Decision(expired=expired)
    observability_budget = limits.max_batch_tokens
    if guardrail_active:
        observability_budget = min(observability_budget, limits.guardrail_active_batch_tokens)
    batch = fill_batch(
        live[: limits.lookahead_rows],
        limits,
        observability_budget,
        now=now,
        cost_per_token_s=cost_per_token_s,
    )
    if model_was_idle and len(batch) == len(live) and _has_room(batch, limits):
        hold_until = min(e.arrived for e in live) + limits.max_wait_s
        if now < hold_until:
            return Decision(expired=expired, wake_at=hold_until)
    return Decision(run=tuple(e.key for e in batch), expired=expired)


def _has_room(batch: Sequence[Entry], limits: BatchLimits) -> bool:
    """Could one more row as long as the longest still join?"""
    rows = len(batch) + 1
    return rows <= limits.max_batch_rows and rows * max(e.tokens for e in batch) <= limits.max_batch_tokens


def fill_batch(
    candidates: Sequence[Entry],
    limits: BatchLimits,
    observability_budget: int | None = None,
    *,
    now: float = 0.0,
    cost_per_token_s: float = 0.0,
) -> list[Entry]:
    """The most urgent entry, then the closest lengths that fit, own priority class first.

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
    for entry in rest:
        if len(chosen) >= limits.max_batch_rows:
            break
        new_longest = max(longest, entry.tokens)
        cap = budget if entry.priority == Priority.GUARDRAIL else obs_budget
        if (len(chosen) + 1) * new_longest > cap:
            continue
        if now + (real + entry.tokens) * cost_per_token_s >= min(due, entry.deadline):
            continue
        chosen.append(entry)
        longest, real, due = new_longest, real + entry.tokens, min(due, entry.deadline)
    return chosen
