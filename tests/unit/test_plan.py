"""models.plan and `lunaserve plan`: the approach decision on measured figures, and the latency check."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from loadtest.requirements import parse_requirements
from lunaserve.cli import main
from models.plan import DecisionRule, decide, make_plan
from tests.tiny_models import write_counting_artifact
from tests.unit.test_evaluate import spec_for_tests

ROWS = 200  # the dataset rules: at least 150 rows and 100 per class


def write_rows(path: Path, *, preset_can_tell: bool, judge: str | None = None) -> Path:
    """Supported and hallucinated rows in turn. The counting model scores #good - #bad words, so
    it tells them apart only when the outputs say so; the judge column is right or coin flips."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["input", "output", "context", "label", *(["judge"] if judge else [])])
        for i in range(ROWS):
            supported = i % 2 == 0
            label = "supported" if supported else "hallucinated"
            if preset_can_tell:
                output = f"answer {i} " + ("good" if supported else "bad")
            else:
                output = f"answer {i} " + ("good" if i % 4 < 2 else "bad")  # unrelated to the label
            extra = []
            if judge == "right":
                extra = [label]
            elif judge == "coin":
                extra = ["supported" if i % 4 in (0, 3) else "hallucinated"]  # right half the time
            writer.writerow(["who", output, f"the city number {i}", label, *extra])
    return path


def requirements(p50: float, p99: float) -> object:
    return parse_requirements(
        {
            "metric": "context_adherence",
            "use_case": "guardrail",
            "load": {"average": {"qps": 5, "input_tokens": 32}, "peak": {"qps": 10, "input_tokens": 48}},
            "latency_ms": {
                "average": {"p50": p50, "p95": p99, "p99": p99},
                "peak": {"p50": p50, "p95": p99, "p99": p99},
            },
        }
    )


@pytest.fixture
def preset(tmp_path: Path) -> Path:
    return write_counting_artifact(tmp_path / "repo", spec_for_tests(), tmp_path)


def test_a_preset_good_on_the_rows_is_used_as_is(preset: Path, tmp_path: Path) -> None:
    test_csv = write_rows(tmp_path / "t.csv", preset_can_tell=True)
    plan = make_plan(test_csv, spec_for_tests(), preset=preset, requirements=requirements(1000, 2000))
    assert plan.approach == "preset_as_is", plan.reason
    assert plan.preset is not None and plan.preset["macro_f1_fitted"] == 1.0
    assert plan.next_steps[0].startswith(f"lunaserve calibrate {preset}")
    assert [c["possible"] for c in plan.latency] == [True, True]
    assert not plan.missing


def test_a_poor_preset_with_a_good_judge_is_fine_tuned(preset: Path, tmp_path: Path) -> None:
    test_csv = write_rows(tmp_path / "t.csv", preset_can_tell=False, judge="right")
    plan = make_plan(test_csv, spec_for_tests(), preset=preset, requirements=None, judge_column="judge")
    assert plan.approach == "finetune_preset", plan.reason
    assert plan.judge is not None and plan.judge["macro_f1_fitted"] == 1.0
    assert plan.preset is not None and plan.preset["macro_f1_fitted"] < 0.8
    assert any("training set of about 4,000 rows balanced 50/50" in m for m in plan.missing)
    assert any("--requirements" in m for m in plan.missing)


def test_a_poor_preset_and_a_poor_judge_mean_a_new_metric(preset: Path, tmp_path: Path) -> None:
    test_csv = write_rows(tmp_path / "t.csv", preset_can_tell=False, judge="coin")
    plan = make_plan(test_csv, spec_for_tests(), preset=preset, requirements=None, judge_column="judge")
    assert plan.approach == "custom_metric", plan.reason
    assert "another definition" in plan.reason
    no_preset = make_plan(test_csv, spec_for_tests(), preset=None, requirements=None)
    assert no_preset.approach == "custom_metric" and no_preset.preset is None
    assert any("a spec for the new metric" in m for m in no_preset.missing)


def test_the_rule_uses_its_thresholds() -> None:
    preset = {"roc_auc": 0.9, "best_trivial_roc_auc": 0.85, "macro_f1_fitted": 0.82}
    judge = {"macro_f1_fitted": 0.9}
    assert decide(preset, judge, DecisionRule())[0] == "preset_as_is"
    assert decide(preset, judge, DecisionRule(good_enough_macro_f1=0.85))[0] == "finetune_preset"
    assert decide(preset, judge, DecisionRule(min_gain_over_trivial=0.1))[0] == "finetune_preset"
    assert decide(preset, None, DecisionRule(good_enough_macro_f1=0.85))[0] == "finetune_preset"
    assert (
        decide(preset, {"macro_f1_fitted": 0.6}, DecisionRule(good_enough_macro_f1=0.85))[0]
        == "custom_metric"
    )


def test_an_impossible_latency_budget_is_flagged_before_training(preset: Path, tmp_path: Path) -> None:
    test_csv = write_rows(tmp_path / "t.csv", preset_can_tell=True)
    plan = make_plan(test_csv, spec_for_tests(), preset=preset, requirements=requirements(0.0001, 0.0002))
    assert [c["possible"] for c in plan.latency] == [False, False]
    assert any("latency budget this machine can meet" in m for m in plan.missing)
    assert all(c["request_ms"]["p50"] > 0 and c["replicas_at_batch1"] >= 1 for c in plan.latency)


def test_cli_plan_writes_json_and_markdown_and_stops_on_a_bad_test_set(
    preset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    test_csv = write_rows(tmp_path / "t.csv", preset_can_tell=False, judge="right")
    out = tmp_path / "plan"
    code = main(
        [
            "plan",
            "--test",
            str(test_csv),
            "--preset",
            str(preset),
            "--judge-column",
            "judge",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert printed.startswith("# Plan: fine-tune the preset")
    assert json.loads((out / "plan.json").read_text())["approach"] == "finetune_preset"
    assert (out / "plan.md").read_text().startswith("# Plan: fine-tune the preset")
    small = tmp_path / "small.csv"
    small.write_text("".join(test_csv.read_text().splitlines(keepends=True)[:40]), encoding="utf-8")
    code = main(["plan", "--test", str(small), "--preset", str(preset), "--out", str(out)])
    assert code == 1
    assert "no recommendation yet" in capsys.readouterr().out
    assert json.loads((out / "plan.json").read_text())["approach"] is None
