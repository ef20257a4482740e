"""lunaserve with a real Prometheus beside it, on loopback (`make observe`, tests/e2e/test_observe.py).

Prometheus (unpacked from Debian's package by scripts/install-prometheus) scrapes the server
every second and evaluates deploy/prometheus/rules.yaml, so the recording rules, the Grafana
dashboard's expressions and the alerts can be seen working on live traffic before a cluster.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

from loadtest.server import LocalServer, free_port, wait_until_ready

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "rules.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "lunaserve.json"


class PrometheusError(RuntimeError):
    """Prometheus is missing, did not start, or answered with an error."""


def prometheus_binary() -> str:
    found = shutil.which("prometheus", path=str(Path(sys.executable).parent)) or shutil.which("prometheus")
    if not found:
        raise PrometheusError("prometheus is not installed: `make setup` puts it in .venv/bin")
    return found


def rules_with_short_waits(rules: Path, out: Path, for_s: int) -> Path:
    """The rules with every alert's `for:` cut to `for_s` seconds: the same expressions, firing
    without waiting minutes (for demonstrations and tests only)."""
    text = re.sub(r"(\n\s+for: )\S+", rf"\g<1>{for_s}s", rules.read_text(encoding="utf-8"))
    out.write_text(text, encoding="utf-8")
    return out


class Prometheus:
    """A Prometheus server on 127.0.0.1 scraping `targets` every second with `rules` loaded."""

    def __init__(self, targets: list[str], rules: Path, workdir: Path, interval_s: float = 1.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        config = {
            "global": {"scrape_interval": f"{interval_s:g}s", "evaluation_interval": f"{interval_s:g}s"},
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": "lunaserve", "static_configs": [{"targets": targets}]}],
        }
        self.config = workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log_path = workdir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60) -> Prometheus:
        command = [
            prometheus_binary(),
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1d",
        ]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        if wait_until_ready(self.process, self.url + "/-/ready", timeout_s):
            return self
        if self.process.poll() is not None:
            raise PrometheusError(f"prometheus exited with {self.process.returncode}:\n{self.log_tail()}")
        self.stop()
        raise PrometheusError(f"prometheus was not ready after {timeout_s:g}s:\n{self.log_tail()}")

    def wait_until_scraping(self, timeout_s: float = 60) -> None:
        """Until every target has been scraped once (discovery hands targets over after ~5 s)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.query("up") and all(r["value"][1] == "1" for r in self.query("up")):
                return
            time.sleep(0.2)  # start-up poll only
        raise PrometheusError(f"no target was scraped within {timeout_s:g}s:\n{self.log_tail()}")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (raises on a query error)."""
        response = httpx.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise PrometheusError(f"{expr!r}: {body.get('error', response.text[:300])}")
        return list(body["data"]["result"])

    def alerts(self) -> list[dict[str, Any]]:
        return list(httpx.get(self.url + "/api/v1/alerts", timeout=10).json()["data"]["alerts"])

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def dashboard_expressions(metric: str = ".*") -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of the Grafana dashboard, `$metric` filled in."""
    dashboard = yaml.safe_load(DASHBOARD.read_text(encoding="utf-8"))
    return [
        (panel["title"], target["expr"].replace("$metric", metric))
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


class Observed:
    """lunaserve on `repository` plus Prometheus scraping it, started and stopped together."""

    def __init__(
        self, repository: Path, workdir: Path, server_args: list[str], alert_for_s: int | None
    ) -> None:
        self.workdir = workdir
        self.server = LocalServer(repository, workdir / "server.log", server_args)
        rules = (
            RULES
            if alert_for_s is None
            else rules_with_short_waits(RULES, workdir / "rules.yaml", alert_for_s)
        )
        self.prometheus = Prometheus([f"127.0.0.1:{self.server.port}"], rules, workdir)

    def __enter__(self) -> Observed:
        self.server.start()
        try:
            self.prometheus.start()
            self.prometheus.wait_until_scraping()
        except BaseException:
            self.prometheus.stop()
            self.server.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.prometheus.stop()
        self.server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(prog="make observe", description=__doc__)
    parser.add_argument("--repository", type=Path, default=ROOT / "repository")
    parser.add_argument("--alert-for", type=int, help="cut every alert's `for:` to this many seconds")
    parser.add_argument("--server-args", default="", help="extra `lunaserve serve` flags, one string")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="lunaserve-observe-"))
    with Observed(args.repository, workdir, args.server_args.split(), args.alert_for) as observed:
        print(f"lunaserve:  {observed.server.url}   (log {observed.server.log_path})")
        print(
            f"prometheus: {observed.prometheus.url} (rules loaded; alerts: {observed.prometheus.url}/alerts)"
        )
        print("Grafana: import deploy/grafana/lunaserve.json with this Prometheus as its data source.")
        print("Ctrl-C stops both.")
        try:
            while observed.server.process and observed.server.process.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
