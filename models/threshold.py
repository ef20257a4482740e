"""Choosing a metric's decision threshold on held-out rows, so one verdict holds across domains.

A threshold fitted on one domain's rows drifts on another when the score's scale differs by
domain. The rule here looks at every domain (task) in the eval split at once: the threshold is
the one whose *worst* per-domain accuracy is highest (ties go to the higher mean accuracy, then
to the threshold nearest 0.5), so no domain is sacrificed to the largest one. Each domain's rows
are balanced by label in our eval sets, so accuracy there equals balanced accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

RULE = (
    "maximise the lowest per-task accuracy on the eval split (ties: higher mean accuracy, then nearest 0.5)"
)


@dataclass(frozen=True)
class ThresholdChoice:
    value: float
    rule: str
    accuracy_by_group: dict[str, float]
    rows_by_group: dict[str, int]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def choose_threshold(
    scores: Sequence[float], positives: Sequence[bool], groups: Sequence[str]
) -> ThresholdChoice:
    """The threshold (a midpoint between two adjacent distinct scores) that best serves every group."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positives, dtype=bool)
    g = np.asarray(groups)
    if len(s) == 0 or not (len(s) == len(y) == len(g)):
        raise ValueError("choose_threshold needs as many labels and groups as scores, and at least one")
    if y.all() or not y.any():
        raise ValueError("choosing a threshold needs rows of both labels")
    distinct = np.unique(s)
    candidates = np.concatenate(
        [[distinct[0] - 1e-9], (distinct[:-1] + distinct[1:]) / 2, [distinct[-1] + 1e-9]]
    )
    names = sorted(set(g.tolist()))
    # accuracy[k, j]: accuracy of group k at candidate j (passed = score >= threshold)
    accuracy = np.stack(
        [((s[g == name][None, :] >= candidates[:, None]) == y[g == name]).mean(axis=1) for name in names]
    )
    worst, mean = accuracy.min(axis=0), accuracy.mean(axis=0)
    best = max(
        range(len(candidates)),
        key=lambda j: (round(worst[j], 12), round(mean[j], 12), -abs(candidates[j] - 0.5)),
    )
    return ThresholdChoice(
        value=float(candidates[best]),
        rule=RULE,
        accuracy_by_group={name: float(accuracy[k, best]) for k, name in enumerate(names)},
        rows_by_group={name: int((g == name).sum()) for name in names},
    )
