"""The queue state of one model: every admitted request and its waiting windows, in service order.

One class owns it so its structures cannot drift apart (the scheduler used to keep four in
step by hand) and each change is one method: `add`, `take`, `remove`, `remove_abandoned`.
Service order (guardrail first, then earliest deadline, then arrival) is kept by one heap per
traffic class instead of being rebuilt for every decision, and a decision reads only the
windows it needs: the first `lookahead_rows` live ones, and those whose deadline is near
enough that they might be late. With 10,000 windows waiting that is ~0.2 ms a decision, where
rebuilding the order on every turn cost ~4 ms (bench/scheduler_decision.py).
Windows that left (taken into a batch, or their request removed) stay in the heap until they
surface; it is rebuilt when they outnumber the waiting ones.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np

from service.batching.policy import Priority, QueuedWindow, is_late
from service.runtime.encoding import Window

_COMPACT_SLACK = 1024  # left windows tolerated in the heaps beyond the number waiting


@dataclass(frozen=True)
class RequestResult:
    """A request's probability rows (one per window, in order) and where its time went."""

    rows: np.ndarray
    queued_s: float  # arrival to the start of its first batch
    inference_s: float  # time spent in batches that held its windows


@dataclass(eq=False)
class QueuedRequest:
    """A request from admission to its answer: its windows, its future and its timings."""

    key: int  # its first window's key: window i has key `key + i`
    windows: Sequence[Window]
    priority: Priority
    deadline: float
    arrived: float
    future: asyncio.Future[RequestResult]
    rows: list[np.ndarray | None]
    unanswered: int  # windows whose row has not come back yet
    started_at: float | None = None  # when its first batch started
    inference_s: float = 0.0

    def answer(self, index: int, row: np.ndarray) -> bool:
        """Record window `index`'s row; True when it was the last one missing."""
        if self.rows[index] is None:
            self.unanswered -= 1
        self.rows[index] = row
        return self.unanswered == 0

    def result(self) -> RequestResult:
        started = self.started_at if self.started_at is not None else self.arrived
        return RequestResult(
            rows=np.stack([r for r in self.rows if r is not None]),
            queued_s=started - self.arrived,
            inference_s=self.inference_s,
        )


class RequestQueue:
    """Admitted requests (waiting, or in the batch that is running) and their waiting windows."""

    def __init__(self, on_abandoned: Callable[[], None] = lambda: None) -> None:
        self._on_abandoned = on_abandoned  # told when a request's future is finished from outside
        self._requests: dict[int, QueuedRequest] = {}
        self._waiting: dict[int, QueuedWindow] = {}
        self._order: dict[Priority, list[tuple[float, int]]] = {p: [] for p in Priority}
        self._left = 0  # heap items whose window is no longer waiting
        self._requests_of = dict.fromkeys(Priority, 0)
        self._tokens_of = dict.fromkeys(Priority, 0)
        self._lengths: Counter[int] = Counter()  # waiting windows by token count
        self._abandoned: list[QueuedRequest] = []
        self._next_key = 0
        self.last_arrival = dict.fromkeys(Priority, -math.inf)

    # -- reading ---------------------------------------------------------------------------

    @property
    def requests(self) -> int:
        return len(self._requests)

    @property
    def windows(self) -> int:
        """Windows waiting for a batch."""
        return len(self._waiting)

    @property
    def tokens(self) -> int:
        """Tokens of the windows waiting for a batch."""
        return sum(self._tokens_of.values())

    def requests_of(self, priority: Priority) -> int:
        return self._requests_of[priority]

    def tokens_of(self, priority: Priority) -> int:
        return self._tokens_of[priority]

    def every_request(self) -> list[QueuedRequest]:
        return list(self._requests.values())

    def head(
        self, count: int, classes: Collection[Priority] = tuple(Priority)
    ) -> tuple[list[QueuedWindow], bool]:
        """The first `count` live waiting windows of `classes` in service order, and whether
        they are all of them (of those classes).

        A window whose request's future is already finished (the client left) is not live.
        """
        found: list[QueuedWindow] = []
        more = False
        for priority in Priority:
            if priority not in classes:
                continue
            heap, popped = self._order[priority], []
            while heap:
                window = self._waiting.get(heap[0][1])
                if window is None:
                    heapq.heappop(heap)
                    self._left -= 1
                    continue
                if self._requests[window.request].future.done():
                    popped.append(heapq.heappop(heap))
                    continue
                if len(found) == count:
                    more = True
                    break
                found.append(window)
                popped.append(heapq.heappop(heap))
            for item in popped:
                heapq.heappush(heap, item)
            if more:
                break
        return found, not more

    def late(self, now: float, cost_per_token_s: float) -> list[QueuedRequest]:
        """Live requests with a waiting window that could not finish by the deadline if run now.

        In service order. Only windows due before `now` + the longest waiting window's run
        time can be late (every window of a request shares its deadline); they form the top of
        each heap (a parent is due no later than its children), so only that part is read.
        """
        if not self._waiting:
            return []
        horizon = now + max(self._lengths) * cost_per_token_s
        late: dict[int, QueuedRequest] = {}
        for heap in self._order.values():
            below = [0] if heap else []
            while below:
                node = below.pop()
                deadline, key = heap[node]
                if deadline > horizon:
                    continue
                below.extend(child for child in (2 * node + 1, 2 * node + 2) if child < len(heap))
                window = self._waiting.get(key)
                if window is None or window.request in late:
                    continue
                if is_late(deadline, window.tokens, now, cost_per_token_s):
                    request = self._requests[window.request]
                    if not request.future.done():
                        late[request.key] = request
        return sorted(late.values(), key=lambda r: (r.priority, r.deadline, r.key))

    # -- changes ---------------------------------------------------------------------------

    def add(
        self,
        windows: Sequence[Window],
        priority: Priority,
        deadline: float,
        now: float,
        future: asyncio.Future[RequestResult],
    ) -> QueuedRequest:
        """Queue a request's windows behind every more urgent one."""
        key = self._next_key
        self._next_key += len(windows)
        request = QueuedRequest(
            key, windows, priority, deadline, now, future, rows=[None] * len(windows), unanswered=len(windows)
        )
        for index, window in enumerate(windows):
            queued = QueuedWindow(key + index, len(window), priority, deadline, now, request=key)
            self._waiting[queued.key] = queued
            heapq.heappush(self._order[priority], (deadline, queued.key))
            self._lengths[queued.tokens] += 1
            self._tokens_of[priority] += queued.tokens
        self._requests[key] = request
        self._requests_of[priority] += 1
        self.last_arrival[priority] = now
        future.add_done_callback(lambda _: self._abandon(request))
        return request

    def take(self, keys: Sequence[int]) -> list[tuple[QueuedRequest, int]]:
        """Move these waiting windows into a batch: (request, window index) per key, in order."""
        batch = []
        for key in keys:
            window = self._waiting.pop(key)
            self._forget(window)
            request = self._requests[window.request]
            batch.append((request, key - request.key))
        self._compact()
        return batch

    def remove(self, request: QueuedRequest) -> None:
        """The request leaves (answered, failed, expired or abandoned), with its waiting windows."""
        if self._requests.pop(request.key, None) is None:
            return
        self._requests_of[request.priority] -= 1
        for key in range(request.key, request.key + len(request.windows)):
            window = self._waiting.pop(key, None)
            if window is not None:
                self._forget(window)
        self._compact()

    def remove_abandoned(self) -> list[QueuedRequest]:
        """Remove the requests whose future was finished from outside (cancelled: the client left)."""
        abandoned = [r for r in self._abandoned if r.key in self._requests]
        self._abandoned.clear()
        for request in abandoned:
            self.remove(request)
        return abandoned

    # -- bookkeeping -----------------------------------------------------------------------

    def _abandon(self, request: QueuedRequest) -> None:
        if request.key in self._requests:  # the scheduler removes a request before it answers it
            self._abandoned.append(request)
            self._on_abandoned()

    def _forget(self, window: QueuedWindow) -> None:
        self._left += 1
        self._tokens_of[window.priority] -= window.tokens
        self._lengths[window.tokens] -= 1
        if not self._lengths[window.tokens]:
            del self._lengths[window.tokens]

    def _compact(self) -> None:
        if self._left <= len(self._waiting) + _COMPACT_SLACK:
            return
        for priority in Priority:
            heap = [item for item in self._order[priority] if item[1] in self._waiting]
            heapq.heapify(heap)
            self._order[priority] = heap
        self._left = 0
