"""Time for the scheduler, passed in so tests can drive it by hand.

The scheduler asks two things of a clock: what time it is, and to wait until either new work
arrives (an event) or a moment passes. A fake clock advances only when a test says so, which
makes every batching decision deterministic.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""
        ...

    async def wait(self, event: asyncio.Event, until: float | None) -> None:
        """Return when `event` is set or the clock reaches `until` (None: no time limit)."""
        ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    async def wait(self, event: asyncio.Event, until: float | None) -> None:
        if until is None:
            await event.wait()
            return
        timeout = until - self.now()
        if timeout <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)


class FakeClock:
    """A clock that moves only on `advance`; waiters whose time has come wake up then."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._timers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds
        due = [f for t, f in self._timers if t <= self._now]
        self._timers = [(t, f) for t, f in self._timers if t > self._now]
        for fut in due:
            if not fut.done():
                fut.set_result(None)

    async def wait(self, event: asyncio.Event, until: float | None) -> None:
        if until is not None and until <= self._now:
            return
        waiters: list[asyncio.Future[None] | asyncio.Task[bool]] = [asyncio.ensure_future(event.wait())]
        if until is not None:
            timer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._timers.append((until, timer))
            waiters.append(timer)
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
