"""What the app's handlers share: settings, clock, registry, metrics, and the lifecycle flags."""

from __future__ import annotations

from dataclasses import dataclass

from service.batching.clock import Clock
from service.config import Settings
from service.metrics import ServerMetrics
from service.registry import MetricRegistry


@dataclass
class AppState:
    settings: Settings
    clock: Clock
    metrics: ServerMetrics
    registry: MetricRegistry
    started: bool = False  # models loaded and warmed
    draining: bool = False  # shutting down: readiness fails at once, new work is refused
