"""Which CPUs the server and the load generator run on, so one does not steal the other's time.

With two or more CPUs (and `taskset` present) the generator gets the first quarter (at least
one) and the server the rest, with one ONNX Runtime thread per server CPU. With one CPU both
share it, and the report says so.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Placement:
    server_cpus: tuple[int, ...]
    generator_cpus: tuple[int, ...]
    pinned: bool

    @property
    def server_threads(self) -> int:
        return max(len(self.server_cpus), 1)

    def describe(self) -> str:
        if not self.pinned:
            return f"server and load generator share CPUs {_cpus(self.server_cpus)} (not pinned)"
        return (
            f"server on CPUs {_cpus(self.server_cpus)} ({self.server_threads} ONNX threads), "
            f"load generator on CPUs {_cpus(self.generator_cpus)} (taskset)"
        )


def _cpus(cpus: tuple[int, ...]) -> str:
    return ",".join(str(c) for c in cpus)


def available_cpus() -> tuple[int, ...]:
    return tuple(sorted(os.sched_getaffinity(0)))


def split_cpus(cpus: tuple[int, ...], taskset: bool = True) -> Placement:
    if len(cpus) < 2 or not taskset:
        return Placement(server_cpus=cpus, generator_cpus=cpus, pinned=False)
    n_gen = max(1, len(cpus) // 4)
    return Placement(server_cpus=cpus[n_gen:], generator_cpus=cpus[:n_gen], pinned=True)


def place(cpus: tuple[int, ...] | None = None) -> Placement:
    return split_cpus(cpus or available_cpus(), taskset=shutil.which("taskset") is not None)


def pin(cpus: tuple[int, ...], placement: Placement) -> list[str]:
    """Command prefix that runs a process on `cpus` (nothing when not pinning)."""
    return taskset(cpus) if placement.pinned else []


def taskset(cpus: Sequence[int]) -> list[str]:
    """Command prefix that runs a process on `cpus`; nothing without CPUs or without taskset."""
    return ["taskset", "-c", _cpus(tuple(cpus))] if cpus and shutil.which("taskset") else []
