"""The approach decision (`lunaserve plan`): preset as is, fine-tune the preset, or a new metric.

The product's process names three approaches. Use a preset as is when its definition matches
and it is good enough on the customer's labelled rows. Fine-tune the preset when the definition
matches but the preset is poor on those rows, while an LLM judge given the same definition does
well on them (the definition fits the labels; the small model has not learned this domain).
Create a new custom metric when nothing preset matches. The plan applies that rule to figures
measured here, through the runtime as served:

1. the test set is checked against the dataset rules (an unusable set stops the plan);
2. the preset is scored on it: ROC-AUC, and macro-F1 at its own threshold and at the threshold
   `lunaserve calibrate` would fit (so "as is" means "as is, with your threshold");
3. an optional column of LLM-judge scores (0-1, high = the positive label) or labels is scored
   the same way;
4. the rule (thresholds are options; defaults in `DecisionRule`) picks the approach;
5. the customer's latency budget is checked against the preset's batch-1 latency at the stated
   token sizes on this machine, so an impossible target is flagged before any training.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from loadtest.requirements import Requirements
from models.calibrate import Objective, figures_at, fit, score_rows
from models.data_check import DataCheckReport, DatasetRules, check_dataset, read_labelled_csv
from models.figures import roc_auc
from models.latency_probe import batch1_latency_ms, item_of_tokens
from service.runtime.classifier import MetricModel
from service.runtime.spec import MetricSpec

Approach = Literal["preset_as_is", "finetune_preset", "custom_metric"]
LATENCY_RUNS = 40
BATCH1_UTILISATION = 0.7  # a replica kept busier than this at batch 1 queues; batching must carry it


@dataclass(frozen=True)
class DecisionRule:
    """The thresholds of the decision, each a command-line option."""

    good_enough_macro_f1: float = 0.80
    """A scorer whose macro-F1 at its best threshold reaches this is good enough on these rows."""
    min_gain_over_trivial: float = 0.0
    """The preset must also rank above the best trivial scorer by this much ROC-AUC."""


@dataclass
class Plan:
    approach: Approach | None  # None: the test set cannot be used as it is
    reason: str
    rule: dict[str, float]
    test_set: dict[str, Any]
    preset: dict[str, Any] | None = None
    judge: dict[str, Any] | None = None
    latency: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge_scores(rows: Sequence[Mapping[str, str]], column: str, spec: MetricSpec) -> np.ndarray:
    """The judge's column as scores: a label of the spec counts 1 (positive) or 0, else a number 0-1."""
    out = []
    for number, row in enumerate(rows, start=2):
        value = (row.get(column) or "").strip()
        if value in spec.labels:
            out.append(1.0 if value == spec.positive_label else 0.0)
            continue
        try:
            score = float(value)
        except ValueError:
            raise ValueError(
                f"row {number}, column {column!r}: {value!r} is neither a label {spec.labels} nor a score 0-1"
            ) from None
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"row {number}, column {column!r}: {score} is outside 0-1")
        out.append(score)
    return np.array(out)


def scorer_figures(scores: np.ndarray, good: np.ndarray, threshold: float | None) -> dict[str, Any]:
    """ROC-AUC, macro-F1 at `threshold` (if any) and at the best threshold for macro-F1."""
    best_threshold, best = fit(scores, good, Objective("macro_f1"))
    figures: dict[str, Any] = {
        "roc_auc": roc_auc(good, scores),
        "fitted_threshold": best_threshold,
        "macro_f1_fitted": best["macro_f1"],
        "accuracy_fitted": best["accuracy"],
    }
    if threshold is not None:
        at = figures_at(scores, good, threshold)
        figures.update(threshold=threshold, macro_f1=at["macro_f1"], accuracy=at["accuracy"])
    return figures


def decide(
    preset: dict[str, Any] | None, judge: dict[str, Any] | None, rule: DecisionRule
) -> tuple[Approach, str]:
    """The source process's rule on measured figures; the reason names the figures behind it."""
    bar = rule.good_enough_macro_f1
    if preset is None:
        return "custom_metric", "no preset metric was given: nothing preset matches"
    gain = preset["roc_auc"] - preset["best_trivial_roc_auc"]
    if preset["macro_f1_fitted"] >= bar and gain >= rule.min_gain_over_trivial:
        return "preset_as_is", (
            f"the preset's macro-F1 at your fitted threshold is {preset['macro_f1_fitted']:.3f} >= {bar:g}"
            f" (ROC-AUC {preset['roc_auc']:.3f}, {gain:+.3f} over the best trivial scorer)"
        )
    poor = f"the preset's macro-F1 at your fitted threshold is {preset['macro_f1_fitted']:.3f}" + (
        f" < {bar:g}" if preset["macro_f1_fitted"] < bar else f", but it ranks only {gain:+.3f} over trivial"
    )
    if judge is None:
        return "finetune_preset", (
            f"{poor}; no LLM-judge column was given to confirm that the preset's definition matches your"
            " labels (if it does not, create a new metric instead)"
        )
    if judge["macro_f1_fitted"] >= bar:
        return "finetune_preset", (
            f"{poor}, while an LLM judge with this definition reaches {judge['macro_f1_fitted']:.3f}:"
            " the definition fits your labels, the small model has not learned your domain"
        )
    return "custom_metric", (
        f"{poor}, and an LLM judge with this definition reaches only {judge['macro_f1_fitted']:.3f}:"
        " your labels follow another definition; write a spec of your own"
    )


def latency_checks(
    model: MetricModel, requirements: Requirements, runs: int = LATENCY_RUNS
) -> list[dict[str, Any]]:
    """Per load level: the preset's batch-1 latency at its token size against the budget."""
    cores = os.cpu_count() or 1
    out = []
    for level in ("average", "peak"):
        point = getattr(requirements.load, level)
        budget = getattr(requirements.latency_ms, level)
        tokens = min(point.input_tokens, model.spec.max_tokens)
        measured = batch1_latency_ms(model, item_of_tokens(model, tokens), runs)
        items_per_request = requirements.request.items_per_request
        windows = math.ceil(point.input_tokens / model.spec.max_tokens)  # long items: one pass per window
        request_ms = {k: v * windows * items_per_request for k, v in measured.items()}
        per_replica = 1000.0 / request_ms["mean"]  # requests/s, one at a time, all cores on each
        problems = []
        if request_ms["p50"] > budget.p50:
            problems.append(
                f"one request alone takes {request_ms['p50']:.1f} ms at p50 (budget {budget.p50:g})"
            )
        if request_ms["p99"] > budget.p99:
            problems.append(
                f"one request alone takes {request_ms['p99']:.1f} ms at p99 (budget {budget.p99:g})"
            )
        replicas = math.ceil(point.qps / (BATCH1_UTILISATION * per_replica))
        out.append(
            {
                "level": level,
                "qps": point.qps,
                "input_tokens": point.input_tokens,
                "measured_at_tokens": tokens,
                "windows_per_item": windows,
                "items_per_request": items_per_request,
                "request_ms": request_ms,
                "budget_ms": budget.model_dump(),
                "cores": cores,
                "batch1_requests_per_s_per_replica": per_replica,
                "replicas_at_batch1": replicas,
                "possible": not problems,
                "problems": problems,
            }
        )
    return out


def make_plan(
    test_csv: Path,
    spec: MetricSpec,
    *,
    preset: Path | None,
    requirements: Requirements | None,
    judge_column: str | None = None,
    train_csv: Path | None = None,
    rule: DecisionRule | None = None,
    rules: DatasetRules | None = None,
) -> Plan:
    rule = rule or DecisionRule()
    model = MetricModel.load(preset, check_layout=False) if preset else None
    spec = model.spec if model else spec
    report = check_dataset(test_csv, "test", spec, against=train_csv, rules=rules)
    plan = Plan(approach=None, reason="", rule=asdict(rule), test_set=report.to_dict())
    if not report.ok:
        plan.reason = (
            f"{test_csv} breaks the dataset rules (see test_set.findings): fix it before anything else"
        )
        plan.missing.append(f"a usable labelled test set ({_first_error(report)})")
        return plan
    rows = read_labelled_csv(test_csv, spec)
    if model is not None:
        scores, good, refused = score_rows(model, rows)
        plan.preset = {
            "entry": str(preset),
            "name": spec.name,
            "version": spec.version,
            "rows_scored": len(scores),
            "rows_refused": refused,
            **scorer_figures(scores, good, spec.threshold),
            "best_trivial_roc_auc": _best_trivial(rows, spec),
        }
    if judge_column:
        good_all = np.array([r["label"] == spec.positive_label for r in rows])
        plan.judge = {
            "column": judge_column,
            **scorer_figures(judge_scores(rows, judge_column, spec), good_all, None),
        }
    plan.approach, plan.reason = decide(plan.preset, plan.judge, rule)
    if model is not None and requirements is not None:
        plan.latency = latency_checks(model, requirements)
    plan.missing += _missing(plan, train_csv, requirements, spec, rules or DatasetRules())
    plan.next_steps = _next_steps(plan, test_csv, preset, train_csv)
    return plan


def _first_error(report: DataCheckReport) -> str:
    return next((str(f) for f in report.findings if f.severity == "error"), "see the findings")


def _best_trivial(rows: Sequence[Mapping[str, str]], spec: MetricSpec) -> float:
    from models.baselines import length_baseline_scores, missing_words_scores, word_overlap_scores

    truth = np.array([r["label"] == spec.positive_label for r in rows])
    return max(
        roc_auc(truth, f(rows)) for f in (length_baseline_scores, word_overlap_scores, missing_words_scores)
    )


def _missing(
    plan: Plan,
    train_csv: Path | None,
    requirements: Requirements | None,
    spec: MetricSpec,
    rules: DatasetRules,
) -> list[str]:
    missing = []
    if plan.approach in ("finetune_preset", "custom_metric"):
        if train_csv is None:
            missing.append(
                f"a training set of about {rules.train_expected_rows:,} rows balanced 50/50"
                " (CSV like the test set), or LLM-written rows with their generator stated"
            )
        else:
            train = check_dataset(train_csv, "train", spec, against=None, rules=rules)
            if not train.ok:
                missing.append(f"a usable training set ({_first_error(train)})")
            elif train.rows < rules.train_expected_rows * rules.train_warn_below_fraction:
                missing.append(f"more training rows: {train.rows} of about {rules.train_expected_rows:,}")
    if plan.approach == "finetune_preset" and plan.judge is None:
        missing.append(
            "LLM-judge scores or labels on the test set (--judge-column) to confirm the definition matches"
        )
    if plan.approach == "custom_metric" and plan.preset is None:
        missing.append("a spec for the new metric (name, labels, input fields, threshold, max tokens)")
    if requirements is None:
        missing.append("latency and load requirements (--requirements, as for `lunaserve signoff`)")
    elif not plan.latency and plan.preset is None:
        missing.append("a latency check: measured after the first export (no preset to measure now)")
    for check in plan.latency:
        if not check["possible"]:
            missing.append(
                f"a latency budget this machine can meet at {check['level']} load: "
                + "; ".join(check["problems"])
            )
    return missing


def _next_steps(plan: Plan, test_csv: Path, preset: Path | None, train_csv: Path | None) -> list[str]:
    train = str(train_csv) if train_csv else "TRAIN.csv"
    if plan.approach == "preset_as_is" and preset is not None:
        return [
            f"lunaserve calibrate {preset} --test {test_csv}",
            "lunaserve signoff --requirements REQUIREMENTS.yaml --repository repository",
        ]
    check = f"lunaserve data check --kind train {train} --against {test_csv}"
    if plan.approach == "finetune_preset" and plan.preset is not None:
        name, version = plan.preset["name"], plan.preset["version"]
        checkpoint = f"build/checkpoints/{name}-{version}"  # `make default-metric` rebuilds the shipped one
        return [
            check,
            f"lunaserve finetune --base {checkpoint} --train {train} --eval EVAL.csv --out build/ckpt",
            "lunaserve export build/ckpt --eval EVAL.csv --repository repository --threshold-from-eval",
            f"lunaserve calibrate repository/{name}/<new version> --test {test_csv}",
        ]
    return [
        "write specs/<your_metric>.yaml (labels, input fields, threshold, max tokens)",
        check,
        f"lunaserve finetune --spec specs/<your_metric>.yaml --base build/downloads/minilm --train {train}"
        " --eval EVAL.csv --out build/ckpt",
    ]


def render_plan(plan: Plan) -> str:
    """The plan as Markdown: the recommendation first, then the figures behind it."""
    names = {
        "preset_as_is": "use the preset as is, with your threshold",
        "finetune_preset": "fine-tune the preset",
        "custom_metric": "create a new custom metric",
        None: "no recommendation yet: the test set cannot be used",
    }
    t = plan.test_set
    lines = [
        f"# Plan: {names[plan.approach]}",
        "",
        plan.reason[:1].upper() + plan.reason[1:] + ".",
        "",
        f"Test set: {t['file']}, {t['rows']} rows, labels {t['label_counts']}"
        f" ({sum(f['severity'] == 'error' for f in t['findings'])} errors,"
        f" {sum(f['severity'] == 'warning' for f in t['findings'])} warnings).",
    ]
    lines += [f"- {f['severity']}: {f['message']}" for f in t["findings"][:10]]
    if plan.preset or plan.judge:
        lines += [
            "",
            "| scorer | ROC-AUC | macro-F1 at its threshold | fitted threshold | macro-F1 | accuracy |",
            "|---|---|---|---|---|---|",
        ]
        for name, f in (
            ("preset " + (plan.preset or {}).get("entry", ""), plan.preset),
            ("LLM judge", plan.judge),
        ):
            if f:
                at_own = f"{f['macro_f1']:.3f} ({f['threshold']:.3g})" if "macro_f1" in f else "n/a"
                lines.append(
                    f"| {name} | {f['roc_auc']:.3f} | {at_own} | {f['fitted_threshold']:.3g}"
                    f" | {f['macro_f1_fitted']:.3f} | {f['accuracy_fitted']:.3f} |"
                )
        if plan.preset:
            lines.append(f"| best trivial scorer | {plan.preset['best_trivial_roc_auc']:.3f} | | | | |")
    if plan.latency:
        lines += [
            "",
            "Latency of the preset on this machine (batch 1, per request) against your budget:",
            "",
            "| load | QPS | tokens | p50 / p99 ms | budget p50 / p99 | replicas at batch 1 | verdict |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in plan.latency:
            r, b = c["request_ms"], c["budget_ms"]
            verdict = "possible" if c["possible"] else "NOT POSSIBLE: " + "; ".join(c["problems"])
            lines.append(
                f"| {c['level']} | {c['qps']:g} | {c['input_tokens']} | {r['p50']:.1f} / {r['p99']:.1f}"
                f" | {b['p50']:g} / {b['p99']:g} | {c['replicas_at_batch1']} | {verdict} |"
            )
    if plan.missing:
        lines += ["", "Still missing:", "", *(f"- {m}" for m in plan.missing)]
    if plan.next_steps:
        lines += ["", "Next:", "", *(f"    {s}" for s in plan.next_steps)]
    rule = plan.rule
    lines += [
        "",
        "Rule: a scorer is good enough when its macro-F1 at its fitted threshold is"
        f" >= {rule['good_enough_macro_f1']:g} (and the preset ranks"
        f" >= {rule['min_gain_over_trivial']:g} ROC-AUC above the best trivial scorer).",
    ]
    return "\n".join(lines) + "\n"
