"""The reliability suite's longer run, written to docs/reliability.md with its figures.

Runs `tests/reliability` with the long settings (10,000 requests for metrics hygiene, 200
schemathesis examples per operation and phase, 20 s of overload judged on its goodput, p99 and
recovery), reads each test's outcome, duration and recorded figures from pytest's JUnit XML,
and each module's pass criteria from its docstring;
then fuzzes a live server on the shipped repository (`repository/`) with schemathesis, all checks
and its stateful phase, with the suite's checks and configuration.

    python bench/reliability_report.py            # writes docs/reliability.md
    python bench/reliability_report.py --quick    # CI's short forms, to build/reliability/
"""

from __future__ import annotations

import argparse
import ast
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "tests" / "reliability"
LONG = {
    "LUNASERVE_RELIABILITY_REQUESTS": "10000",
    "LUNASERVE_RELIABILITY_EXAMPLES": "200",
    "LUNASERVE_RELIABILITY_OVERLOAD_S": "20",
    "LUNASERVE_RELIABILITY_STRICT": "1",  # the overload's goodput, p99 and recovery become criteria
}


def criteria(module: Path) -> str:
    """The module docstring's "Pass criteria" paragraph (or its first line)."""
    doc = ast.get_docstring(ast.parse(module.read_text())) or ""
    for paragraph in doc.split("\n\n"):
        if paragraph.startswith("Pass criteria"):
            return " ".join(paragraph.split())
    return doc.splitlines()[0] if doc else ""


def outcome(case: ET.Element) -> str:
    for tag, word in (("failure", "FAILED"), ("error", "ERROR"), ("skipped", "skipped")):
        if case.find(tag) is not None:
            return word
    return "passed"


def report(junit: Path, command: str, seconds: float) -> str:
    cases: dict[str, list[ET.Element]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        cases.setdefault(case.get("classname", "").rsplit(".", 1)[-1], []).append(case)
    lines = [
        "# Reliability suite" + ("" if "--quick" in command else ": the longer run"),
        "",
        f"Written by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()}"
        f" CPUs, Python {platform.python_version()}, {seconds:.0f} s. CI runs the same tests in their"
        " short forms (`make test`). Every server is a real uvicorn over HTTP: a `lunaserve serve`"
        " process, except test_batch_fault's, in process with its injected fault.",
        "",
    ]
    for module in sorted(cases):
        lines += [f"## {module}", "", criteria(SUITE / f"{module}.py"), "", "| test | result | s | figures |",
                  "|---|---|---|---|"]  # fmt: skip
        for case in cases[module]:
            figures = "; ".join(f"{p.get('name')}: {p.get('value')}" for p in case.iter("property"))
            lines.append(
                f"| `{case.get('name')}` | {outcome(case)} | {float(case.get('time', 0)):.1f} | {figures} |"
            )
        lines.append("")
    return "\n".join(lines)


def fuzz_shipped(examples: int, log_dir: Path) -> tuple[int, str]:
    """schemathesis against `lunaserve serve --repository repository`: its exit code and summary."""
    sys.path.insert(0, str(ROOT))
    from loadtest.server import LocalServer

    with LocalServer(ROOT / "repository", log_dir / "shipped_server.log") as server:
        schemathesis = str(Path(sys.executable).parent / "schemathesis")
        command = [
            schemathesis, "--config-file", str(SUITE / "schemathesis.toml"), "run",
            f"{server.url}/openapi.json", "--checks", "all", "--seed", "1", "--max-examples", str(examples),
            "--workers", "1", "--exclude-checks", "positive_data_acceptance,not_a_server_error",
        ]  # fmt: skip
        hooks = {"SCHEMATHESIS_HOOKS": "tests.reliability.contract_checks", "PYTHONPATH": str(ROOT)}
        env = {**os.environ, **hooks}
        run = subprocess.run(command, capture_output=True, text=True, cwd=log_dir, env=env)
    (log_dir / "shipped_schemathesis.txt").write_text(run.stdout + run.stderr)
    lines = [line.strip() for line in run.stdout.splitlines() if "generated" in line]
    return run.returncode, lines[-1] if lines else "no summary"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI's short forms; write under build/")
    args = parser.parse_args()
    out_dir = ROOT / "build" / "reliability"
    out_dir.mkdir(parents=True, exist_ok=True)
    junit = out_dir / "junit.xml"
    env = {**os.environ, **({} if args.quick else LONG)}
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", str(SUITE), "-q", "-p", "no:cacheprovider",
         f"--junitxml={junit}", "-o", "junit_family=xunit1"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    command = "python bench/reliability_report.py" + (" --quick" if args.quick else "")
    text = report(junit, command, time.monotonic() - started)
    if not args.quick:
        examples = int(LONG["LUNASERVE_RELIABILITY_EXAMPLES"])
        code, summary = fuzz_shipped(examples, out_dir)
        text += "\n".join([
            "## schemathesis against the shipped metric", "",
            f"`schemathesis run` (all checks, stateful phase, seed 1, {examples} examples per operation and"
            " phase, the suite's `contract_checks.py` in place of the two status-only checks) against"
            " `lunaserve serve --repository repository`: "
            + ("passed" if code == 0 else f"FAILED (exit {code})") + f", {summary}.", "",
        ])  # fmt: skip
        run = subprocess.CompletedProcess(run.args, run.returncode or code)
    target = out_dir / "reliability.md" if args.quick else ROOT / "docs" / "reliability.md"
    target.write_text(text)
    print(f"wrote {target}")
    return run.returncode


if __name__ == "__main__":
    raise SystemExit(main())
