"""Quality of an artifact on a labelled test CSV, scored through `service.runtime` only.

What is evaluated is exactly what the server runs: the same encoder, windows, ONNX session and
postprocessing. Figures sit beside trivial baselines (majority class, length only, word
overlap) and, when the CSV carries one, an existing metric's scores.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn import metrics as skm

from models.baselines import length_baseline_scores, missing_words_scores, word_overlap_scores
from models.data_check import read_labelled_csv
from models.figures import macro_f1, roc_auc
from models.parity import remembered
from service.runtime.classifier import MetricModel, score_encoded
from service.runtime.encoding import ItemTooLongError
from service.runtime.postprocess import ItemScore
from service.runtime.spec import MetricSpec

CALIBRATION_BINS = 10


def calibration_error(truth: np.ndarray, scores: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Expected calibration error of the positive-label probability over equal-width bins."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(float(truth[mask].mean()) - float(scores[mask].mean()))
    return float(total)


def best_threshold(truth: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """The threshold (among the observed scores) that maximises macro-F1."""
    best = {"threshold": 0.5, "macro_f1": -1.0}
    for t in np.unique(np.quantile(scores, np.linspace(0, 1, 201))):
        f1 = macro_f1(truth, scores >= t)
        if f1 > best["macro_f1"]:
            best = {"threshold": float(t), "macro_f1": float(f1)}
    return best


def ranking_figures(truth: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
    """ROC-AUC and PR-AUC (average precision) of the positive label; None with one class."""
    if len(np.unique(truth)) < 2:
        return {"roc_auc": None, "pr_auc": None}
    return {
        "roc_auc": roc_auc(truth, scores),
        "pr_auc": float(skm.average_precision_score(truth, scores)),
    }


def decision_figures(truth: np.ndarray, passed: np.ndarray, spec: MetricSpec) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix."""
    names = [spec.positive_label, "not " + spec.positive_label]
    if len(spec.labels) == 2:
        names[1] = next(label for label in spec.labels if label != spec.positive_label)
    p, r, f, support = skm.precision_recall_fscore_support(
        truth, passed, labels=[True, False], zero_division=0
    )
    return {
        "accuracy": float(skm.accuracy_score(truth, passed)),
        "macro_f1": macro_f1(truth, passed),
        "per_class": {
            names[i]: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(support[i]),
            }
            for i in range(2)
        },
        "confusion_matrix": {
            "labels": names,
            "rows_true_cols_predicted": skm.confusion_matrix(truth, passed, labels=[True, False]).tolist(),
        },
    }


def baseline_figures(
    truth: np.ndarray, rows: Sequence[Mapping[str, str]], existing_column: str | None
) -> dict[str, dict[str, Any]]:
    majority = bool(truth.mean() >= 0.5)
    constant = np.full(len(truth), majority)
    out: dict[str, dict[str, Any]] = {
        "majority": {
            "accuracy": float(skm.accuracy_score(truth, constant)),
            "macro_f1": macro_f1(truth, constant),
            "roc_auc": 0.5,
        },
        "length_only": ranking_figures(truth, length_baseline_scores(rows)),
        "word_overlap": ranking_figures(truth, word_overlap_scores(rows)),
        "missing_words": ranking_figures(truth, missing_words_scores(rows)),
    }
    if existing_column:
        scores = np.array([float(r[existing_column]) for r in rows])
        out["existing"] = {
            **ranking_figures(truth, scores),
            "column": existing_column,
        }
    return out


def evaluate(
    model: MetricModel, rows: Sequence[Mapping[str, str]], *, existing_column: str | None = None
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Figures for `rows`, plus the truth and score arrays (for plots) of the scored rows."""
    spec = model.spec
    if existing_column:
        _check_existing_column(rows, existing_column)
    encoded = model.encode(rows)
    forward = remembered(model.forward)  # windows are scored with and without the evidence
    results = score_encoded(encoded, forward, spec, model.combiner, progress="evaluate")
    scored = [(row, r) for row, r in zip(rows, results, strict=True) if isinstance(r, ItemScore)]
    refused = [str(r) for r in results if isinstance(r, ItemTooLongError)]
    if not scored:
        raise ValueError(f"no row could be scored: {refused[0] if refused else 'empty test set'}")
    kept_rows = [row for row, _ in scored]
    truth = np.array([row["label"] == spec.positive_label for row in kept_rows])
    scores = np.array([r.score for _, r in scored])
    passed = np.array([r.passed for _, r in scored])
    labels = sorted({row["label"] for row in kept_rows})
    figures: dict[str, Any] = {
        "metric": spec.name,
        "version": spec.version,
        "threshold": spec.threshold,
        "rows": len(kept_rows),
        "refused_rows": len(refused),
        "label_counts": {label: sum(row["label"] == label for row in kept_rows) for label in labels},
        **ranking_figures(truth, scores),
        **decision_figures(truth, passed, spec),
        "ece": calibration_error(truth.astype(float), scores),
        "best_threshold": best_threshold(truth, scores),
        "windows": {
            "items_windowed": int(sum(r.windows > 1 for _, r in scored)),
            "max_windows": int(max(r.windows for _, r in scored)),
            "items_cut": int(sum(r.truncated_tokens > 0 for _, r in scored)),
            "tokens_cut": int(sum(r.truncated_tokens for _, r in scored)),
        },
        "baselines": baseline_figures(truth, kept_rows, existing_column),
    }
    if model.combiner is not None:  # what the encoder alone would score, beside the combination
        alone = [r for r in score_encoded(encoded, forward, spec, None) if isinstance(r, ItemScore)]
        figures["baselines"]["encoder_only"] = ranking_figures(truth, np.array([r.score for r in alone]))
    return figures, truth, scores


def _check_existing_column(rows: Sequence[Mapping[str, str]], column: str) -> None:
    for number, row in enumerate(rows, start=2):
        value = row.get(column)
        if value is None:
            raise ValueError(f"column {column!r} is not in the test set")
        try:
            float(value)
        except ValueError:
            raise ValueError(f"row {number}, column {column!r}: {value!r} is not a number") from None


def render_markdown(figures: dict[str, Any], test_csv: Path) -> str:
    lines = [
        f"# {figures['metric']} v{figures['version']} on `{test_csv.name}`",
        "",
        f"{figures['rows']} rows scored ({figures['refused_rows']} refused),"
        f" labels {figures['label_counts']}.",
        "",
        "| scorer | ROC-AUC | PR-AUC | macro-F1 | accuracy |",
        "|---|---|---|---|---|",
    ]

    def cell(d: Mapping[str, Any], key: str) -> str:
        v = d.get(key)
        return f"{v:.3f}" if isinstance(v, float) else "n/a"

    lines.append(
        "| **model** | "
        + " | ".join(cell(figures, k) for k in ("roc_auc", "pr_auc", "macro_f1", "accuracy"))
        + " |"
    )
    for name, base in figures["baselines"].items():
        lines.append(
            f"| {name} | "
            + " | ".join(cell(base, k) for k in ("roc_auc", "pr_auc", "macro_f1", "accuracy"))
            + " |"
        )
    best = figures["best_threshold"]
    lines += [
        "",
        f"Threshold {figures['threshold']}; the threshold maximising macro-F1 here is"
        f" {best['threshold']:.3g} (macro-F1 {best['macro_f1']:.3f}). Calibration error (ECE,"
        f" {CALIBRATION_BINS} bins): {figures['ece']:.3f}.",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for name, c in figures["per_class"].items():
        lines.append(
            f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |"
        )
    cm = figures["confusion_matrix"]
    lines += [
        "",
        "Confusion matrix (rows true, columns predicted):",
        "",
        "| | " + " | ".join(cm["labels"]) + " |",
        "|---|---|---|",
    ]
    for name, row in zip(cm["labels"], cm["rows_true_cols_predicted"], strict=True):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    w = figures["windows"]
    lines += [
        "",
        f"Long inputs: {w['items_windowed']} items windowed (at most {w['max_windows']} windows),"
        f" {w['items_cut']} items cut, {w['tokens_cut']} tokens cut in all.",
    ]
    return "\n".join(lines) + "\n"


def render_plot(truth: np.ndarray, scores: np.ndarray, figures: dict[str, Any], path: Path) -> None:
    """ROC curve and per-class score histograms, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (roc_ax, hist_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    if figures.get("roc_auc") is not None:
        fpr, tpr, _ = skm.roc_curve(truth, scores)
        roc_ax.plot(fpr, tpr, label=f"model (AUC {figures['roc_auc']:.3f})")
    roc_ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    roc_ax.legend(loc="lower right")
    bins = np.linspace(0, 1, 26)
    names = figures["confusion_matrix"]["labels"]
    hist_ax.hist(scores[truth], bins=bins, alpha=0.6, label=f"true {names[0]}")
    hist_ax.hist(scores[~truth], bins=bins, alpha=0.6, label=f"true {names[1]}")
    hist_ax.axvline(figures["threshold"], color="black", linestyle=":", label="threshold")
    hist_ax.set(xlabel=f"score (P[{names[0]}])", ylabel="items", title="Scores by true class")
    hist_ax.legend()
    fig.suptitle(f"{figures['metric']} v{figures['version']}: {figures['rows']} rows")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate_to_files(
    model_dir: Path, test_csv: Path, out_dir: Path, *, existing_column: str | None = None
) -> dict[str, Path]:
    """Run `evaluate` and write evaluation.json, evaluation.md and evaluation.png into out_dir."""
    model = MetricModel.load(model_dir, check_layout=False)
    rows = read_labelled_csv(test_csv, model.spec)
    figures, truth, scores = evaluate(model, rows, existing_column=existing_column)
    figures["test_set"] = str(test_csv)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "evaluation.json",
        "markdown": out_dir / "evaluation.md",
        "plot": out_dir / "evaluation.png",
    }
    paths["json"].write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(render_markdown(figures, test_csv), encoding="utf-8")
    render_plot(truth, scores, figures, paths["plot"])
    return paths
