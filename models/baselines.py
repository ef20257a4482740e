"""Trivial scorers that every quality figure is reported beside.

A metric model earns its place only where it beats these: the length of the response (in
HaluEval QA the hallucinated answer is longer 96% of the time) and plain word overlap between
the response and its context. Higher score = more likely the positive ("supported") label.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import numpy as np

_WORD = re.compile(r"[A-Za-z0-9]+(?:['\u2019][A-Za-z]+)?")
# Function words that say nothing about support; small and fixed so the baseline is reproducible.
STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    s t don""".split()
)


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits; an apostrophe suffix stays attached)."""
    return [w.lower() for w in _WORD.findall(text)]


def content_words(text: str) -> list[str]:
    """Words of `text` that are not stopwords (order kept, duplicates kept)."""
    return [w for w in words(text) if w not in STOPWORDS]


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
