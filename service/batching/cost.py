"""The model's cost per token, learned from the batches it runs: two readings for two questions.

"When would this request be done?" (admission's deadline rule) and "could this window still
finish in time?" (the queue and the batch policy) need an estimate that stays safe when batch
times spread: another process on the box slows batches by up to 2.5x, a burst of parsing beside
a batch by far more. That reading is a high quantile of recent batches, each weighted by its
tokens (small batches pay a fixed overhead per call; the queue's work is mostly in big ones).

"Could an idle server serve this at all?" is the one question whose "no" is final (422, do not
retry), so it is answered with the lowest cost ever measured: load, however much it slows the
batches, is never blamed on a request.

Samples age out by time. When no batch has run for `horizon_s` the model has been idle, and the
idle cost is the estimate again: a quantile that only admitted work refreshes would otherwise,
once a burst has inflated it, refuse every later request and never be corrected (measured in
docs/benchmarks.md, "Admission's cost estimate").
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable


class CostEstimate:
    """Seconds of inference per real token: `per_token_s` for waits, `idle_per_token_s` for 422s."""

    def __init__(
        self,
        initial_per_token_s: float,
        *,
        quantile: float = 0.9,
        horizon_s: float = 10.0,
        max_samples: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.quantile = quantile
        self.horizon_s = horizon_s
        self.idle_per_token_s = initial_per_token_s  # until the first batch has been measured
        self._measured = False
        self._max_samples = max_samples
        self._samples: deque[tuple[float, float, int]] = deque()  # (when, cost, tokens), oldest first
        self._ranked: list[tuple[float, float, int]] = []  # (cost, when, tokens): the same, by cost
        self._tokens = 0  # of the samples
        self._clock = clock
        # The quantile of the current samples: read ~7 times per request (admission, the queue's
        # lateness check, the batch policy, busy_until) and changed only by learn, pin or a sample
        # ageing out, so it is found once per change, not per read (a profile of the event loop
        # under load: docs/benchmarks.md), in samples kept in cost order as they come and go.
        self._quantile_cache: float | None = None

    @property
    def per_token_s(self) -> float:
        """The token-weighted `quantile` of the batches of the last `horizon_s`, else the idle cost."""
        oldest = self._clock() - self.horizon_s
        while self._samples and self._samples[0][0] < oldest:
            self._forget_oldest()
        if not self._samples:
            return self.idle_per_token_s
        if self._quantile_cache is None:
            self._quantile_cache = self._quantile()
        return self._quantile_cache

    def _quantile(self) -> float:
        reach = self.quantile * self._tokens
        seen = 0
        for cost, _, tokens in self._ranked:
            seen += tokens
            if seen >= reach:
                return cost
        return self._ranked[-1][0]

    def _forget_oldest(self) -> None:
        when, cost, tokens = self._samples.popleft()
        del self._ranked[bisect.bisect_left(self._ranked, (cost, when, tokens))]
        self._tokens -= tokens
        self._quantile_cache = None

    def learn(self, seconds: float, tokens: int) -> None:
        """Fold in one batch that ran `tokens` real tokens in `seconds`."""
        if seconds <= 0 or tokens <= 0:
            return
        cost = seconds / tokens
        self.idle_per_token_s = cost if not self._measured else min(self.idle_per_token_s, cost)
        self._measured = True
        if len(self._samples) == self._max_samples:
            self._forget_oldest()
        when = self._clock()
        self._samples.append((when, cost, tokens))
        bisect.insort(self._ranked, (cost, when, tokens))
        self._tokens += tokens
        self._quantile_cache = None

    def pin(self, per_token_s: float) -> None:
        """Forget what was measured and read `per_token_s` both ways until the next batch."""
        self._samples.clear()
        self._ranked.clear()
        self._tokens = 0
        self._quantile_cache = None
        self.idle_per_token_s = per_token_s
        self._measured = True
