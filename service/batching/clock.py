"""Time for the scheduler, passed in so tests can drive it by hand.

The scheduler asks three things of a clock: what time it is, to call it back at a moment (a
batch held for company is looked at again), and (for a request's deadline) to wait until either
an event or a moment. A fake clock advances only when a test says so, which makes every
batching decision deterministic.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, Protocol


class Timer(Protocol):
    def cancel(self) -> Any: ...


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""
        ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        """Call `callback` on the event loop once the clock reaches `when`, unless cancelled."""
        ...

    async def wait(self, event: asyncio.Event, until: float | None) -> None:
        """Return when `event` is set or the clock reaches `until` (None: no time limit)."""
        ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(max(0.0, when - self.now()), callback)

    async def wait(self, event: asyncio.Event, until: float | None) -> None:
        if until is None:
            await event.wait()
            return
        timeout = until - self.now()
        if timeout <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)


class _FakeCall:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that moves only on `advance`; waiters whose time has come wake up then."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._calls: list[_FakeCall] = []

    def now(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        call = _FakeCall(when, callback)
        self._calls.append(call)
        self._call_due()
        return call

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._call_due()

    def _call_due(self) -> None:
        """Call back, at once, every call_at whose time has come (so a test's next step sees it)."""
        due = [c for c in self._calls if c.when <= self._now]
        self._calls = [c for c in self._calls if c.when > self._now]
        for call in due:
            if not call.cancelled:
                call.callback()

    async def wait(self, event: asyncio.Event, until: float | None) -> None:
        if until is not None and until <= self._now:
            return
        waiters: list[asyncio.Future[None] | asyncio.Task[bool]] = [asyncio.ensure_future(event.wait())]
        timer: Timer | None = None
        if until is not None:
            reached: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            timer = self.call_at(until, lambda: None if reached.done() else reached.set_result(None))
            waiters.append(reached)
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if timer is not None:
                timer.cancel()
            for w in waiters:
                w.cancel()
