"""How a batch reaches the model: one dedicated thread per model, so the event loop never runs inference.

The worker only awaits a `Runner` (windows in, one probability row per window out); tests pass
an async fake, the server a `ThreadRunner` around the model's `forward`.
"""

from __future__ import annotations

import asyncio
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

    async def __call__(self, windows: Sequence[Window]) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._predict, windows)

    def close(self) -> None:
        self._executor.shutdown(wait=False)
