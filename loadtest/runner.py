"""Runs one load plan in a Locust subprocess (or a master and N workers) and reads its verdict.

Locust (gevent) never runs in the caller's process. Outputs kept per run: `locust_stats.csv`,
`locust_stats_history.csv`, `locust_failures.csv`, `locust.html`, `locust.json`, `locust.log`,
plus the plan, `samples.csv` and `gate.json` (per-stage figures and checks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.placement import Placement, pin
from loadtest.plan import LoadPlan
from loadtest.server import ROOT, free_port

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
START_MARGIN_S = 60  # start-up and shut-down allowance on top of the plan's duration


class LoadRunError(RuntimeError):
    """Locust failed to run the plan (not: the plan's targets were missed)."""


@dataclass(frozen=True)
class LoadRun:
    out_dir: Path
    exit_code: int
    verdict: dict[str, Any]
    wall_s: float

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and bool(self.verdict.get("passed"))


def locust_command(plan_path: Path, host: str, out_dir: Path, stop_timeout_s: float) -> list[str]:
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        host,
        "--plan",
        str(plan_path),
        "--csv",
        str(out_dir / "locust"),
        "--csv-full-history",
        "--html",
        str(out_dir / "locust.html"),
        "--json-file",
        str(out_dir / "locust"),
        "--stop-timeout",
        f"{stop_timeout_s:g}",
        "--only-summary",
        "--loglevel",
        "INFO",
    ]


def run_plan(
    plan: LoadPlan, host: str, placement: Placement, *, workers: int = 0, label: str = "run"
) -> LoadRun:
    """Run `plan` against `host`; `workers` > 0 runs a master and that many local workers."""
    out = Path(plan.out_dir).resolve()  # Locust runs from the project root, not from here
    plan = plan.model_copy(update={"out_dir": str(out)})
    out.mkdir(parents=True, exist_ok=True)
    plan_path = plan.write(out / "plan.json")
    stop_timeout = plan.client_timeout_s
    base = locust_command(plan_path, host, out, stop_timeout)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    prefix = pin(placement.generator_cpus, placement)
    log_path = out / "locust.log"
    started = time.monotonic()
    limit = plan.duration_s + plan.drain_s + stop_timeout + START_MARGIN_S
    procs: list[subprocess.Popen[bytes]] = []
    with open(log_path, "wb") as log:
        try:
            if workers:
                port = free_port()
                master = [
                    *base,
                    "--master",
                    "--master-bind-host",
                    "127.0.0.1",
                    "--master-bind-port",
                    str(port),
                    "--expect-workers",
                    str(workers),
                    "--expect-workers-max-wait",
                    "60",
                ]
                procs.append(subprocess.Popen([*prefix, *master], cwd=ROOT, env=env, stdout=log, stderr=log))
                for i in range(workers):
                    worker = [
                        sys.executable,
                        "-m",
                        "locust",
                        "-f",
                        str(LOCUSTFILE),
                        "--worker",
                        "--master-host",
                        "127.0.0.1",
                        "--master-port",
                        str(port),
                        "--plan",
                        str(plan_path),
                        "--loglevel",
                        "WARNING",
                    ]
                    wlog = open(out / f"locust_worker{i}.log", "wb")  # noqa: SIM115
                    procs.append(
                        subprocess.Popen([*prefix, *worker], cwd=ROOT, env=env, stdout=wlog, stderr=wlog)
                    )
                    wlog.close()
            else:
                procs.append(subprocess.Popen([*prefix, *base], cwd=ROOT, env=env, stdout=log, stderr=log))
            code = procs[0].wait(timeout=limit)
            for p in procs[1:]:
                p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise LoadRunError(
                f"{label}: Locust did not finish within {limit:.0f}s; see {log_path}"
            ) from None
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(10)
    gate = out / "gate.json"
    if not gate.is_file():
        tail = log_path.read_text(errors="replace")[-2000:]
        raise LoadRunError(f"{label}: Locust exited with {code} and wrote no verdict; its log ends:\n{tail}")
    verdict = json.loads(gate.read_text(encoding="utf-8"))
    return LoadRun(out_dir=out, exit_code=code, verdict=verdict, wall_s=time.monotonic() - started)
