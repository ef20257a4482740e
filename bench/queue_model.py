"""What an ideal server could do: a single FIFO queue fed by Poisson arrivals, no HTTP, no overhead.

The rate a server can sustain within a p99 budget is bounded by queueing, not only by the
model's speed: at utilisation rho the wait of an M/G/1 queue grows like rho / (1 - rho) times
the mean service time, and its tail far faster than its median. Simulating that queue with the
runtime's own measured per-item service times gives the best any one-model-at-a-time server
could reach, so the benchmark can say how much of the gap to the offline ceiling is queueing
(ideal / ceiling) and how much is the server (server / ideal).
"""

from __future__ import annotations

import heapq

import numpy as np


def fifo_sojourn_s(arrive_s: np.ndarray, service_s: np.ndarray, *, servers: int = 1) -> np.ndarray:
    """Each job's time in system (wait + service) in a FIFO queue with `servers` servers (model
    instances), jobs arriving at `arrive_s` (ascending) with `service_s` each: a job starts on
    the first server to be free."""
    done = np.empty(len(arrive_s))
    free_at = [0.0] * servers  # a heap of the servers' next free times
    for i, (arrive, service) in enumerate(zip(arrive_s, service_s, strict=True)):
        start = max(heapq.heappop(free_at), arrive)  # Lindley's recursion, on the earliest free server
        done[i] = start + service
        heapq.heappush(free_at, done[i])
    sojourn: np.ndarray = done - np.asarray(arrive_s, dtype=float)
    return sojourn


def fifo_p99_s(
    service_s: np.ndarray, rate: float, *, servers: int = 1, arrivals: int = 20_000, seed: int = 0
) -> float:
    """p99 time in system of that queue in the long run: `arrivals` Poisson arrivals at `rate`
    a second, each served for a time drawn from `service_s`."""
    rng = np.random.default_rng(seed)
    arrive = np.cumsum(rng.exponential(1 / rate, arrivals))
    service = rng.choice(service_s, arrivals)
    return float(np.percentile(fifo_sojourn_s(arrive, service, servers=servers), 99))


def highest_rate_within(
    service_s: np.ndarray, p99_budget_s: float, *, servers: int = 1, tolerance: float = 0.005
) -> float:
    """The largest Poisson rate whose simulated p99 stays within the budget (bisection)."""
    low, high = 0.0, servers / float(np.mean(service_s))  # utilisation 1: the queue never settles
    while high - low > tolerance * high:
        mid = (low + high) / 2
        if fifo_p99_s(service_s, mid, servers=servers) <= p99_budget_s:
            low = mid
        else:
            high = mid
    return low
