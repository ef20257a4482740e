"""models.threshold: one threshold for every task of the eval split."""

from __future__ import annotations

import pytest

from models.threshold import choose_threshold


def test_threshold_serves_the_worst_task_not_the_largest() -> None:
    # task a (many rows) separates at 0.5; task b's scores sit lower and separate at 0.25.
    a_scores = [0.1, 0.2, 0.3, 0.4] * 5 + [0.6, 0.7, 0.8, 0.9] * 5
    a_truth = [False] * 20 + [True] * 20
    b_scores = [0.1, 0.15, 0.3, 0.35]
    b_truth = [False, False, True, True]
    choice = choose_threshold(a_scores + b_scores, a_truth + b_truth, ["a"] * 40 + ["b"] * 4)
    # 0.25 and 0.325 both leave the worst task at 0.75; 0.25 has the higher mean (0.875)
    assert choice.value == pytest.approx(0.25)
    assert choice.accuracy_by_group == {"a": 0.75, "b": 1.0}
    assert choice.rows_by_group == {"a": 40, "b": 4}
    assert "lowest per-task accuracy" in choice.rule


def test_threshold_prefers_the_middle_among_equals() -> None:
    choice = choose_threshold([0.0, 1.0], [False, True], ["x", "x"])
    assert choice.value == pytest.approx(0.5)
    assert choice.accuracy_by_group == {"x": 1.0}


def test_threshold_needs_both_labels_and_aligned_inputs() -> None:
    with pytest.raises(ValueError, match="both labels"):
        choose_threshold([0.2, 0.3], [True, True], ["x", "x"])
    with pytest.raises(ValueError, match="as many"):
        choose_threshold([0.2, 0.3], [True, False], ["x"])
