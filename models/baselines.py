"""Trivial scorers that every quality figure is reported beside.

A metric model earns its place only where it beats these: the length of the response (in
HaluEval QA the hallucinated answer is longer 96% of the time), plain word overlap between the
response and its context, and the count of response content words missing from the context
(which mixes "unsupported" with "long"). Higher score = more likely the positive label.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from service.runtime.evidence import EvidenceFeature, content_words, evidence_features, words


def length_baseline_scores(rows: Iterable[Mapping[str, str]]) -> np.ndarray:
    """Length only: the shorter the output (in words), the more likely supported."""
    return np.array([-float(len(words(r["output"]))) for r in rows], dtype=np.float64)


def word_overlap_scores(rows: Iterable[Mapping[str, str]]) -> np.ndarray:
    """Share of the output's distinct content words found in the context (1.0 if it has none)."""
    scores = []
    for r in rows:
        out = set(content_words(r["output"]))
        ctx = set(words(r.get("context") or ""))
        scores.append(len(out & ctx) / len(out) if out else 1.0)
    return np.array(scores, dtype=np.float64)


def missing_words_scores(rows: Iterable[Mapping[str, str]]) -> np.ndarray:
    """Minus the count of the output's distinct content words absent from the context."""
    return np.array(
        [
            -evidence_features(r["output"], r.get("context") or "")[EvidenceFeature.N_MISSING_CONTENT]
            for r in rows
        ],
        dtype=np.float64,
    )
