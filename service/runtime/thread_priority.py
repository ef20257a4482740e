"""Run a function at a lower OS priority on whichever thread calls it (Linux thread niceness).

A guardrail instance on a core it shares with observability instances gets only the share of
the core the OS gives it: at equal priority half, so its forward pass takes twice its idle time
while an observability batch runs beside it. Raising the other instances' threads' niceness
lets the OS run the guardrail pass first, preemptively, as the queue already orders requests
(docs/benchmarks.md, "Instances kept for guardrail"). Only raising niceness is allowed without
privileges, and it cannot be undone, so it is done on the inference threads alone, each once.

Linux sets niceness per thread (`setpriority(PRIO_PROCESS, tid)`); elsewhere the call would
change the whole process, so there it does nothing. ONNX Runtime's own pool threads (with more
than one intra-op thread) keep the priority of the thread that created the session.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


def lower_thread_priority(niceness: int) -> bool:
    """Add `niceness` to the calling thread's niceness; False where that is not possible."""
    if sys.platform != "linux" or niceness <= 0:
        return False
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + niceness)
    except OSError as exc:  # a sandbox may forbid it: the server still serves, at equal priority
        log.warning("cannot lower the priority of inference thread %d: %s", tid, exc)
        return False
    return True


def at_lower_priority(niceness: int, function: Callable[P, T]) -> Callable[P, T]:
    """`function`, lowering the priority of each thread that calls it the first time it does."""
    if niceness <= 0:
        return function
    lowered: set[int] = set()

    def lowered_call(*args: P.args, **kwargs: P.kwargs) -> T:
        tid = threading.get_native_id()
        if tid not in lowered:
            lowered.add(tid)
            lower_thread_priority(niceness)
        return function(*args, **kwargs)

    return lowered_call
