"""Fitting an evidence combiner: the encoder's logit and evidence features -> logistic regression.

The weights are learned on held-out rows (never the training rows the encoder saw), so how much
a missing word counts against the encoder is measured, not guessed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression

from service.runtime.evidence import EPSILON, EvidenceCombiner, EvidenceFeature, evidence_features


def fit_combiner(
    encoder_scores: Sequence[float],
    rows: Sequence[Mapping[str, str]],
    positive_label: str,
    features: Sequence[EvidenceFeature],
    *,
    fitted_on: str,
) -> EvidenceCombiner:
    """Logistic regression of the label on [logit(p_encoder), *features] (L2, C=1)."""
    if not features:
        raise ValueError("name at least one evidence feature to combine")
    truth = np.array([r["label"] == positive_label for r in rows])
    if truth.all() or not truth.any():
        raise ValueError("fitting a combiner needs rows of both classes")
    table = np.array(
        [
            [_logit(p), *(evidence_features(r["output"], r.get("context") or "")[f] for f in features)]
            for p, r in zip(encoder_scores, rows, strict=True)
        ]
    )
    fit = LogisticRegression(C=1.0, max_iter=1000).fit(table, truth)
    weights = fit.coef_[0]
    return EvidenceCombiner(
        model_weight=float(weights[0]),
        feature_weights={f: float(w) for f, w in zip(features, weights[1:], strict=True)},
        bias=float(fit.intercept_[0]),
        fitted_on=fitted_on,
    )


def _logit(p: float) -> float:
    p = min(max(p, EPSILON), 1 - EPSILON)
    return math.log(p / (1 - p))
