"""models.figures and models.csv_reading.read_rows: one way to compute each figure, one CSV reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.csv_reading import CsvFileError, read_rows
from models.figures import macro_f1, positive_f1, roc_auc


def test_roc_auc_counts_ties_half_and_needs_both_classes() -> None:
    # positives 0.9, 0.5; negatives 0.5, 0.1: pairs (0.9>0.5) (0.9>0.1) (0.5=0.5 half) (0.5>0.1)
    assert roc_auc([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1]) == pytest.approx(3.5 / 4)
    assert roc_auc([True, False], [0.2, 0.8]) == 0.0
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([1, 1], [0.2, 0.8])


def test_f1_figures() -> None:
    truth = [True, True, False, False]
    predicted = [True, False, False, False]
    assert positive_f1(truth, predicted) == pytest.approx(2 / 3)  # tp 1, fp 0, fn 1
    assert macro_f1(truth, predicted) == pytest.approx((2 / 3 + 0.8) / 2)  # negatives: tp 2, fp 1
    assert positive_f1([False, False], [False, False]) == 0.0
    assert macro_f1([True, True], [True, True]) == pytest.approx(0.5)  # the absent class counts 0


def test_read_rows_reads_a_header_and_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_bytes(b'\xef\xbb\xbfinput,output\n"a, quoted",b\n"two\nlines",c\n')
    assert read_rows(path) == [{"input": "a, quoted", "output": "b"}, {"input": "two\nlines", "output": "c"}]
    path.write_text("input,output\nx\n", encoding="utf-8")
    with pytest.raises(CsvFileError, match="row 2 has 1 values for 2 columns"):
        read_rows(path)
    path.write_bytes(b"")
    with pytest.raises(CsvFileError, match="empty"):
        read_rows(path)
    with pytest.raises(CsvFileError, match="does not exist"):
        read_rows(tmp_path / "missing.csv")
