"""Fitting an evidence combiner: the encoder's logit and evidence features -> logistic regression.

The weights are learned on held-out rows (never the training rows the encoder saw), so how much
a missing word counts against the encoder is measured, not guessed. The fit is constrained by
what each input means: an evidence feature that measures something the context lacks may only
count against support (<= 0); the encoder's weight, and that of a feature measuring what the
context states (`FOR_SUPPORT`), may only count for it (>= 0). Unconstrained, correlated features
trade signs to fit one eval split's quirks (e.g. a positive weight on missing names that a second
share cancels), and that does not transfer to other domains. scikit-learn's LogisticRegression
has no bounds, so the L2-regularised log-loss is minimised with SciPy's L-BFGS-B, which takes
them directly.

Items the encoder read in several windows (long documents) get weights of their own when asked
(`windowed_features`), fitted on the eval rows read that way: there the encoder judged pieces of
the context, and one set of weights for both kinds of item let the short contexts, the majority,
decide how far the encoder is trusted on the long ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.optimize import minimize

from service.runtime.evidence import (
    EPSILON,
    FOR_SUPPORT,
    EvidenceCombiner,
    EvidenceFeature,
    LogisticWeights,
    evidence_features,
)

L2 = 1.0  # inverse regularisation strength, as scikit-learn's C (per row)
MIN_WINDOWED_ROWS_PER_CLASS = 50  # fewer windowed eval rows than this: no weights of their own


def fit_combiner(
    encoder_scores: Sequence[float],
    rows: Sequence[Mapping[str, str]],
    positive_label: str,
    features: Sequence[EvidenceFeature],
    *,
    fitted_on: str,
    groups: Sequence[str] | None = None,
    windows: Sequence[int] | None = None,
    windowed_features: Sequence[EvidenceFeature] = (),
) -> EvidenceCombiner:
    """Sign-constrained logistic regression of the label on [logit(p_encoder), *features].

    With `groups` (each row's task), every group weighs the same in the fit whatever its size,
    as the threshold's rule does: a small group (e.g. full-sentence RAG-style pairs) is not
    outvoted by the largest one. With `windows` (how many windows each row was read in) and
    `windowed_features`, rows read in one window fit the main weights and rows read in several
    fit `windowed` (on `windowed_features`), provided each class has enough of them; when not
    (an eval split without long documents, as when summarization is left out), every row fits
    the one set of weights and `fitted_on` says so.
    """
    if not features:
        raise ValueError("name at least one evidence feature to combine")
    single = list(range(len(rows)))
    several: list[int] = []
    if windowed_features:
        if windows is None:
            raise ValueError("windowed features need each row's number of windows")
        several = [i for i, n in enumerate(windows) if n > 1]
        classes = [sum((rows[i]["label"] == positive_label) == c for i in several) for c in (True, False)]
        if min(classes) < MIN_WINDOWED_ROWS_PER_CLASS:
            fitted_on += (
                f"; one set of weights for all items: windowed ones need {MIN_WINDOWED_ROWS_PER_CLASS} eval"
                f" rows of each label read in several windows, and there were {classes[0]} and {classes[1]}"
            )
            several = []
        else:
            single = [i for i, n in enumerate(windows) if n <= 1]
    main = _fit(encoder_scores, rows, positive_label, features, groups, single)
    windowed = (
        _fit(encoder_scores, rows, positive_label, windowed_features, groups, several) if several else None
    )
    return EvidenceCombiner(**main.model_dump(), windowed=windowed, fitted_on=fitted_on)


def _fit(
    encoder_scores: Sequence[float],
    rows: Sequence[Mapping[str, str]],
    positive_label: str,
    features: Sequence[EvidenceFeature],
    groups: Sequence[str] | None,
    subset: Sequence[int],
) -> LogisticWeights:
    """The weights fitted on the rows at `subset`, every group of them weighing the same."""
    truth = np.array([rows[i]["label"] == positive_label for i in subset], dtype=np.float64)
    if truth.all() or not truth.any():
        raise ValueError("fitting a combiner needs rows of both classes")
    table = np.array([[_logit(encoder_scores[i]), *_feature_row(rows[i], features)] for i in subset])
    if groups is None:
        row_weights = np.ones(len(truth))
    else:
        names = [groups[i] for i in subset]
        counts = {g: names.count(g) for g in set(names)}
        row_weights = np.array([len(names) / (len(counts) * counts[g]) for g in names])
    weights, bias = _constrained_logistic(table, truth, row_weights, [f in FOR_SUPPORT for f in features])
    return LogisticWeights(
        model_weight=float(weights[0]),
        feature_weights={f: float(w) for f, w in zip(features, weights[1:], strict=True)},
        bias=float(bias),
    )


def _constrained_logistic(
    x: np.ndarray, y: np.ndarray, r: np.ndarray, for_support: Sequence[bool]
) -> tuple[np.ndarray, float]:
    """Weights (the first, the encoder's, >= 0; each feature's >= 0 where `for_support`, else <= 0)
    and an intercept minimising the row-weighted (`r`, mean 1) log-loss + L2 / (2 C n)."""
    n, d = x.shape

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ w[:d] + w[d]
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))
        value = -np.mean(r * (y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12)))
        value += 0.5 * float(w[:d] @ w[:d]) / (L2 * n)
        grad = np.append(x.T @ (r * (p - y)) / n + w[:d] / (L2 * n), np.mean(r * (p - y)))
        return float(value), grad

    bounds = [(0.0, None)] + [(0.0, None) if up else (None, 0.0) for up in for_support] + [(None, None)]
    fit = minimize(loss, np.zeros(d + 1), jac=True, bounds=bounds, method="L-BFGS-B")
    if not fit.success:
        raise ValueError(f"fitting the evidence combiner did not converge: {fit.message}")
    return fit.x[:d], float(fit.x[d])


def _feature_row(row: Mapping[str, str], features: Sequence[EvidenceFeature]) -> list[float]:
    """The row's features in the order of `features`, computed once."""
    found = evidence_features(row["output"], row.get("context") or "", features)
    return [found[f] for f in features]


def _logit(p: float) -> float:
    p = min(max(p, EPSILON), 1 - EPSILON)
    return math.log(p / (1 - p))
