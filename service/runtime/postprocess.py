"""Logits -> the metric's answer: the positive label's probability, a label and a verdict."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.runtime.spec import MetricSpec, WindowAggregation


@dataclass(frozen=True)
class ItemScore:
    score: float  # probability of the metric's positive ("good") label
    label: str
    passed: bool  # score >= the metric's threshold
    windows: int
    truncated_tokens: int


def probabilities(logits: np.ndarray, activation: str) -> np.ndarray:
    """Row-wise softmax (single-label) or element-wise sigmoid (multi-label), in float64."""
    z = logits.astype(np.float64)
    if activation == "sigmoid":
        sig: np.ndarray = 1.0 / (1.0 + np.exp(-z))
        return sig
    e = np.exp(z - z.max(axis=1, keepdims=True))
    soft: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return soft


def aggregate_windows(probs: np.ndarray, positive: int, how: WindowAggregation) -> np.ndarray:
    """One probability row for an item scored in several windows.

    max/min keep the row of the window whose positive score is highest/lowest, so the label
    comes from the window that decided; mean averages the rows.
    """
    if how == WindowAggregation.MEAN:
        mean: np.ndarray = probs.mean(axis=0)
        return mean
    column = probs[:, positive]
    chosen = int(np.argmax(column) if how == WindowAggregation.MAX else np.argmin(column))
    row: np.ndarray = probs[chosen]
    return row


def aggregate_claims(
    probs: np.ndarray, claim_windows: Sequence[int], positive: int, how: WindowAggregation
) -> np.ndarray:
    """One row for an item scored claim by claim: each claim's windows aggregated, the weakest kept.

    A response is as faithful as its least supported claim, so the claim whose aggregated
    positive score is lowest gives the item's row.
    """
    rows = []
    start = 0
    for count in claim_windows:
        rows.append(aggregate_windows(probs[start : start + count], positive, how))
        start += count
    if start != len(probs):
        raise ValueError(f"{len(probs)} window rows for claims of {sum(claim_windows)} windows")
    weakest: np.ndarray = min(rows, key=lambda row: float(row[positive]))
    return weakest


def decide(probs: np.ndarray, spec: MetricSpec, *, windows: int, truncated_tokens: int) -> ItemScore:
    """Verdict against the threshold; the label is the positive one iff the item passed."""
    positive = spec.positive_index
    score = float(probs[positive])
    passed = score >= spec.threshold
    if passed:
        label = spec.positive_label
    else:
        others = [i for i in range(len(spec.labels)) if i != positive]
        label = spec.labels[max(others, key=lambda i: probs[i])]
    return ItemScore(
        score=score, label=label, passed=passed, windows=windows, truncated_tokens=truncated_tokens
    )
