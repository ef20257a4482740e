"""End to end: `lunaserve signoff` with real Locust subprocesses against a real server.

Stages last a few seconds; every load targets only the 127.0.0.1 servers started here.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from loadtest.server import ROOT, LocalServer
from models.repository import record_quality
from tests.conftest import counting_spec
from tests.tiny_models import write_counting_artifact

BUSY = 64  # a few ms a batch: the counting model costs time like a small encoder
SIGNOFF_LIMIT_S = 120


def write_test_set(path: Path, rows: int = 200) -> Path:
    """Labelled rows the counting model gets right ("good" supports, "bad" does not)."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["input", "output", "context", "label"])
        for i in range(rows):
            good = i % 2 == 0
            writer.writerow(
                [
                    f"who is the capital {i}",
                    ("good " if good else "bad ") + "paris " * (i % 7),
                    "the capital of france is paris " * (1 + i % 5) + str(i),
                    "supported" if good else "hallucinated",
                ]
            )
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("signoff")
    (root / "work").mkdir()
    folder = write_counting_artifact(root / "repo", counting_spec(), root / "work", busy_matmuls=BUSY)
    write_test_set(root / "test.csv")
    figures = {"test_set": "test.csv", "rows": 200, "roc_auc": 1.0, "macro_f1": 1.0, "accuracy": 1.0}
    record_quality(folder, "acceptance", figures)
    return root


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[LocalServer]:
    with LocalServer(workdir / "repo", workdir / "server.log", ["--batching.calibrate", "false"]) as running:
        yield running


def requirements(path: Path, **changes: object) -> Path:
    raw: dict[str, object] = {
        "metric": "context_adherence",
        "use_case": "guardrail",
        "load": {"average": {"qps": 10, "input_tokens": 40}, "peak": {"qps": 20, "input_tokens": 60}},
        "latency_ms": {
            "average": {"p50": 200, "p95": 400, "p99": 600},
            "peak": {"p50": 250, "p95": 500, "p99": 800},
        },
        "max_error_ratio": 0.02,
        "stages": {"warmup_s": 1, "average_s": 3, "peak_s": 3, "recovery_s": 3, "settle_s": 0.5},
        "request": {"timeout_ms": 3000},
        "capacity": {"step_s": 3, "warmup_s": 1, "growth": 2, "max_qps": 40, "max_steps": 2},
        "cost": {"replica_hourly_usd": 0.1},
        **changes,
    }
    path.write_text(yaml.safe_dump(raw))
    return path


def signoff(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lunaserve.cli", "signoff", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=SIGNOFF_LIMIT_S,
    )


def test_signoff_passes_and_exits_zero(workdir: Path, tmp_path: Path) -> None:
    """Starts its own server (pinned apart from Locust), scores the test set, runs the scenario."""
    out = tmp_path / "out"
    done = signoff(
        "--requirements",
        str(requirements(tmp_path / "req.yaml")),
        "--test-set",
        str(workdir / "test.csv"),
        "--repository",
        str(workdir / "repo"),
        "--server-args",
        "--batching.calibrate false",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sign-off PASS" in done.stdout
    result = json.loads((out / "signoff.json").read_text())
    assert result["passed"] and result["target"]["started_server"]
    names = {c["name"] for c in result["checks"]}
    assert {
        "peak: p99 latency",
        "recovery: achieved QPS",
        "quality: roc_auc vs manifest",
        "test set: dataset rules",
        "capacity: headroom (sustainable / peak QPS)",
    } <= names
    assert result["quality"]["reference"] == "acceptance" and result["quality"]["served"]["roc_auc"] == 1.0
    assert result["payloads"]["peak"]["source"] == "customer test set"
    assert result["capacity"]["replicas_for_peak"] == 1
    for name in ("locust.html", "locust.json", "locust_stats.csv", "locust_stats_history.csv", "samples.csv"):
        assert (out / "load" / name).is_file(), name
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert (out / "report.md").read_text().startswith("# Sign-off: context_adherence v1: PASS")


def test_signoff_impossible_targets_fail_naming_the_requirement(
    server: LocalServer, workdir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    impossible = {
        "average": {"p50": 200, "p95": 400, "p99": 600},
        "peak": {"p50": 0.01, "p95": 0.01, "p99": 0.01},
    }
    req = requirements(
        tmp_path / "req.yaml", latency_ms=impossible, capacity={"step_s": 2, "warmup_s": 0, "max_steps": 1}
    )
    done = signoff(
        "--requirements",
        str(req),
        "--url",
        server.url,
        "--repository",
        str(workdir / "repo"),
        "--out",
        str(out),
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL  peak: p99 latency" in done.stdout
    assert "sign-off FAIL" in done.stdout and "peak: p99 latency" in done.stdout.splitlines()[-4]
    report = (out / "report.md").read_text()
    assert "- **peak: p99 latency**" in report
    assert "| **FAIL** | capacity: headroom (sustainable / peak QPS) |" in report
    assert "| PASS | average: p99 latency |" in report


def test_signoff_distributed_master_and_worker(server: LocalServer, workdir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    req = requirements(tmp_path / "req.yaml")
    done = signoff(
        "--requirements",
        str(req),
        "--url",
        server.url,
        "--repository",
        str(workdir / "repo"),
        "--out",
        str(out),
        "--workers",
        "1",
        "--no-search",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 Locust workers" in done.stdout
    gate = json.loads((out / "load" / "gate.json").read_text())
    peak = next(s for s in gate["stages"] if s["name"] == "peak")
    assert peak["figures"]["ok"] > 0  # samples travelled from the worker to the master
    assert (out / "load" / "locust_worker0.log").is_file()


def test_signoff_from_another_folder_writes_under_it(
    server: LocalServer, workdir: Path, tmp_path: Path
) -> None:
    """Relative paths, the default --out included, are the caller's, though Locust runs elsewhere."""
    requirements(tmp_path / "req.yaml")
    where = ["--url", server.url, "--repository", str(workdir / "repo")]
    done = signoff("--requirements", "req.yaml", *where, "--no-search", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    (out,) = (tmp_path / "build" / "signoff").iterdir()
    assert (out / "report.md").is_file() and (out / "load" / "samples.csv").is_file()
