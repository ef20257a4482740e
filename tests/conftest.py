"""Shared fixtures: a model repository of tiny counting classifiers, built per test."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from service.batching.admission import AdmissionLimits
from service.batching.policy import BatchLimits
from service.config import AdmissionSettings, BatchingSettings
from service.runtime.spec import MetricSpec, load_spec
from tests.tiny_models import write_counting_artifact

ROOT = Path(__file__).resolve().parents[1]


def promtool_path() -> str:
    """promtool from the venv or PATH: skips where it is absent, fails in CI (setup installs it)."""
    promtool = shutil.which("promtool") or str(Path(sys.executable).parent / "promtool")
    if not Path(promtool).exists():
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI: scripts/install-promtool should have put it in .venv/bin")
        pytest.skip("promtool not installed (make setup installs it)")
    return promtool


def check_with_promtool(scrape: str) -> None:
    """`promtool check metrics` on a scrape: skipped where promtool is absent, a failure in CI."""
    check = subprocess.run(
        [promtool_path(), "check", "metrics"], input=scrape, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def counting_spec(name: str = "context_adherence", version: str = "1", **changes: object) -> MetricSpec:
    raw = load_spec(ROOT / "specs" / "context_adherence.yaml").model_dump()
    raw.update({"name": name, "version": version, "max_tokens": 64, **changes})
    return MetricSpec.model_validate(raw)


def batch_limits(**changes: Any) -> BatchLimits:
    """The served batching limits (defaults from Settings alone), with `changes`."""
    return dataclasses.replace(BatchingSettings().limits(), **changes)


def admission_limits(**changes: Any) -> AdmissionLimits:
    """The served admission limits (defaults from Settings alone), with `changes`."""
    return dataclasses.replace(AdmissionSettings().limits(), **changes)


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """context_adherence v1 (guardrail), and toxicity_like v1 (observability, reject policy)."""
    repo = tmp_path / "repo"
    work = tmp_path / "work"
    work.mkdir()
    write_counting_artifact(repo, counting_spec(), work)
    other = counting_spec(
        "toxicity_like",
        use_case="observability",
        long_input={"mode": "reject"},
        required_fields=["output"],
        text_pair={"first": ["output"], "second": []},
    )
    write_counting_artifact(repo, other, work)
    return repo
