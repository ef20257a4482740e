"""What the scheduler reports as it works: the seam `service.metrics` turns into Prometheus series.

The scheduler knows no Prometheus; it calls these five methods at the moments they describe,
and `NullObserver` lets it run (in tests, or a retired version) with nobody listening.
"""

from __future__ import annotations

from typing import Protocol

from service.batching.policy import Priority


class SchedulerObserver(Protocol):
    def batch_done(self, windows: int, real_tokens: int, padded_tokens: int, seconds: float) -> None: ...
    def queue_waited(self, priority: Priority, seconds: float) -> None: ...
    def rejected(self, priority: Priority, reason: str) -> None: ...
    def dropped(self, priority: Priority, reason: str) -> None: ...
    def queue_changed(self, requests: int, tokens: int) -> None: ...


class NullObserver:
    def batch_done(self, windows: int, real_tokens: int, padded_tokens: int, seconds: float) -> None:
        pass

    def queue_waited(self, priority: Priority, seconds: float) -> None:
        pass

    def rejected(self, priority: Priority, reason: str) -> None:
        pass

    def dropped(self, priority: Priority, reason: str) -> None:
        pass

    def queue_changed(self, requests: int, tokens: int) -> None:
        pass
