"""A local `lunaserve serve` subprocess: started, awaited on /readyz, stopped by SIGTERM.

The one launcher for the sign-off (when no URL is given), the end-to-end tests and the
benchmark, so all three start the server the way a user does.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import requests

from loadtest.placement import Placement, taskset

ROOT = Path(__file__).resolve().parents[1]


class ServerStartError(RuntimeError):
    """The server exited or never became ready; the message carries the end of its log."""


def wait_until_ready(process: subprocess.Popen[bytes], url: str, timeout_s: float) -> bool:
    """Poll `url` until it answers 200 (True), or the process exits or the time runs out
    (False: the caller tells which by `process.poll()`). Shared by every launcher here and in
    bench/ (the server, Prometheus, the peers)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.1)  # start-up poll only
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """`lunaserve serve` on 127.0.0.1 at a free port, optionally pinned to `cpus` (taskset)."""

    def __init__(
        self,
        repository: Path,
        log_path: Path,
        extra_args: Sequence[str] = (),
        *,
        cpus: Sequence[int] = (),
        threads: int = 1,
        env: dict[str, str] | None = None,
        start_timeout_s: float = 120,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.start_timeout_s = start_timeout_s
        self.env = {**os.environ, **(env or {})}
        repository = Path(repository).resolve()  # the server runs from the project root
        self.command = [
            *taskset(cpus), sys.executable, "-m", "lunaserve.cli", "serve", "--repository", str(repository),
            "--host", "127.0.0.1", "--port", str(self.port), "--intra_op_threads", str(threads),
            *extra_args,
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def placed(
        cls, repository: Path, placement: Placement, log_path: Path, extra_args: Sequence[str] = ()
    ) -> LocalServer:
        """On the placement's server CPUs, one ONNX Runtime thread per CPU."""
        cpus = placement.server_cpus if placement.pinned else ()
        return cls(repository, log_path, extra_args, cpus=cpus, threads=placement.server_threads)

    def start(self) -> LocalServer:
        with open(self.log_path, "wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                self.command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        if wait_until_ready(self.process, self.url + "/readyz", self.start_timeout_s):
            return self
        if self.process.poll() is not None:
            raise ServerStartError(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
        self.stop()
        raise ServerStartError(
            f"the server was not ready after {self.start_timeout_s:g}s:\n{self.log_tail()}"
        )

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 30) -> int | None:
        """SIGTERM (the server drains, then exits), killed after `timeout_s`; the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
