"""Starts `bench/serving_floor.py` (the least a Python server can do for a scoring request) on
uvicorn, placed as lunaserve is, and shapes a request to it; `serving_cost` and `server_load`
measure lunaserve beside it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from loadtest.placement import taskset
from loadtest.server import free_port, wait_until_ready

ROOT = Path(__file__).resolve().parents[1]


class FloorServer:
    """`bench/serving_floor.py` on uvicorn, on `cpus` with `threads` ONNX Runtime threads."""

    def __init__(self, model_folder: Path, log_path: Path, cpus: tuple[int, ...], threads: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "LUNASERVE_FLOOR_MODEL": str(model_folder),
            "LUNASERVE_FLOOR_THREADS": str(threads),
        }
        command = [*taskset(cpus), sys.executable, "-m", "uvicorn", "bench.serving_floor:app",
                   "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
                   "--no-access-log"]  # fmt: skip
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        if not wait_until_ready(self.process, self.url + "/readyz", 120):
            self.stop()
            raise RuntimeError(f"the floor server did not start: {log_path}")

    def stop(self, timeout_s: float = 30) -> None:
        self.process.terminate()
        self.process.wait(timeout_s)


def floor_request(
    item: dict[str, str], traffic_class: str, timeout_ms: float
) -> tuple[str, dict[str, object]]:
    """The floor's path and bare body: it has no classes or deadlines."""
    return "/", {"items": [item]}
