"""models.evaluate through the runtime on the counting classifier, and the CLI around it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lunaserve.cli import main
from models.evaluate import calibration_error, evaluate_to_files
from service.runtime.spec import MetricSpec, load_spec
from tests.tiny_models import write_counting_artifact

ROOT = Path(__file__).resolve().parents[2]


def spec_for_tests() -> MetricSpec:
    raw = load_spec(ROOT / "specs" / "context_adherence.yaml").model_dump()
    return MetricSpec.model_validate({**raw, "max_tokens": 64})


def write_test_csv(path: Path, rows: int = 40, *, existing: bool = False) -> Path:
    """Supported rows say "good", hallucinated ones "bad"; one supported row in three is muddled."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["input", "output", "context", "label", *(["score_old"] if existing else [])])
        for i in range(rows):
            supported = i % 2 == 0
            output = ("good" if supported else "bad") + (" bad bad" if supported and i % 3 == 0 else "")
            writer.writerow(
                [
                    "who",
                    output,
                    f"the city {i}",
                    "supported" if supported else "hallucinated",
                    *([str(0.9 if supported else 0.1)] if existing else []),
                ]
            )
    return path


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    return write_counting_artifact(tmp_path / "repo", spec_for_tests(), tmp_path)


def test_evaluate_writes_json_markdown_and_plot(artifact: Path, tmp_path: Path) -> None:
    test_csv = write_test_csv(tmp_path / "test.csv", existing=True)
    paths = evaluate_to_files(artifact, test_csv, tmp_path / "out", existing_column="score_old")
    figures = json.loads(paths["json"].read_text())
    # 20 supported (7 of them muddled to good-2bad) and 20 hallucinated ("bad" alone)
    assert figures["rows"] == 40 and figures["label_counts"] == {"hallucinated": 20, "supported": 20}
    assert figures["per_class"]["supported"]["recall"] == pytest.approx(13 / 20)
    assert figures["per_class"]["hallucinated"]["recall"] == 1.0
    assert figures["confusion_matrix"]["rows_true_cols_predicted"] == [[13, 7], [0, 20]]
    assert figures["baselines"]["existing"]["roc_auc"] == 1.0
    assert figures["baselines"]["majority"]["roc_auc"] == 0.5
    assert 0.5 < figures["roc_auc"] < 1.0
    assert "| **model** |" in paths["markdown"].read_text()
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_calibration_error_is_zero_when_scores_match_frequencies() -> None:
    import numpy as np

    truth = np.array([1, 0, 1, 0], float)
    assert calibration_error(truth, np.array([0.5, 0.5, 0.5, 0.5])) == 0.0
    assert calibration_error(truth, np.array([1.0, 0.0, 1.0, 0.0])) == 0.0
    assert calibration_error(truth, np.array([0.0, 1.0, 0.0, 1.0])) == 1.0


def test_cli_evaluate_bad_existing_column_is_a_clear_error(
    artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    test_csv = write_test_csv(tmp_path / "test.csv")
    code = main(
        [
            "evaluate",
            str(artifact),
            "--test",
            str(test_csv),
            "--existing-column",
            "nope",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 1
    assert "column 'nope' is not in the test set" in capsys.readouterr().err


def test_cli_evaluate_tampered_artifact_fails_cleanly(
    artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (artifact / "model.onnx").write_bytes(b"not a model")
    code = main(["evaluate", str(artifact), "--test", str(write_test_csv(tmp_path / "t.csv"))])
    assert code == 1
    assert "does not match the manifest" in capsys.readouterr().err


def test_cli_data_check_names_file_row_and_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("input,output,context,label\nq,a,c,maybe\n", encoding="utf-8")
    code = main(["data", "check", "--kind", "test", str(bad)])
    err = capsys.readouterr().err
    assert code == 1
    assert f"{bad}:2:label: error:" in err


def test_cli_evaluate_record_updates_manifest_and_card(
    artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.runtime.artifact import load_artifact

    test_csv = write_test_csv(tmp_path / "test.csv")
    code = main(
        [
            "evaluate",
            str(artifact),
            "--test",
            str(test_csv),
            "--out",
            str(tmp_path / "out"),
            "--record",
            "toy_set",
            "--description",
            "Toy rows for the test.",
        ]
    )
    assert code == 0
    manifest = load_artifact(artifact).manifest  # digests still check out after the rewrite
    assert manifest.quality["toy_set"]["rows"] == 40
    card = (artifact / "MODEL_CARD.md").read_text()
    assert "### toy_set" in card and "Toy rows for the test." in card
    assert "| length only |" in card and "| word overlap |" in card
    assert "| **model** |" in capsys.readouterr().out


def test_cli_evaluate_records_a_left_out_task_into_the_shipped_entry(
    artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--generalisation-of`: a model built without a task, scored on it, reported in the entry's card."""
    import shutil

    from service.runtime.artifact import load_artifact

    shipped = tmp_path / "shipped" / artifact.parent.name / artifact.name
    shutil.copytree(artifact, shipped)
    before = load_artifact(shipped).manifest
    test_csv = write_test_csv(tmp_path / "test.csv")
    argv = ["evaluate", str(artifact), "--test", str(test_csv), "--out", str(tmp_path / "out")]
    assert main([*argv, "--generalisation-of", str(shipped)]) == 1  # needs --record
    assert "needs --record" in capsys.readouterr().err
    code = main([*argv, "--record", "toy_task", "--generalisation-of", str(shipped), "--description", "Toy."])
    assert code == 0
    manifest = load_artifact(shipped).manifest  # digests still check out after the rewrite
    figures = manifest.generalisation["toy_task"]
    assert figures["rows"] == 40 and figures["model"]["sha256"] == before.files["model.onnx"].sha256
    assert manifest.quality == before.quality  # the entry's own figures untouched
    assert not load_artifact(artifact).manifest.generalisation  # the evaluated model's manifest untouched
    card = (shipped / "MODEL_CARD.md").read_text()
    assert "## Generalisation: leave one task out" in card
    row = next(line for line in card.splitlines() if line.startswith("| toy_task |"))
    assert f"{figures['roc_auc']:.3f}"[:4] in row and "(" in row and "- toy_task: Toy." in card


def test_evaluate_reports_encoder_alone_beside_a_combiner(tmp_path: Path) -> None:
    from service.runtime.evidence import EvidenceCombiner, EvidenceFeature

    combiner = EvidenceCombiner(model_weight=1.0, feature_weights={EvidenceFeature.N_MISSING_CONTENT: -0.1})
    folder = write_counting_artifact(tmp_path / "repo", spec_for_tests(), tmp_path, evidence=combiner)
    paths = evaluate_to_files(folder, write_test_csv(tmp_path / "test.csv"), tmp_path / "out")
    baselines = json.loads(paths["json"].read_text())["baselines"]
    assert {"encoder_only", "missing_words", "length_only", "word_overlap", "majority"} <= set(baselines)
    assert baselines["encoder_only"]["roc_auc"] is not None
