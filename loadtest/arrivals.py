"""Arrival schedules: when an open-loop generator sends, whatever the server is doing.

Poisson arrivals (exponential gaps) are what independent clients produce; evenly spaced ones
are the idealised alternative a plan may ask for. The Locust users (`loadtest/locustfile.py`)
and the server benchmark (`bench/server_load.py`) draw their gaps here. Pure: a seeded
`random.Random` in, seconds out.
"""

from __future__ import annotations

import random
from collections.abc import Iterator


def first_gap(rng: random.Random, rate: float, *, poisson: bool = True) -> float:
    """Seconds to a new sender's first arrival: a Poisson gap, or a random phase within one
    even gap (so evenly spaced senders do not all fire at once)."""
    return rng.expovariate(rate) if poisson else rng.uniform(0, 1 / rate)


def next_gap(rng: random.Random, rate: float, *, poisson: bool = True) -> float:
    """Seconds from one arrival to the next at `rate` arrivals per second."""
    return rng.expovariate(rate) if poisson else 1 / rate


def arrival_offsets(rng: random.Random, rate: float, duration_s: float) -> Iterator[float]:
    """Poisson arrivals at `rate` per second within [0, duration_s), the first at 0."""
    at = 0.0
    while at < duration_s:
        yield at
        at += next_gap(rng, rate)
