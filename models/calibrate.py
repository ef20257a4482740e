"""A metric's threshold fitted to the customer's labelled rows (`lunaserve calibrate`).

A preset's threshold was chosen on its own eval data; on a customer's data its scores sit
elsewhere (version 1's 0.5 was a coin flip out of HaluEval QA). Calibration scores the customer's
test set through the runtime (as served), fits the threshold for the objective the customer
chooses, says how stable that choice is (bootstrap), and writes a new repository version that
shares the model files and carries the threshold with its provenance. "Use the preset as is" then
means "as is, with your threshold".

Objectives (the "bad" class is every label other than the spec's positive one; an item is
flagged when its score is below the threshold):
- `macro_f1`: the threshold with the best macro-F1.
- `bad_precision:P`: of the thresholds whose flags are right at least P of the time, the one
  that flags the most bad rows (a guardrail that must not block good answers).
- `bad_recall:R`: of the thresholds that flag at least R of the bad rows, the one whose flags
  are most often right (a guardrail that must catch most bad answers).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from models.data_check import read_labelled_csv
from models.repository import publish_entry
from service.runtime.artifact import MODEL_NAME, TOKENIZER_NAME, read_manifest
from service.runtime.classifier import MetricModel
from service.runtime.encoding import ItemTooLongError
from service.runtime.postprocess import ItemScore
from service.runtime.spec import MetricSpec

BOOTSTRAP_SAMPLES = 1000
INTERVAL = (5.0, 95.0)  # percentiles: a 90% interval


class CalibrationError(ValueError):
    """The rows cannot support the objective (one class only, an unreachable target)."""


@dataclass(frozen=True)
class Objective:
    kind: Literal["macro_f1", "bad_precision", "bad_recall"]
    target: float | None = None

    @classmethod
    def parse(cls, text: str) -> Objective:
        """`macro_f1`, `bad_precision:0.9` or `bad_recall:0.95`."""
        if text == "macro_f1":
            return cls("macro_f1")
        match = re.fullmatch(r"(bad_precision|bad_recall):(0?\.\d+|1(\.0*)?)", text)
        if not match:
            raise CalibrationError(
                f"objective {text!r}: expected macro_f1, bad_precision:P or bad_recall:R with 0 < P, R <= 1"
            )
        target = float(match.group(2))
        if target <= 0:
            raise CalibrationError(f"objective {text!r}: the target must be above 0")
        kind: Literal["bad_precision", "bad_recall"] = match.group(1)  # type: ignore[assignment]
        return cls(kind, target)

    def __str__(self) -> str:
        return self.kind if self.target is None else f"{self.kind}:{self.target:g}"

    def describe(self) -> str:
        if self.kind == "macro_f1":
            return "the threshold with the best macro-F1"
        if self.kind == "bad_precision":
            return (
                f"of the thresholds whose flags are right at least {self.target:g} of the time,"
                " the one that flags the most bad rows"
            )
        return (
            f"of the thresholds that flag at least {self.target:g} of the bad rows,"
            " the one whose flags are most often right"
        )


@dataclass(frozen=True)
class Counts:
    """Per candidate threshold: how many good and bad rows it flags (score below it)."""

    thresholds: np.ndarray
    bad_flagged: np.ndarray
    good_flagged: np.ndarray
    n_bad: int
    n_good: int

    def figures(self) -> dict[str, np.ndarray]:
        tp, fp, fn = self.bad_flagged, self.good_flagged, self.n_bad - self.bad_flagged
        good_tp, good_fp, good_fn = self.n_good - self.good_flagged, fn, self.good_flagged
        flagged = tp + fp
        return {
            "bad_precision": np.divide(tp, flagged, out=np.zeros(len(tp)), where=flagged > 0),
            "bad_recall": tp / self.n_bad,
            "macro_f1": (_f1(tp, fp, fn) + _f1(good_tp, good_fp, good_fn)) / 2,
            "accuracy": (tp + good_tp) / (self.n_bad + self.n_good),
        }


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denominator = 2 * tp + fp + fn
    f1: np.ndarray = np.divide(2 * tp, denominator, out=np.zeros(len(tp)), where=denominator > 0)
    return f1


def count_flags(scores: np.ndarray, good: np.ndarray) -> Counts:
    """Counts at every threshold that changes a decision: midpoints between distinct scores, and
    one below and above them all. Sorting once makes each count a cumulative sum (fast enough
    to refit a thousand bootstrap samples)."""
    order = np.argsort(scores, kind="stable")
    s, bad = scores[order], ~good[order]
    distinct = np.unique(s)
    thresholds = np.concatenate(
        [[distinct[0] - 1e-9], (distinct[:-1] + distinct[1:]) / 2, [distinct[-1] + 1e-9]]
    )
    below = np.searchsorted(s, thresholds, side="left")  # rows flagged at each threshold
    cum_bad = np.concatenate([[0], np.cumsum(bad)])
    bad_flagged = cum_bad[below]
    return Counts(thresholds, bad_flagged, below - bad_flagged, int(bad.sum()), int((~bad).sum()))


def fit(scores: np.ndarray, good: np.ndarray, objective: Objective) -> tuple[float, dict[str, float]]:
    """The threshold for `objective` and the figures it reaches on these rows."""
    if good.all() or not good.any():
        raise CalibrationError("calibration needs rows of both the positive label and the others")
    counts = count_flags(scores, good)
    f = counts.figures()
    if objective.kind == "macro_f1":
        key = np.round(f["macro_f1"], 12)
        best = _best(key, counts.thresholds)
    else:
        assert objective.target is not None
        feasible = f[objective.kind] >= objective.target - 1e-12
        if objective.kind == "bad_precision":
            feasible &= counts.bad_flagged > 0  # flagging nothing is trivially "precise"
        if not feasible.any():
            reached = f[objective.kind].max()
            raise CalibrationError(
                f"no threshold reaches {objective} on these rows (the best is {reached:.3f});"
                " lower the target or add rows"
            )
        other = "bad_recall" if objective.kind == "bad_precision" else "bad_precision"
        key = np.where(feasible, np.round(f[other], 12), -1.0)
        best = _best(key, counts.thresholds)
    return float(counts.thresholds[best]), {name: float(v[best]) for name, v in f.items()}


def _best(key: np.ndarray, thresholds: np.ndarray) -> int:
    """Index of the highest key; ties go to the threshold nearest 0.5 (the least surprising)."""
    top = np.flatnonzero(key == key.max())
    return int(top[np.argmin(np.abs(thresholds[top] - 0.5))])


def bootstrap(
    scores: np.ndarray, good: np.ndarray, objective: Objective, threshold: float, *, samples: int, seed: int
) -> dict[str, Any]:
    """How much the fitted threshold, and the objective's figure at it, move over resampled rows.

    Rows are resampled with replacement within each class (both classes stay, in their counts).
    Samples on which the objective cannot be reached are counted, not hidden.
    """
    rng = np.random.default_rng(seed)
    good_idx, bad_idx = np.flatnonzero(good), np.flatnonzero(~good)
    refits: list[float] = []
    at_threshold: list[float] = []
    unreachable = 0
    name = objective.kind
    for _ in range(samples):
        idx = np.concatenate(
            [
                rng.choice(good_idx, len(good_idx), replace=True),
                rng.choice(bad_idx, len(bad_idx), replace=True),
            ]
        )
        s, g = scores[idx], good[idx]
        at_threshold.append(figures_at(s, g, threshold)[name])
        try:
            refits.append(fit(s, g, objective)[0])
        except CalibrationError:
            unreachable += 1
    lo, hi = INTERVAL
    out: dict[str, Any] = {
        "samples": samples,
        "seed": seed,
        "interval_percentiles": [lo, hi],
        f"{name}_at_threshold": [
            float(np.percentile(at_threshold, lo)),
            float(np.percentile(at_threshold, hi)),
        ],
        "unreachable_samples": unreachable,
    }
    if refits:
        out["threshold"] = [float(np.percentile(refits, lo)), float(np.percentile(refits, hi))]
    return out


def figures_at(scores: np.ndarray, good: np.ndarray, threshold: float) -> dict[str, float]:
    """Bad-class precision and recall, macro-F1 and accuracy at one threshold."""
    flagged = scores < threshold
    counts = Counts(
        np.array([threshold]),
        np.array([int((flagged & ~good).sum())]),
        np.array([int((flagged & good).sum())]),
        int((~good).sum()),
        int(good.sum()),
    )
    return {name: float(v[0]) for name, v in counts.figures().items()}


def score_rows(model: MetricModel, rows: Sequence[dict[str, str]]) -> tuple[np.ndarray, np.ndarray, int]:
    """Scores as served, whether each row is labelled positive, and how many rows were refused."""
    results = model.score(rows)
    kept = [(row, r) for row, r in zip(rows, results, strict=True) if isinstance(r, ItemScore)]
    refused = sum(isinstance(r, ItemTooLongError) for r in results)
    if not kept:
        raise CalibrationError("no row could be scored (every row is longer than the metric accepts)")
    scores = np.array([r.score for _, r in kept])
    good = np.array([row["label"] == model.spec.positive_label for row, _ in kept])
    return scores, good, refused


def next_version(repository: Path, name: str) -> str:
    """One above the highest integer version of `name` in the repository ("1" for a new metric)."""
    folder = repository / name
    if not folder.is_dir():
        return "1"
    versions = [int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()]
    return str(max(versions, default=0) + 1)


@dataclass(frozen=True)
class Calibration:
    folder: Path
    threshold: float
    record: dict[str, Any]


def calibrate(
    entry: Path,
    test_csv: Path,
    objective: Objective,
    *,
    repository: Path | None = None,
    version: str | None = None,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> Calibration:
    """Fit `entry`'s threshold on `test_csv` and publish it as a new version beside `entry`."""
    model = MetricModel.load(entry, check_layout=False)
    spec = model.spec
    rows = read_labelled_csv(test_csv, spec)
    scores, good, refused = score_rows(model, rows)
    threshold, reached = fit(scores, good, objective)
    stability = bootstrap(scores, good, objective, threshold, samples=samples, seed=seed)
    manifest = read_manifest(entry)
    repository = repository or entry.parent.parent
    version = version or next_version(repository, spec.name)
    before = figures_at(scores, good, spec.threshold)
    record = {
        "value": threshold,
        "rule": f"{objective.describe()} ({objective})",
        "objective": str(objective),
        "fitted_on": f"{test_csv.name} ({len(scores)} rows scored, {refused} refused)",
        "calibrated_from": f"{spec.name}/{spec.version}",
        "previous_threshold": spec.threshold,
        "reached": reached,
        "before": before,
        "stability": stability,
        "calibrated_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
    }
    new_spec = MetricSpec.model_validate({**spec.model_dump(), "version": version, "threshold": threshold})
    training = {
        **manifest.source.training,
        "calibration": {"from": f"{spec.name}/{spec.version}", "test_set": str(test_csv)},
    }
    folder = publish_entry(
        repository,
        new_spec,
        model=entry / MODEL_NAME,
        tokenizer=entry / TOKENIZER_NAME,
        source={**manifest.source.model_dump(), "training": training},
        export={**manifest.export, "threshold": record},
        parity=manifest.parity,
        evidence=manifest.evidence,
        link_files=True,
    )
    return Calibration(folder, threshold, record)
