"""How a batch reaches the model: one dedicated thread per model, so the event loop never runs inference.

The worker only awaits a `Runner` (windows in, one probability row per window out); tests pass
an async fake, the server a `ThreadRunner` around the model's `forward`. A runner may say how
long the model itself took (`last_run_s`): timed on the event loop, a batch would also count
the loop's own backlog (in a burst of 400 requests, a batch of ~67 ms on its thread measured 208 ms), and the
cost estimate learnt from it would refuse work the model could do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service.runtime.encoding import Window

Runner = Callable[[Sequence[Window]], Awaitable[np.ndarray]]
Predict = Callable[[Sequence[Window]], np.ndarray]
# Builds a model's runner from its `predict` and a name; `ThreadRunner` itself is the default.
# The app takes one (`create_app(..., runner_factory=...)`) so tests can hold or fail a batch.
RunnerFactory = Callable[[Predict, str], Runner]


class ThreadRunner:
    """Runs `predict` on one dedicated thread: one model, one inference at a time."""

    def __init__(self, predict: Predict, name: str) -> None:
        self._predict = predict
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{name}")
        self.last_run_s: float | None = None  # the last batch, timed on the inference thread

    async def __call__(self, windows: Sequence[Window]) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._timed, windows)

    def _timed(self, windows: Sequence[Window]) -> np.ndarray:
        start = time.perf_counter()
        try:
            return self._predict(windows)
        finally:
            self.last_run_s = time.perf_counter() - start

    def close(self) -> None:
        self._executor.shutdown(wait=False)
