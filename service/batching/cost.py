"""The model's running cost per token, learned from every batch it runs.

Admission turns it into an estimated wait (refuse what would finish past its deadline) and
the policy into "could this window still finish in time": both need one shared estimate that
follows the machine's speed (another process on the box moves it by up to 2.5x).
"""

from __future__ import annotations


class CostEstimate:
    """Seconds of inference per real token: an exponentially smoothed average over batches."""

    def __init__(self, initial_per_token_s: float, smoothing: float) -> None:
        self.per_token_s = initial_per_token_s  # until the first batch has been measured
        self.smoothing = smoothing  # weight of the newest batch

    def learn(self, seconds: float, tokens: int) -> None:
        """Fold in one batch that ran `tokens` real tokens in `seconds`."""
        if seconds <= 0 or tokens <= 0:
            return
        alpha = self.smoothing
        self.per_token_s = (1 - alpha) * self.per_token_s + alpha * seconds / tokens
