"""Items of an exact token length, and how long the runtime takes to score one alone.

Shared by `bench/runtime_latency.py` and `lunaserve plan` (which checks a customer's latency
budget against the preset's measured latency on this machine before any training).
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from service.runtime.classifier import MetricModel

FILLER = (
    "The river flows past the old mill before it reaches the harbour where ships from many "
    "countries unload grain timber and cloth for the markets of the city"
).split()


def item_of_tokens(model: MetricModel, tokens: int) -> dict[str, str]:
    """An item whose encoded window has exactly `tokens` tokens (response + context), or the
    longest one window holds when `tokens` is more than the metric's window."""
    output = "The harbour receives grain from many countries."
    words: list[str] = []
    while True:
        item = {"input": "", "output": output, "context": " ".join(words)}
        encoded = model.encoder.encode(item)
        if len(encoded.windows[0]) >= tokens or len(encoded.windows) > 1:
            break
        words.append(FILLER[len(words) % len(FILLER)])
    # back off one word at a time until the window is at most `tokens` long
    while len(model.encoder.encode(item).windows[0]) > tokens or len(model.encoder.encode(item).windows) > 1:
        words.pop()
        item = {"input": "", "output": output, "context": " ".join(words)}
    return item


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def batch1_latency_ms(
    model: MetricModel, item: dict[str, str], runs: int, warmup: int = 5
) -> dict[str, float]:
    """Percentiles of scoring `item` alone, in milliseconds, after `warmup` untimed runs."""
    for _ in range(warmup):
        model.score([item])
    times: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        model.score([item])
        times.append((time.perf_counter() - start) * 1000)
    return {
        "p50": statistics.median(times),
        "p90": percentile(times, 90),
        "p99": percentile(times, 99),
        "mean": statistics.fmean(times),
    }
