"""`lunaserve build` end to end on a tiny model and tiny CSVs, hot-swapped into a live server.

The rows are learnable by the tiny BERT (the response's word "good" or "bad") and say nothing to
the trivial scorers (same length, same overlap), so the quality gate is passed on merit.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from loadtest.server import LocalServer
from lunaserve.cli import main
from service.runtime.artifact import load_artifact
from tests.conftest import counting_spec
from tests.tiny_models import build_tiny_bert, write_counting_artifact

pytestmark = pytest.mark.slow
ADMIN = "admin-key"
CONTEXT_WORDS = ["paris", "france", "city", "river", "capital", "the", "of", "in", "and", "berlin", "germany"]


def write_rows(path: Path, rows: int, seed: int) -> Path:
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["input", "output", "context", "label"])
        for i in range(rows):
            supported = i % 2 == 0
            output = ("good" if supported else "bad") + " answer"
            context = " ".join(rng.choices(CONTEXT_WORDS, k=10))
            writer.writerow(
                ["what is the city", output, context, "supported" if supported else "hallucinated"]
            )
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("build")
    spec = counting_spec(max_tokens=64)
    write_counting_artifact(root / "repo", spec, root)  # version 1: the metric being replaced
    (root / "spec.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json")), encoding="utf-8")
    build_tiny_bert(root / "base", spec.labels)
    write_rows(root / "train.csv", 320, seed=1)
    write_rows(root / "test.csv", 200, seed=2)
    return root


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[LocalServer]:
    env = {"LUNASERVE_AUTH__ADMIN_KEYS": json.dumps([ADMIN])}
    with LocalServer(
        workdir / "repo", workdir / "server.log", ["--batching.calibrate", "false"], env=env
    ) as running:
        yield running


def build_args(workdir: Path, run: str, **changes: str) -> list[str]:
    args = {
        "--run": str(workdir / run), "--test": str(workdir / "test.csv"),
        "--repository": str(workdir / "repo"), "--spec": str(workdir / "spec.yaml"),
        "--base": str(workdir / "base"), "--train": str(workdir / "train.csv"),
        "--quantization": "none", "--epochs": "3", "--lr": "2e-3", "--max-train-tokens": "48", **changes,
    }  # fmt: skip
    return ["build", *(x for kv in args.items() for x in kv)]


def test_build_fine_tunes_publishes_hot_swaps_and_resumes(
    workdir: Path, server: LocalServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LUNASERVE_ADMIN_KEY", ADMIN)
    argv = build_args(workdir, "run", **{"--url": server.url})
    assert main(argv) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "plan: custom_metric" in out  # no preset: a new metric, fine-tuned from the base
    for step in ("check", "plan", "finetune", "export", "evaluate", "calibrate", "deploy"):
        assert f"] {step}: done in" in out, step
    entry = workdir / "repo" / "context_adherence" / "2"
    manifest = load_artifact(entry).manifest
    assert manifest.quality["customer_test"]["roc_auc"] > 0.9
    assert manifest.export["threshold"]["objective"] == "macro_f1"
    # The live server switched to the new version and scores with it.
    metrics = httpx.get(server.url + "/v1/metrics").json()
    served = next(m for m in metrics["metrics"] if m["name"] == "context_adherence")
    assert served["active_version"] == "2"
    item = {"input": "what is the city", "output": "good answer", "context": "paris is the capital of france"}
    scored = httpx.post(server.url + "/v1/metrics/context_adherence/score", json={"items": [item]}).json()
    assert scored["version"] == "2" and scored["results"][0]["passed"] is True
    # The same command again: every step unchanged, nothing redone, nothing new published.
    assert main(argv) == 0
    again = capsys.readouterr().out
    for step in ("check", "plan", "finetune", "export", "evaluate", "calibrate", "deploy"):
        assert f"] {step}: unchanged, skipped" in again, step
    assert sorted(p.name for p in entry.parent.iterdir()) == ["1", "2"]
    summary = json.loads((workdir / "run" / "build.json").read_text())
    assert summary["entry"] == str(entry) and summary["approach"] == "custom_metric"


def test_build_stops_at_the_data_gate_and_resumes_after_the_fix(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = write_rows(workdir / "small.csv", 40, seed=3)
    argv = build_args(workdir, "gated", **{"--test": str(small), "--repository": str(workdir / "gated-repo")})
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "stopped: data check failed:" in err and str(small) in err and "run the same command again" in err
    record = json.loads((workdir / "gated" / "steps" / "check.json").read_text())
    assert record["status"] == "failed" and "data check failed" in record["reason"]
    assert not (workdir / "gated-repo").exists()  # nothing published
    write_rows(small, 200, seed=3)  # the fix: a test set of the size the rules ask
    argv = [a for a in argv if a not in ("--base", str(workdir / "base"))]  # and a second gate: no base
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "] check: done in" in captured.out and "] plan: done in" in captured.out
    assert "fine-tuning needs --train" in captured.err


def test_build_combines_the_encoder_with_the_evidence_asked_for(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = workdir / "evidence-repo"
    argv = build_args(
        workdir, "evidence", **{"--repository": str(repo), "--evidence": "share_missing_content"}
    )
    assert main(argv) == 0, capsys.readouterr()
    assert "evidence features, weights fitted on eval.csv: share_missing_content" in capsys.readouterr().out
    (entry,) = (repo / "context_adherence").iterdir()
    combiner = load_artifact(entry).manifest.evidence
    assert combiner is not None and list(combiner.feature_weights) == ["share_missing_content"]
