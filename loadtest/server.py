"""Starts `lunaserve serve` for a sign-off when no URL is given, and stops it afterwards."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import requests

from loadtest.placement import Placement, pin

ROOT = Path(__file__).resolve().parents[1]


class ServerStartError(RuntimeError):
    """The server exited or never became ready; the message carries the end of its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """A `lunaserve serve` subprocess on 127.0.0.1, pinned to the server's CPUs."""

    def __init__(
        self,
        repository: Path,
        placement: Placement,
        log_path: Path,
        extra_args: list[str] | None = None,
        start_timeout_s: float = 120,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.start_timeout_s = start_timeout_s
        self.command = [
            *pin(placement.server_cpus, placement),
            sys.executable,
            "-m",
            "lunaserve.cli",
            "serve",
            "--repository",
            str(repository),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--intra_op_threads",
            str(placement.server_threads),
            *(extra_args or []),
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> LocalServer:
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child holds it; closed on stop
        self.process = subprocess.Popen(self.command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerStartError(
                    f"the server exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                if requests.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)  # start-up poll
        self.stop()
        raise ServerStartError(
            f"the server was not ready after {self.start_timeout_s:g}s:\n{self.log_tail()}"
        )

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
