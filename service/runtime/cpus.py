"""How many CPUs this process may really use: its affinity, capped by a cgroup CPU quota.

ONNX Runtime's "all cores" counts the machine's cores. In a container limited to 2 CPUs on a
32-core node that means 32 threads time-sliced onto 2 CPUs' worth of quota: throttling and a
long tail. The quota is what Kubernetes' `limits.cpu` and Docker's `--cpus` set.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = CGROUP) -> float | None:
    """CPUs allowed by the cgroup quota (v2 `cpu.max`, or v1 quota/period), None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us


def usable_cpus(root: Path = CGROUP) -> int:
    """Whole CPUs to run threads on: the affinity mask's size, at most the quota rounded up."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit(root)
    return max(1, min(affinity, math.ceil(limit)) if limit else affinity)
