"""What the app's handlers share: settings, clock, the metric registry and the Prometheus registry.

Lifecycle state (started, draining) and health belong to the `MetricRegistry` alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from service.batching.clock import Clock
from service.config import Settings
from service.registry import MetricRegistry


@dataclass(frozen=True)
class AppState:
    settings: Settings
    clock: Clock
    registry: MetricRegistry
    prometheus_registry: CollectorRegistry
