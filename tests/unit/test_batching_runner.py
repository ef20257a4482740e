"""service.batching.runner.ThreadRunner: one thread of its own settles each batch's future."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from service.batching.runner import ThreadRunner
from service.runtime.encoding import Window


def window(key: int) -> Window:
    return Window(input_ids=np.full(4, key, np.int64), token_type_ids=np.zeros(4, np.int64))


def first_ids(windows: Sequence[Window]) -> np.ndarray:
    if any(w.input_ids[0] < 0 for w in windows):
        raise ValueError("a negative id")
    return np.array([[float(w.input_ids[0])] for w in windows])


async def test_rows_come_back_on_the_loop_and_the_model_time_is_kept() -> None:
    runner = ThreadRunner(first_ids, "test")
    rows = await runner([window(3), window(5)])
    assert rows.tolist() == [[3.0], [5.0]]
    assert runner.last_run_s is not None and runner.last_run_s >= 0
    runner.close()


async def test_a_failing_batch_raises_its_error_and_the_thread_serves_the_next() -> None:
    runner = ThreadRunner(first_ids, "test")
    with pytest.raises(ValueError, match="a negative id"):
        await runner([window(-1)])
    assert (await runner([window(7)])).tolist() == [[7.0]]
    runner.close()


async def test_a_batch_whose_future_was_cancelled_is_left_alone() -> None:
    """The scheduler cancels the batch in flight when it stops: its rows, when they come, are dropped."""
    errors: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
    release = threading.Event()

    def held(windows: Sequence[Window]) -> np.ndarray:
        release.wait(30)
        return first_ids(windows)

    runner = ThreadRunner(held, "test")
    abandoned = runner([window(1)])
    abandoned.cancel()
    release.set()
    assert (await runner([window(2)])).tolist() == [[2.0]]  # settled after the first, in order
    assert abandoned.cancelled() and errors == []
    runner.close()


def test_close_lets_the_thread_end() -> None:
    runner = ThreadRunner(first_ids, "closing")
    runner.close()
    runner._thread.join(30)
    assert not runner._thread.is_alive()
