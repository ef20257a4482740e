"""loadtest.arrivals: the Poisson schedule the Locust users and the server benchmark share."""

from __future__ import annotations

import random

import pytest

from loadtest.arrivals import arrival_offsets, first_gap, next_gap


def test_arrivals_poisson_offsets_start_at_zero_and_stay_within_the_duration() -> None:
    offsets = list(arrival_offsets(random.Random(0), rate=200.0, duration_s=50.0))
    assert offsets[0] == 0.0 and offsets == sorted(offsets) and offsets[-1] < 50.0
    assert len(offsets) / 50.0 == pytest.approx(200.0, rel=0.05)  # 10,000 arrivals: within 5%


def test_arrivals_are_reproducible_from_the_seed() -> None:
    def draw() -> list[float]:
        return list(arrival_offsets(random.Random(7), 5.0, 10.0))

    assert draw() == draw()


def test_arrivals_evenly_spaced_gaps_and_random_phase() -> None:
    rng = random.Random(1)
    assert next_gap(rng, 4.0, poisson=False) == 0.25
    phases = [first_gap(rng, 4.0, poisson=False) for _ in range(100)]
    assert all(0 <= p <= 0.25 for p in phases) and len(set(phases)) == 100
