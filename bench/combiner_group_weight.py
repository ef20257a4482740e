"""Is the evidence combiner the lever? Refit it with one group of eval rows weighted k times.

Scores the eval split and the test sets with an artifact's encoder once, then refits the
artifact's combiner (same features, same windowed features, `models.combine.fit_combiner`) with
the rows of `--group` (by the `source` column) weighing k times each other group, and prints
each test set's ROC-AUC per k. k = 1 reproduces the artifact as exported.

    python bench/combiner_group_weight.py build/exp10/repository/context_adherence/2 \\
        --eval build/exp10/data/eval.csv --test qa=build/exp10/data/qa_test.csv \\
        --test hand-written=models/dev_sets/rag_pairs.csv --k 1 4 8 12 16

Not a test: figures go into docs/quality.md.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.combine import fit_combiner  # noqa: E402
from service.runtime.classifier import MetricModel, score_encoded  # noqa: E402
from service.runtime.postprocess import ItemScore  # noqa: E402

Scored = tuple[list[dict[str, str]], list[float], list[int]]  # rows, encoder scores, windows


def encoder_scores(model: MetricModel, path: Path) -> Scored:
    rows = list(csv.DictReader(path.open(newline="")))
    results = score_encoded(model.encode(rows), model.forward, model.spec, None)
    kept = [(row, r) for row, r in zip(rows, results, strict=True) if isinstance(r, ItemScore)]
    return [row for row, _ in kept], [r.score for _, r in kept], [r.windows for _, r in kept]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--eval", type=Path, required=True)
    parser.add_argument("--test", action="append", required=True, help="NAME=CSV, repeatable")
    parser.add_argument("--group", default="synthetic_counterfactual")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 4, 8, 12, 16])
    args = parser.parse_args()
    model = MetricModel.load(args.artifact)
    exported = model.combiner
    if exported is None:
        parser.error(f"{args.artifact} has no evidence combiner")
    features = list(exported.feature_weights)
    windowed = list(exported.windowed.feature_weights) if exported.windowed else []
    rows, scores, windows = encoder_scores(model, args.eval)
    tests = {name: encoder_scores(model, Path(path)) for name, path in (t.split("=", 1) for t in args.test)}
    positive = model.spec.positive_label
    print("| k |", " | ".join(tests), "| weights |")
    for k in args.k:
        # a group split into k equal parts weighs k times: every group weighs the same in the fit
        groups = [
            (row.get("source") or "all") + (f"#{i % k}" if row.get("source") == args.group else "")
            for i, row in enumerate(rows)
        ]
        combiner = fit_combiner(
            scores, rows, positive, features, fitted_on="bench", groups=groups, windows=windows,
            windowed_features=windowed,
        )  # fmt: skip
        aucs = []
        for test_rows, test_scores, test_windows in tests.values():
            truth = [row["label"] == positive for row in test_rows]
            combined = [
                combiner.combine(p, combiner.features(row, windows=n), windows=n)
                for p, row, n in zip(test_scores, test_rows, test_windows, strict=True)
            ]
            aucs.append(f"{roc_auc_score(truth, combined):.3f}")
        weights = {f.value: round(w, 2) for f, w in combiner.feature_weights.items() if w}
        print(f"| {k} |", " | ".join(aucs), f"| model {combiner.model_weight:.2f}, {weights} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
