"""MODEL_CARD.md from a manifest: the card says only what the manifest records.

Rendering from the manifest (never by hand) keeps the card and the figures that the server
and `evaluate` report the same, weak figures included.
"""

from __future__ import annotations

from typing import Any

from service.runtime.artifact import Manifest
from service.runtime.evidence import EvidenceFeature, LogisticWeights

FEATURE_MEANINGS = {
    EvidenceFeature.N_MISSING_CONTENT: "count of distinct content words (stopwords removed) of the response"
    " that appear nowhere in the context",
    EvidenceFeature.SHARE_MISSING_CONTENT: "the same as a share of the response's distinct content words",
    EvidenceFeature.N_MISSING_NAMES: "count of capitalised words of the response absent from the context",
    EvidenceFeature.N_MISSING_NUMBERS: "count of numbers of the response absent from the context",
    EvidenceFeature.SHARE_MISSING_NAMES: "share of the response's capitalised words absent from the context",
    EvidenceFeature.SHARE_MISSING_NUMBERS: "share of the response's numbers absent from the context",
    EvidenceFeature.SHARE_NOVEL_BIGRAMS: "share of the response's adjacent word pairs (within a sentence)"
    " that never occur in the context: facts recombined from context words",
    EvidenceFeature.WEAKEST_SENTENCE_MISSING: "the highest share of missing content words of any one sentence"
    " of the response: its weakest claim, so one unsupported sentence is not diluted by the rest",
    EvidenceFeature.SHARE_POLARITY_FLIPPED: "share of the response's sentences negated where the context"
    " sentence sharing most of their words is not, or the reverse: a statement reversed with the"
    " context's own words",
    EvidenceFeature.MISSING_CONTENT_UP_TO_2: "0, 0.5 or 1 as none, one, or two or more of the response's"
    " content words are absent from the context: one swapped name or number, however long the sentence",
    EvidenceFeature.LOCAL_MISSING_SHARE: "share of the response's content words absent from the two"
    " consecutive context sentences that hold most of each response sentence's words: words found"
    " somewhere in a long document but not where the sentence's claim is",
    EvidenceFeature.SHARE_STATED_SENTENCES: "share of the response's sentences whose every content word one"
    " context sentence holds, negated alike: what the context states, restated (the one feature"
    " whose weight counts for support)",
    EvidenceFeature.SHARE_CHANGED_QUANTITIES: "share of the response's quantities (a number and the word"
    " after it, such as '30 days') whose unit the context also counts, but never with that number: a"
    " number changed beside its unit",
}

QUALITY_COLUMNS = ("roc_auc", "pr_auc", "macro_f1", "accuracy", "ece")
BASELINE_ORDER = ("length_only", "word_overlap", "missing_words", "encoder_only", "majority", "existing")
TRIVIAL_BASELINES = ("length_only", "word_overlap", "missing_words")  # need no model at all


def _fmt(value: Any) -> str:
    if isinstance(value, float):  # a learning rate such as 2e-05 is not 0.000
        return f"{value:.3f}" if value == 0 or abs(value) >= 0.01 else f"{value:.3g}"
    if value is None:
        return "n/a"
    return str(value)


def _intended_use(m: Manifest) -> list[str]:
    s = m.spec
    li = s.long_input
    return [
        "## Intended use",
        "",
        s.description.strip(),
        "",
        f"- Use case: **{s.use_case}**. Labels: {', '.join(s.labels)}; the score is the probability"
        f" of **{s.positive_label}**, and an item passes when score >= {s.threshold}.",
        f"- Inputs: required {', '.join(f.value for f in s.required_fields)}; the model reads"
        f" ({' + '.join(f.value for f in s.text_pair.first)}) paired with"
        f" ({' + '.join(f.value for f in s.text_pair.second) or 'nothing'}).",
        f"- Window: {s.max_tokens} tokens. Long inputs: `{li.mode.value}`"
        + (
            f" (overlap {li.window_overlap_tokens} tokens, at most {li.max_windows} windows,"
            f" aggregated by {li.aggregation.value})"
            if li.mode.value == "window"
            else ""
        )
        + "; the response is never cut.",
        f"- Constraints: {s.constraints.rstrip('.') or 'none stated'}.",
    ]


def _training(m: Manifest) -> list[str]:
    t = m.source.training
    lines = ["## Training data and provenance", ""]
    lines.append(
        f"- Base model: {m.source.base_model or 'not recorded'}"
        + (f" (weights sha256 {m.source.base_sha256})" if m.source.base_sha256 else "")
    )
    lines.append(f"- Checkpoint exported: `{m.source.checkpoint}`")
    if not t:
        lines.append("- Training details: not recorded for this entry.")
    for key, value in t.items():
        if key == "limits":
            continue
        lines.append(f"- {key.replace('_', ' ').capitalize()}: {_fmt(value)}")
    return lines


def _quality(m: Manifest) -> list[str]:
    lines = ["## Quality", ""]
    if not m.quality:
        return [*lines, "No test set has been evaluated for this entry yet."]
    for name, figures in m.quality.items():
        lines += [f"### {name}", ""]
        if figures.get("description"):
            lines += [figures["description"], ""]
        lines.append(f"Rows: {figures.get('rows', 'n/a')}; label counts: {figures.get('label_counts', {})}.")
        lines += [
            "",
            "| scorer | " + " | ".join(QUALITY_COLUMNS) + " |",
            "|---|" + "---|" * len(QUALITY_COLUMNS),
        ]
        lines.append("| **this model** | " + " | ".join(_fmt(figures.get(c)) for c in QUALITY_COLUMNS) + " |")
        baselines = figures.get("baselines", {})
        for base in [b for b in BASELINE_ORDER if b in baselines]:
            row = baselines[base]
            lines.append(
                f"| {base.replace('_', ' ')} | "
                + " | ".join(_fmt(row.get(c)) for c in QUALITY_COLUMNS)
                + " |"
            )
        best = figures.get("best_threshold")
        if best:
            lines += [
                "",
                f"Threshold maximising macro-F1 here: {best.get('threshold', 0):.3g}"
                f" (macro-F1 {_fmt(best.get('macro_f1'))}).",
            ]
        lines.append("")
    return lines


def _generalisation(m: Manifest) -> list[str]:
    """Leave one task out: how the recipe does on a task it never saw, beside the trivial scorers."""
    if not m.generalisation:
        return []
    lines = [
        "## Generalisation: leave one task out",
        "",
        "Each row is a model built by this version's recipe (or an earlier one, where its note below"
        " says so) with one task left out of training and tuning (its combiner and threshold fitted"
        " on the other tasks' eval rows), scored on the left-out task's test pairs. It says how the"
        " recipe may do on a domain it never saw.",
        "",
        "| left out | rows | ROC-AUC | accuracy at its threshold | threshold | best trivial scorer (AUC) |",
        "|---|---|---|---|---|---|",
    ]
    for task, f in m.generalisation.items():
        trivial = {b: r["roc_auc"] for b, r in f.get("baselines", {}).items() if b in TRIVIAL_BASELINES}
        best = max(trivial, key=lambda b: trivial[b], default=None)
        shown = f"{best.replace('_', ' ')} ({_fmt(trivial[best])})" if best else "n/a"
        lines.append(
            f"| {task} | {f.get('rows', 'n/a')} | {_fmt(f.get('roc_auc'))} | {_fmt(f.get('accuracy'))}"
            f" | {_fmt(f.get('threshold'))} | {shown} |"
        )
    descriptions = [
        f"- {task}: {f['description']}" for task, f in m.generalisation.items() if f.get("description")
    ]
    return [*lines, "", *descriptions] if descriptions else lines


def _evidence(m: Manifest) -> list[str]:
    c = m.evidence
    if c is None:
        return []

    def formula(weights: LogisticWeights) -> str:
        terms = " + ".join(f"{w:+.3f} x {f.value}" for f, w in weights.feature_weights.items())
        encoder = f"{weights.model_weight:.3f} x logit(p_encoder)"
        return f"    score = sigmoid({encoder} {terms} {weights.bias:+.3f})"

    windowed = (
        ["", "Items read in several windows (long contexts) weigh it their own way:", "", formula(c.windowed)]
        if c.windowed else []
    )  # fmt: skip
    return [
        "## How the score is computed",
        "",
        "The encoder's probability is combined with explicit evidence, computed against the whole"
        " context (never one window), by a logistic model whose weights were fitted, not chosen:",
        "",
        formula(c),
        *windowed,
        "",
        *(f"- `{f.value}`: {FEATURE_MEANINGS[f]}" for f in EvidenceFeature if f in c.wanted()),
        f"- Fitted on: {c.fitted_on or 'not recorded'}.",
        "- The quality tables report the encoder alone (`encoder only`) and the missing-words count"
        " alone (`missing words`) beside the combination.",
    ]


def _threshold(m: Manifest) -> list[str]:
    t = m.export.get("threshold")
    if not t:
        return []
    lines = [
        "## How the threshold was chosen",
        "",
        f"Threshold **{m.spec.threshold:.4g}**: {t.get('rule', 'n/a')}.",
    ]
    if t.get("calibrated_from"):
        return [*lines, *_calibration(t)]
    if t.get("fitted_on"):
        lines.append(f"Chosen on {t['fitted_on']}; accuracy there per task at this threshold:")
        lines += ["", "| task | rows | accuracy |", "|---|---|---|"]
        rows = t.get("rows_by_group", {})
        lines += [
            f"| {g} | {rows.get(g, 'n/a')} | {_fmt(a)} |" for g, a in t.get("accuracy_by_group", {}).items()
        ]
    return lines


def _calibration(t: dict[str, Any]) -> list[str]:
    """`lunaserve calibrate`: the customer's rows, the figures before and after, the interval."""
    stability = t.get("stability", {})
    name = t.get("objective", "").split(":")[0]
    lines = [
        f"Calibrated from {t['calibrated_from']} on {t.get('fitted_on', 'n/a')}"
        f" ({t.get('calibrated_at', 'n/a')}).",
        "These figures are on the rows the threshold was fitted on, so they are optimistic; the"
        " bootstrap interval says how far they may move on new rows of the same kind.",
        "",
        "| at | threshold | bad-class precision | bad-class recall | macro-F1 |",
        "|---|---|---|---|---|",
    ]
    for label, figures, value in (
        ("the previous threshold", t.get("before", {}), _fmt(t.get("previous_threshold"))),
        ("the fitted threshold", t.get("reached", {}), f"{t['value']:.4g}"),
    ):
        lines.append(
            f"| {label} | {value} | {_fmt(figures.get('bad_precision'))} | {_fmt(figures.get('bad_recall'))}"
            f" | {_fmt(figures.get('macro_f1'))} |"
        )
    if stability:
        lo, hi = stability.get("interval_percentiles", [5, 95])
        parts = [f"{stability.get('samples')} bootstrap samples (seed {stability.get('seed')})"]
        if "threshold" in stability:
            parts.append("refitted threshold {:.4g}-{:.4g}".format(*stability["threshold"]))
        if f"{name}_at_threshold" in stability:
            parts.append(
                "{} at the fitted threshold {:.3f}-{:.3f}".format(name, *stability[f"{name}_at_threshold"])
            )
        if stability.get("unreachable_samples"):
            parts.append(f"{stability['unreachable_samples']} samples could not reach the objective")
        lines += ["", f"Stability, {hi - lo:g}% interval over " + "; ".join(parts) + "."]
    return lines


def _artifact(m: Manifest) -> list[str]:
    p = m.parity
    q = m.export.get("quantization", {})
    folded = q.get("matmul_weights", {}).get("int8_weight_only_blocks_of_32_along_k")
    return [
        "## Artifact and parity",
        "",
        f"- Quantisation: {q.get('mode', 'n/a')}"
        + (
            f", {q.get('weights')}, activations {q.get('activations')}"
            if q.get("mode") in ("static", "rows")
            else ""
        )
        + (
            f": fp32 compute; the word embeddings and {folded}"
            " MatMul weights are stored as int8 blocks of 32 (one scale each), folded back to fp32"
            " when the session loads"
            if q.get("mode") == "weights"
            else ""
        )
        + ".",
        f"- Against the fp32 PyTorch checkpoint on {p.get('items', 'n/a')} eval items: decision agreement"
        f" {_fmt(p.get('decision_agreement'))}, largest score difference {_fmt(p.get('max_abs_score_diff'))},"
        f" macro-F1 {_fmt(p.get('macro_f1_reference'))} -> {_fmt(p.get('macro_f1_artifact'))}.",
        f"- Batch invariance: an item's score moved by at most {p.get('batch_max_score_delta', 'n/a'):.2e}"
        f" between being scored alone and inside mixed padded batches"
        f" ({p.get('batch_decision_flips', 'n/a')} decisions flipped)."
        if isinstance(p.get("batch_max_score_delta"), float)
        else "- Batch invariance: not measured.",
        "- Files: "
        + ", ".join(f"{n} ({d.bytes / 1e6:.1f} MB)" for n, d in m.files.items() if n != "MODEL_CARD.md"),
    ]


def render_model_card(m: Manifest) -> str:
    limits = m.source.training.get("limits") or []
    sections = [
        [
            f"# {m.spec.name} version {m.spec.version}",
            "",
            f"Generated by lunaserve from `manifest.json` on {m.created_at}.",
        ],
        _intended_use(m),
        _training(m),
        _evidence(m),
        _threshold(m),
        _quality(m),
        _generalisation(m),
        _artifact(m),
        [
            "## Limits",
            "",
            *(f"- {x}" for x in limits),
            "- Scores are calibrated only as far as the ECE above says; re-check the threshold on"
            " your own labelled test set before relying on it.",
        ],
    ]
    return "\n".join("\n".join(s) + "\n" for s in sections if s)
