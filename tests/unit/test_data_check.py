"""Dataset rules of the customer contract, on small CSVs written into tmp_path."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from models.data_check import (
    MAX_FINDINGS_PER_CODE,
    DataCheckReport,
    DataFileError,
    DatasetRules,
    Finding,
    Severity,
    check_dataset,
    read_labelled_csv,
)
from service.runtime.spec import MetricSpec, load_spec

REPO = Path(__file__).resolve().parents[2]
HEADER = ["input", "output", "context", "label"]


@pytest.fixture(scope="module")
def spec() -> MetricSpec:
    return load_spec(REPO / "specs" / "context_adherence.yaml")


def make_rows(supported: int, hallucinated: int, *, start: int = 0) -> list[list[str]]:
    """Distinct rows: the supported ones first, then the hallucinated ones."""
    labels = ["supported"] * supported + ["hallucinated"] * hallucinated
    return [
        [f"question {i}", f"answer {i}", f"passage {i} about topic {i % 7}", label]
        for i, label in enumerate(labels, start=start)
    ]


def write_csv(path: Path, rows: Sequence[Sequence[str]], header: Sequence[str] = HEADER) -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def codes(report: DataCheckReport) -> list[str]:
    return [finding.code for finding in report.findings]


def only(report: DataCheckReport, code: str) -> Finding:
    found = [finding for finding in report.findings if finding.code == code]
    assert len(found) == 1, report.findings
    return found[0]


def test_check_dataset_valid_test_set_has_no_findings(tmp_path: Path, spec: MetricSpec) -> None:
    path = write_csv(tmp_path / "test.csv", make_rows(150, 150))
    report = check_dataset(path, "test", spec)
    assert report.findings == []
    assert report.ok
    assert report.rows == 300
    assert report.label_counts == {"hallucinated": 150, "supported": 150}


def test_check_dataset_valid_train_set_has_no_findings(tmp_path: Path, spec: MetricSpec) -> None:
    path = write_csv(tmp_path / "train.csv", make_rows(1000, 1000))
    report = check_dataset(path, "train", spec)
    assert report.findings == []
    assert report.rows == 2000


def test_check_dataset_missing_required_column_is_error(tmp_path: Path, spec: MetricSpec) -> None:
    rows = [[i, o, label] for i, o, _, label in make_rows(150, 150)]
    path = write_csv(tmp_path / "test.csv", rows, ["input", "output", "label"])
    report = check_dataset(path, "test", spec)
    assert not report.ok
    assert codes(report) == ["missing-column"]
    assert str(report.findings[0]).startswith(f"{path}:1:context: error: missing required column 'context'")


def test_check_dataset_missing_column_hints_at_case(tmp_path: Path, spec: MetricSpec) -> None:
    path = write_csv(tmp_path / "test.csv", make_rows(150, 150), ["input", "output", "context", "Label"])
    finding = only(check_dataset(path, "test", spec), "missing-column")
    assert "'Label'" in finding.message and "case-sensitive" in finding.message


def test_check_dataset_input_column_is_optional(tmp_path: Path, spec: MetricSpec) -> None:
    absent = write_csv(tmp_path / "absent.csv", [r[1:] for r in make_rows(150, 150)], HEADER[1:])
    empty = write_csv(tmp_path / "empty.csv", [["  ", *r[1:]] for r in make_rows(150, 150)])
    assert check_dataset(absent, "test", spec).findings == []
    assert check_dataset(empty, "test", spec).findings == []


def test_check_dataset_extra_columns_are_allowed(tmp_path: Path, spec: MetricSpec) -> None:
    rows = [[*r, "because", "0.7"] for r in make_rows(150, 150)]
    path = write_csv(tmp_path / "test.csv", rows, [*HEADER, "explanation", "score_ragas"])
    assert check_dataset(path, "test", spec).findings == []


def test_check_dataset_too_few_rows_is_error(tmp_path: Path, spec: MetricSpec) -> None:
    path = write_csv(tmp_path / "test.csv", make_rows(70, 70))
    report = check_dataset(path, "test", spec)
    assert "too-few-rows" in codes(report)
    assert "140 rows" in only(report, "too-few-rows").message


def test_check_dataset_too_few_per_class_names_class_and_count(tmp_path: Path, spec: MetricSpec) -> None:
    path = write_csv(tmp_path / "test.csv", make_rows(80, 80))
    report = check_dataset(path, "test", spec)
    per_class = [f for f in report.findings if f.code == "too-few-per-class"]
    assert [f.severity for f in per_class] == [Severity.ERROR, Severity.ERROR]
    assert {f.message.split(" has ")[0] for f in per_class} == {"class 'supported'", "class 'hallucinated'"}
    assert all("80 rows" in f.message for f in per_class)
    assert only(report, "row-count").severity is Severity.WARNING  # 160 < 300 recommended
    assert "too-few-rows" not in codes(report)


def test_check_dataset_one_small_class_is_error(tmp_path: Path, spec: MetricSpec) -> None:
    path = write_csv(tmp_path / "test.csv", make_rows(220, 90))
    report = check_dataset(path, "test", spec)
    assert codes(report) == ["too-few-per-class"]
    assert "class 'hallucinated' has 90 rows" in report.findings[0].message


@pytest.mark.parametrize("per_class", [110, 300])
def test_check_dataset_test_size_outside_recommendation_warns(
    tmp_path: Path, spec: MetricSpec, per_class: int
) -> None:
    path = write_csv(tmp_path / "test.csv", make_rows(per_class, per_class))
    report = check_dataset(path, "test", spec)
    assert codes(report) == ["row-count"]
    assert report.ok
    assert "300-500" in report.findings[0].message


def test_check_dataset_small_train_set_warns(tmp_path: Path, spec: MetricSpec) -> None:
    path = write_csv(tmp_path / "train.csv", make_rows(999, 1000))
    report = check_dataset(path, "train", spec)
    assert codes(report) == ["row-count"]
    assert report.ok
    assert "1,999 rows" in report.findings[0].message


def test_check_dataset_unbalanced_train_set_warns_with_shares(tmp_path: Path, spec: MetricSpec) -> None:
    path = write_csv(tmp_path / "train.csv", make_rows(1400, 600))
    finding = only(check_dataset(path, "train", spec), "class-imbalance")
    assert finding.severity is Severity.WARNING
    assert "hallucinated 30.0%" in finding.message and "supported 70.0%" in finding.message


def test_check_dataset_balance_within_tolerance_passes(tmp_path: Path, spec: MetricSpec) -> None:
    path = write_csv(tmp_path / "train.csv", make_rows(1200, 800))  # 60/40: exactly at tolerance
    assert check_dataset(path, "train", spec).findings == []


def test_check_dataset_custom_rules_change_thresholds(tmp_path: Path, spec: MetricSpec) -> None:
    path = write_csv(tmp_path / "test.csv", make_rows(10, 10))
    rules = DatasetRules(test_min_rows=20, test_recommended=(20, 40), test_min_per_class=10)
    assert check_dataset(path, "test", spec, rules=rules).findings == []


def test_check_dataset_unknown_label_is_error_per_row(tmp_path: Path, spec: MetricSpec) -> None:
    rows = make_rows(150, 150)
    rows[3][3], rows[7][3] = "grounded", "maybe"
    report = check_dataset(path := write_csv(tmp_path / "test.csv", rows), "test", spec)
    unknown = [f for f in report.findings if f.code == "unknown-label"]
    assert [str(f) for f in unknown] == [
        f"{path}:5:label: error: label 'grounded' is not one of 'hallucinated', 'supported'",
        f"{path}:9:label: error: label 'maybe' is not one of 'hallucinated', 'supported'",
    ]


@pytest.mark.parametrize(
    ("value", "hint"),
    [("Supported", "labels are case-sensitive"), (" supported ", "remove the spaces around it")],
)
def test_check_dataset_unknown_label_hints_near_miss(
    tmp_path: Path, spec: MetricSpec, value: str, hint: str
) -> None:
    rows = make_rows(150, 150)
    rows[0][3] = value
    finding = only(check_dataset(write_csv(tmp_path / "test.csv", rows), "test", spec), "unknown-label")
    assert "did you mean 'supported'?" in finding.message and hint in finding.message


def test_check_dataset_empty_cell_is_error_per_row_and_column(tmp_path: Path, spec: MetricSpec) -> None:
    rows = make_rows(150, 150)
    rows[0][2], rows[1][1], rows[1][3] = "   ", "", "\t"
    report = check_dataset(path := write_csv(tmp_path / "test.csv", rows), "test", spec)
    empty = [str(f) for f in report.findings if f.code == "empty-cell"]
    assert empty == [
        f"{path}:2:context: error: the 'context' cell is empty",
        f"{path}:3:output: error: the 'output' cell is empty",
        f"{path}:3:label: error: the 'label' cell is empty",
    ]
    assert report.label_counts == {"hallucinated": 150, "supported": 148}


def test_check_dataset_duplicate_row_warns_naming_earlier_row(tmp_path: Path, spec: MetricSpec) -> None:
    rows = make_rows(150, 150)
    rows.append([" " + rows[4][0], rows[4][1] + " ", *rows[4][2:]])  # same item up to whitespace
    report = check_dataset(path := write_csv(tmp_path / "test.csv", rows), "test", spec)
    assert codes(report) == ["duplicate-row"]
    assert str(report.findings[0]).startswith(f"{path}:302: warning: duplicate of row 6")
    assert report.ok


def test_check_dataset_conflicting_labels_is_error(tmp_path: Path, spec: MetricSpec) -> None:
    rows = make_rows(150, 150)
    flipped = "hallucinated" if rows[0][3] == "supported" else "supported"
    rows.append([*rows[0][:3], flipped])
    report = check_dataset(path := write_csv(tmp_path / "test.csv", rows), "test", spec)
    finding = only(report, "conflicting-label")
    fields = ", ".join(f.value for f in spec.fields)
    assert str(finding).startswith(f"{path}:302:label: error: same {fields} as row 2")
    assert f"labelled {flipped!r} here" in finding.message


def test_check_dataset_overlap_with_against_is_error_naming_both_rows(
    tmp_path: Path, spec: MetricSpec
) -> None:
    train_rows = make_rows(1000, 1000, start=1000)
    test_rows = make_rows(150, 150)
    train_rows[9] = [f"  {test_rows[20][0]}", *test_rows[20][1:3], "hallucinated"]  # label differs
    train = write_csv(tmp_path / "train.csv", train_rows)
    test = write_csv(tmp_path / "test.csv", test_rows)
    report = check_dataset(test, "test", spec, against=train)
    finding = only(report, "overlap-with-other")
    fields = ", ".join(f.value for f in spec.fields)
    assert str(finding).startswith(f"{test}:22: error: same {fields} as row 11 of {train}")
    assert not report.ok


def test_check_dataset_broken_against_file_is_reported(tmp_path: Path, spec: MetricSpec) -> None:
    test = write_csv(tmp_path / "test.csv", make_rows(150, 150))
    report = check_dataset(test, "test", spec, against=tmp_path / "nope.csv")
    assert [(f.file, f.code) for f in report.findings] == [(tmp_path / "nope.csv", "missing-file")]


def test_check_dataset_accepts_utf8_bom(tmp_path: Path, spec: MetricSpec) -> None:
    path = write_csv(tmp_path / "test.csv", make_rows(150, 150))
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert check_dataset(path, "test", spec).findings == []


def test_check_dataset_latin1_file_names_line_and_offset(tmp_path: Path, spec: MetricSpec) -> None:
    path = tmp_path / "test.csv"
    path.write_bytes("input,output,context,label\nq,o,c,supported\nq,caf\xe9,c,supported\n".encode("latin-1"))
    report = check_dataset(path, "test", spec)
    assert codes(report) == ["encoding"]
    text = str(report.findings[0])
    assert text.startswith(f"{path}:3: error: not UTF-8: byte 0xE9 at byte offset 48 (line 3)")
    assert "Windows-1252 / Latin-1" in text and "'é'" in text


def test_check_dataset_utf16_file_is_encoding_error(tmp_path: Path, spec: MetricSpec) -> None:
    path = tmp_path / "test.csv"
    path.write_bytes("input,output,context,label\n".encode("utf-16"))
    assert codes(check_dataset(path, "test", spec)) == ["encoding"]


def test_check_dataset_nul_bytes_are_not_csv(tmp_path: Path, spec: MetricSpec) -> None:
    head = write_csv(tmp_path / "head.csv", make_rows(150, 150)).read_bytes()
    path = tmp_path / "test.csv"
    path.write_bytes(head + b"q,o\x00\x01,c,supported\n")  # beyond the first 4 KiB
    report = check_dataset(path, "test", spec)
    assert codes(report) == ["not-csv"]
    assert report.findings[0].row == 302
    assert "NUL byte" in report.findings[0].message


def test_check_dataset_binary_file_is_not_csv(tmp_path: Path, spec: MetricSpec) -> None:
    path = tmp_path / "test.csv"
    path.write_bytes(bytes(range(256)) * 4)
    assert str(check_dataset(path, "test", spec).findings[0]).startswith(f"{path}: error: binary content")


def test_check_dataset_ragged_row_is_error(tmp_path: Path, spec: MetricSpec) -> None:
    rows: list[list[str]] = [*make_rows(150, 150)]
    rows[5] = [*rows[5], "stray"]
    report = check_dataset(path := write_csv(tmp_path / "test.csv", rows), "test", spec)
    finding = only(report, "ragged-row")
    assert str(finding) == (
        f"{path}:7: error: the row has 5 fields but the header has 4: "
        "a value containing a comma must be in double quotes"
    )
    assert report.rows == 300


def test_check_dataset_unterminated_quote_is_error(tmp_path: Path, spec: MetricSpec) -> None:
    path = write_csv(tmp_path / "test.csv", make_rows(150, 150))
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[3] = 'q,"o,c,supported\n'
    path.write_text("".join(lines), encoding="utf-8")
    report = check_dataset(path, "test", spec)
    assert codes(report) == ["not-csv"]
    assert str(report.findings[0]).startswith(f"{path}:4: error: a quoted value in this row (from line 4)")


def test_check_dataset_quoted_newline_keeps_spreadsheet_row_numbers(tmp_path: Path, spec: MetricSpec) -> None:
    rows = make_rows(150, 150)
    rows[0][2] = "a passage\nover two lines"
    rows[2][3] = "nope"
    report = check_dataset(path := write_csv(tmp_path / "test.csv", rows), "test", spec)
    assert str(only(report, "unknown-label")).startswith(f"{path}:4:label:")


def test_check_dataset_empty_file_is_error(tmp_path: Path, spec: MetricSpec) -> None:
    path = tmp_path / "test.csv"
    path.write_bytes(b"")
    report = check_dataset(path, "test", spec)
    assert codes(report) == ["not-csv"]
    assert "the file is empty" in report.findings[0].message


def test_check_dataset_header_only_has_too_few_rows(tmp_path: Path, spec: MetricSpec) -> None:
    path = write_csv(tmp_path / "train.csv", [])
    assert codes(check_dataset(path, "train", spec)) == ["too-few-rows"]


def test_check_dataset_missing_file_is_error(tmp_path: Path, spec: MetricSpec) -> None:
    report = check_dataset(tmp_path / "nope.csv", "test", spec)
    assert [str(f) for f in report.findings] == [f"{tmp_path / 'nope.csv'}: error: the file does not exist"]
    assert report.rows == 0


def test_check_dataset_directory_is_error(tmp_path: Path, spec: MetricSpec) -> None:
    report = check_dataset(tmp_path, "test", spec)
    assert codes(report) == ["unreadable"]
    assert "directory" in report.findings[0].message


def test_check_dataset_semicolon_file_is_not_csv(tmp_path: Path, spec: MetricSpec) -> None:
    path = tmp_path / "test.csv"
    path.write_text("input;output;context;label\nq;o;c;supported\n", encoding="utf-8")
    report = check_dataset(path, "test", spec)
    assert codes(report) == ["not-csv"]
    assert "semicolons" in report.findings[0].message


def test_check_dataset_duplicate_column_is_error(tmp_path: Path, spec: MetricSpec) -> None:
    rows = [[*r, r[3]] for r in make_rows(150, 150)]
    path = write_csv(tmp_path / "test.csv", rows, [*HEADER, "label"])
    assert str(only(check_dataset(path, "test", spec), "duplicate-column")).startswith(f"{path}:1:label:")


def test_check_dataset_caps_findings_per_code(tmp_path: Path, spec: MetricSpec) -> None:
    rows = make_rows(150, 150)
    for row in rows[:80]:
        row[2] = ""
    report = check_dataset(write_csv(tmp_path / "test.csv", rows), "test", spec)
    empty = [f for f in report.findings if f.code == "empty-cell"]
    assert len(empty) == MAX_FINDINGS_PER_CODE + 1
    assert empty[-1].row is None
    assert empty[-1].message == "... and 30 more rows with the same problem (empty-cell)"


def test_check_dataset_rejects_unknown_kind(tmp_path: Path, spec: MetricSpec) -> None:
    with pytest.raises(ValueError, match="kind"):
        check_dataset(tmp_path / "x.csv", "eval", spec)  # type: ignore[arg-type]


def test_finding_str_omits_missing_parts() -> None:
    path = Path("data/test.csv")
    assert str(Finding(Severity.ERROR, path, 12, "label", "x", "m")) == "data/test.csv:12:label: error: m"
    assert str(Finding(Severity.WARNING, path, 12, None, "x", "m")) == "data/test.csv:12: warning: m"
    assert str(Finding(Severity.ERROR, path, None, None, "x", "m")) == "data/test.csv: error: m"


def test_data_check_report_to_dict_is_json(tmp_path: Path, spec: MetricSpec) -> None:
    path = write_csv(tmp_path / "test.csv", make_rows(80, 80))
    data = json.loads(json.dumps(check_dataset(path, "test", spec).to_dict()))
    assert data["ok"] is False and data["kind"] == "test" and data["rows"] == 160
    assert data["label_counts"] == {"hallucinated": 80, "supported": 80}
    assert {
        "severity": "error",
        "file": str(path),
        "row": None,
        "column": "label",
        "code": "too-few-per-class",
    }.items() <= data["findings"][1].items()


def test_read_labelled_csv_returns_rows_with_all_fields_and_extras(tmp_path: Path, spec: MetricSpec) -> None:
    rows = [[o, c, label, "0.9"] for _, o, c, label in make_rows(3, 2)]
    path = write_csv(tmp_path / "small.csv", rows, ["output", "context", "label", "score_x"])
    read = read_labelled_csv(path, spec)
    assert len(read) == 5  # size rules belong to check_dataset
    assert read[0] == {
        "input": "",
        "output": "answer 0",
        "context": "passage 0 about topic 0",
        "label": "supported",
        "score_x": "0.9",
    }


def test_read_labelled_csv_raises_naming_row_and_column(tmp_path: Path, spec: MetricSpec) -> None:
    rows = make_rows(3, 2)
    rows[1][3], rows[3][2] = "Supported", ""
    path = write_csv(tmp_path / "small.csv", rows)
    with pytest.raises(DataFileError) as caught:
        read_labelled_csv(path, spec)
    assert str(caught.value).startswith(f"{path}:3:label: error: label 'Supported' is not one of")
    assert "and 1 more errors" in str(caught.value)


def test_read_labelled_csv_raises_on_file_problem(tmp_path: Path, spec: MetricSpec) -> None:
    with pytest.raises(DataFileError, match="does not exist"):
        read_labelled_csv(tmp_path / "missing.csv", spec)
