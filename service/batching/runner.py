"""How a batch reaches the model: one dedicated thread per model, so the event loop never runs inference.

A worker hands a batch to a `Runner` (windows in, an awaitable of one probability row per window
out) and takes the rows when it is done; tests pass an async fake, the server a `ThreadRunner`
around the model's `forward`. A runner may say how long the model itself took (`last_run_s`):
timed on the event loop, a batch would also count the loop's own backlog (in a burst of 400
requests, a batch of ~67 ms on its thread measured 208 ms), and the cost estimate learnt from
it would refuse work the model could do.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

import numpy as np

from service.runtime.encoding import Window

Runner = Callable[[Sequence[Window]], Awaitable[np.ndarray]]
Predict = Callable[[Sequence[Window]], np.ndarray]
# Builds a model's runner from its `predict` and a name; `ThreadRunner` itself is the default.
# The app takes one (`create_app(..., runner_factory=...)`) so tests can hold or fail a batch.
RunnerFactory = Callable[[Predict, str], Runner]


class ThreadRunner:
    """Runs `predict` on one dedicated thread: one model, one inference at a time.

    The thread takes batches from a queue and settles each batch's asyncio future itself (one
    `call_soon_threadsafe`): `run_in_executor` would also build a `concurrent.futures.Future`,
    chain it to the asyncio one and settle both: ~15 us more of the loop's core a batch
    (bench/scheduler_turnaround.py).
    """

    def __init__(self, predict: Predict, name: str) -> None:
        self._predict = predict
        self._inbox: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.last_run_s: float | None = None  # the last batch, timed on the inference thread
        # a daemon: a thread left waiting for work never holds the interpreter's exit
        self._thread = threading.Thread(target=self._serve, name=f"infer-{name}", daemon=True)
        self._thread.start()

    def __call__(self, windows: Sequence[Window]) -> asyncio.Future[np.ndarray]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[np.ndarray] = loop.create_future()
        self._inbox.put((loop, done, windows))
        return done

    def _serve(self) -> None:
        while (job := self._inbox.get()) is not None:
            loop, done, windows = job
            start = time.perf_counter()
            rows: np.ndarray | None = None
            error: BaseException | None = None
            try:
                rows = self._predict(windows)
            except BaseException as exc:  # settle the future whatever happens, or its batch hangs
                error = exc
            self.last_run_s = time.perf_counter() - start
            with contextlib.suppress(RuntimeError):  # the loop closed while the batch ran
                loop.call_soon_threadsafe(_settle, done, rows, error)

    def close(self) -> None:
        """Let the thread end once the batch it runs (if any) is done."""
        self._inbox.put(None)


_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[np.ndarray]", Sequence[Window]]


def _settle(done: asyncio.Future[np.ndarray], rows: np.ndarray | None, error: BaseException | None) -> None:
    if done.cancelled():  # the scheduler stopped
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(cast(np.ndarray, rows))
