"""The report writer: failed requirements named in Markdown and a self-contained HTML."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from loadtest.checks import Check
from loadtest.report import render_markdown, write_report
from loadtest.requirements import load_requirements
from loadtest.samples import Sample

EXAMPLE = Path(__file__).resolve().parents[2] / "loadtest" / "requirements.example.yaml"
T0 = 1_000_000.0


def stage(name: str, start: float, end: float, p99: float, budget: dict[str, float] | None) -> dict[str, Any]:
    return {
        "index": 0,
        "name": name,
        "start": start,
        "end": end,
        "judged_from": start,
        "target_qps": 10.0,
        "offered_qps": 10.0,
        "users": 20,
        "budget_ms": budget,
        "figures": {
            "scheduled_qps": 10.0,
            "achieved_qps": 9.9,
            "p50_ms": 5.0,
            "p95_ms": 9.0,
            "p99_ms": p99,
            "error_ratio": 0.0,
            "lag_p99_ms": 2.0,
            "mean_tokens": 128.0,
        },
    }


def result() -> dict[str, Any]:
    budget = {"p50": 40.0, "p95": 90.0, "p99": 150.0}
    checks = [
        Check("average: p99 latency", "<= 150 ms", "12.0 ms", True),
        Check("peak: p99 latency", "<= 150 ms", "412.0 ms", False),
        Check("quality: roc_auc vs manifest", ">= 0.900 - 0.02", "0.850 (-0.050)", False),
    ]
    return {
        "requirements_file": "req.yaml",
        "requirements": load_requirements(EXAMPLE).model_dump(mode="json"),
        "target": {
            "url": "http://127.0.0.1:1",
            "metric": "context_adherence",
            "version": "1",
            "started_server": True,
            "placement": "server on CPUs 1",
        },
        "checks": [c.to_dict() for c in checks],
        "load": {
            "out_dir": "load",
            "arrivals": "poisson",
            "users_note": "0.5 QPS per user",
            "stages": [
                stage("average", T0, T0 + 10, 12.0, budget),
                stage("peak", T0 + 10, T0 + 20, 412.0, budget),
            ],
        },
        "payloads": {
            "average": {
                "source": "seeded English generator",
                "items": 200,
                "mean_tokens": 128.0,
                "min_tokens": 128,
                "max_tokens": 128,
            }
        },
        "search": {
            "sustainable_qps": 12.0,
            "first_failing_qps": 15.0,
            "stopped_by": "resolution",
            "probes": [
                {
                    "qps": 12.0,
                    "passed": True,
                    "p99_ms": 80.0,
                    "achieved_qps": 12.0,
                    "error_ratio": 0.0,
                    "failed": [],
                    "out_dir": "",
                },
                {
                    "qps": 15.0,
                    "passed": False,
                    "p99_ms": 300.0,
                    "achieved_qps": 14.0,
                    "error_ratio": 0.01,
                    "failed": ["p99 latency"],
                    "out_dir": "",
                },
            ],
        },
        "capacity": {
            "sustainable_qps": 12.0,
            "peak_qps": 20.0,
            "average_qps": 8.0,
            "headroom": 0.6,
            "replicas_for_peak": 2,
            "evaluations_per_request": 1,
            "replica_hourly_usd": 0.1,
            "usd_per_1000_at_capacity": 0.0023,
            "usd_per_1000_at_average": 0.0069,
        },
        "quality": None,
        "notes": ["a note"],
    }


def samples() -> list[Sample]:
    out = []
    for i in range(200):
        t = T0 + i * 0.1
        out.append(Sample(t, 5.0 + (i % 10) + (300 if t >= T0 + 10 else 0), 200, 1.0, int(t >= T0 + 10), 128))
    out.append(Sample(T0 + 15, 0.0, -2, 0.0, 1, 0))
    return out


def test_report_markdown_names_every_failed_requirement() -> None:
    md = render_markdown(result(), {})
    assert md.startswith("# Sign-off: context_adherence v1: FAIL (2 of 3 requirements failed)")
    assert "- **peak: p99 latency**: 412.0 ms (target <= 150 ms)" in md
    assert "| **FAIL** | quality: roc_auc vs manifest |" in md
    assert "| PASS | average: p99 latency |" in md
    assert "| headroom (sustainable / peak) | 0.60x |" in md
    assert "| replicas for the peak of 20 QPS | 2 |" in md
    assert "No test set given" in md


def test_report_html_is_self_contained_with_plots(tmp_path: Path) -> None:
    paths = write_report(result(), samples(), tmp_path)
    html = paths["html"].read_text()
    assert len(re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', html)) == 3
    assert not re.search(r'(src|href)="(?!data:)', html)  # nothing fetched from elsewhere
    assert '<tr class="fail"><td><b>FAIL</b></td><td>peak: p99 latency</td>' in html
    md = paths["markdown"].read_text()
    for name in ("timeline", "histograms", "search"):
        assert f"![{name}](report_{name}.png)" in md
        assert (tmp_path / f"report_{name}.png").read_bytes().startswith(b"\x89PNG")


def test_report_passes_when_every_check_passes() -> None:
    r = result()
    r["checks"] = [c for c in r["checks"] if c["passed"]]
    assert render_markdown(r, {}).splitlines()[0].endswith(": PASS")
