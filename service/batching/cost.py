"""The model's cost per token, learned from the batches it runs.

Admission turns it into an estimated wait (refuse what would finish past its deadline) and
the policy into "could this window still finish in time": both need one shared estimate that
follows the machine's speed (another process on the box moves it by up to 2.5x). A running mean
lags a machine that slows down and sits in the middle of batch times that spread, so requests
admitted on it missed their deadlines (the overload benchmark's accepted p99 was 528 ms against
500 when the host slowed). The estimate is a high percentile of the most recent batches instead:
safe when batch times spread, and one window's length behind when the machine changes speed.
"""

from __future__ import annotations

from collections import deque


class CostEstimate:
    """Seconds of inference per real token: the `percentile` of the last `window` batches."""

    def __init__(self, initial_per_token_s: float, window: int, percentile: float) -> None:
        if window < 1 or not 0 <= percentile <= 1:
            raise ValueError("the cost window needs at least one batch and a percentile in [0, 1]")
        self._recent: deque[float] = deque(maxlen=window)
        self.percentile = percentile
        self._per_token_s = initial_per_token_s  # until the first batch has been measured

    @property
    def per_token_s(self) -> float:
        return self._per_token_s

    @per_token_s.setter
    def per_token_s(self, seconds: float) -> None:
        """Start over from `seconds`, as if it were the only batch measured so far."""
        self._recent.clear()
        self._recent.append(seconds)
        self._per_token_s = seconds

    def learn(self, seconds: float, tokens: int) -> None:
        """Fold in one batch that ran `tokens` real tokens in `seconds`."""
        if seconds <= 0 or tokens <= 0:
            return
        self._recent.append(seconds / tokens)
        self._per_token_s = percentile(sorted(self._recent), self.percentile)


def percentile(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted values, interpolated between neighbours (numpy's default rule)."""
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
