"""Lowering an inference thread's OS priority (service.runtime.thread_priority), on a thread of
its own: niceness cannot be lowered back without privileges."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from service.runtime.thread_priority import at_lower_priority


def niceness_of_this_thread() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(sys.platform != "linux", reason="niceness is per thread on Linux only")
def test_each_calling_thread_is_lowered_once_and_the_caller_s_thread_is_left_alone() -> None:
    seen: list[int] = []

    def forward() -> int:
        seen.append(niceness_of_this_thread())
        return len(seen)

    lowered = at_lower_priority(3, forward)
    before: list[int] = []

    def inference_thread() -> None:
        before.append(niceness_of_this_thread())
        assert lowered() == 1 and lowered() == 2  # the function's own result comes back

    thread = threading.Thread(target=inference_thread)
    thread.start()
    thread.join()
    start = before[0]
    assert seen == [min(start + 3, 19), min(start + 3, 19)]  # lowered once, not twice
    assert niceness_of_this_thread() == start  # the test's own thread kept its priority


def test_no_niceness_leaves_the_function_as_it_is() -> None:
    def forward() -> int:
        return 1

    assert at_lower_priority(0, forward) is forward
