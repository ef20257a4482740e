"""The classification figures every report, check and training log uses, computed one way.

ROC-AUC and F1 used to be computed three ways (by hand in the HaluEval builder and in
fine-tuning, by scikit-learn in evaluation); a figure with one name is now one number wherever
it is printed. scikit-learn comes with the toolkit's `eval` extra (and `export`, which pulls it);
it is imported when a figure is computed, so that modules which only name these functions
(`models.finetune`, read by the CLI's parser) load in the serving install, which lacks it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def roc_auc(
    labels: Sequence[int] | Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> float:
    """ROC-AUC of `scores` for binary `labels` (true / 1 = positive); ties count half."""
    y = np.asarray(labels, dtype=bool)
    if y.all() or not y.any():
        raise ValueError("ROC-AUC needs both classes")
    from sklearn import metrics as skm

    return float(skm.roc_auc_score(y, np.asarray(scores, dtype=np.float64)))


def macro_f1(truth: Sequence[bool] | np.ndarray, predicted: Sequence[bool] | np.ndarray) -> float:
    """Mean of both classes' F1 (a class never predicted nor present counts 0)."""
    t, p = np.asarray(truth, dtype=bool), np.asarray(predicted, dtype=bool)
    from sklearn import metrics as skm

    return float(skm.f1_score(t, p, labels=[True, False], average="macro", zero_division=0))


def positive_f1(truth: Sequence[bool] | np.ndarray, predicted: Sequence[bool] | np.ndarray) -> float:
    """F1 of the positive class (0 when it is never predicted and never true)."""
    t, p = np.asarray(truth, dtype=bool), np.asarray(predicted, dtype=bool)
    from sklearn import metrics as skm

    return float(skm.f1_score(t, p, zero_division=0))
