"""What the scheduler reports as it works: the seam `service.metrics` turns into Prometheus series.

The scheduler knows no Prometheus; it calls the first six methods at the moments they describe,
and the registry calls the last three as each scoring request ends, so every outcome of a request
is recorded here and nowhere else. `NullObserver` lets a scheduler run (in tests, or a retired
version) with nobody listening.
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
    def cost_changed(self, per_token_s: float, idle_per_token_s: float) -> None: ...
    def request_ended(self, priority: Priority, seconds: float) -> None: ...
    def request_outcome(self, priority: Priority | None, outcome: str) -> None: ...
    def request_scored(self, priority: Priority, inference_s: float, tokens: int) -> None: ...


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

    def cost_changed(self, per_token_s: float, idle_per_token_s: float) -> None:
        pass

    def request_ended(self, priority: Priority, seconds: float) -> None:
        pass

    def request_outcome(self, priority: Priority | None, outcome: str) -> None:
        pass

    def request_scored(self, priority: Priority, inference_s: float, tokens: int) -> None:
        pass
