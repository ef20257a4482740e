"""A metric's quality as a user meets it: labelled CSVs scored through a live `lunaserve serve`.

Starts the server on one version of the metric (a copy of that version alone in a temporary
repository, so no hot swap is involved), scores every row over HTTP, and prints per set the
ROC-AUC, the best trivial baseline on the same rows (length only, word-overlap share), and the
accuracy at the threshold the server applies. Not a test: figures go into notes and docs.

    python bench/quality_via_server.py --version 2 \\
        --test qa=build/data/qa_test.csv --test dialogue=build/data/dialogue_test.csv
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadtest.quality import fetch_metric, score_rows, served_figures  # noqa: E402
from loadtest.server import LocalServer  # noqa: E402
from models.data_check import read_labelled_csv  # noqa: E402
from service.runtime.spec import MetricSpec  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=ROOT / "repository")
    parser.add_argument("--metric", default="context_adherence")
    parser.add_argument("--version", required=True, help="the version to serve (alone)")
    parser.add_argument("--test", action="append", required=True, metavar="NAME=CSV")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    source = args.repository / args.metric / args.version
    if not source.is_dir():
        parser.error(f"{source}: no such version folder")
    tests = [(name, Path(path)) for name, _, path in (t.partition("=") for t in args.test)]
    for name, path in tests:
        if not name or not path.is_file():
            parser.error(f"--test {name}={path}: expected NAME=CSV with an existing CSV file")
    with tempfile.TemporaryDirectory(prefix="lunaserve-quality-") as tmp:
        repo = Path(tmp) / "repository"
        shutil.copytree(source, repo / args.metric / args.version)
        with LocalServer(repo, Path(tmp) / "server.log", threads=2) as server:
            detail = fetch_metric(server.url, args.metric)
            spec = MetricSpec.model_validate(detail["spec"])
            figures = {}
            for name, path in tests:
                rows = read_labelled_csv(path, spec)
                figures[name] = served_figures(rows, score_rows(server.url, args.metric, rows, spec), spec)
    print(f"{args.metric} version {detail['active_version']} through HTTP; threshold {spec.threshold:.4g}")
    print("| set | rows | ROC-AUC | length only | word overlap | accuracy at threshold |")
    print("|---|---|---|---|---|---|")
    for name, f in figures.items():
        base = f["baselines"]
        print(
            f"| {name} | {f['rows']} | {f['roc_auc']:.3f} | {base['length_only']['roc_auc']:.3f}"
            f" | {base['word_overlap']['roc_auc']:.3f} | {f['accuracy']:.3f} |"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"version": detail["active_version"], "sets": figures}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
