"""Score the obvious pairs (models/dev_sets/obvious_pairs.csv) with a context_adherence artifact.

Ten pairs a user would write to try a guardrail: short answers, full sentences, paraphrases, and
sentence answers with one name, number or negation changed. A metric worth shipping gets both
answers of every pair right at its own threshold; this prints each pair's two scores, and the
long-context case (the supporting sentence in the last of several windows).

    python bench/obvious_pairs.py repository/context_adherence/2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.csv_reading import read_rows  # noqa: E402
from service.runtime.artifact import load_artifact  # noqa: E402
from service.runtime.classifier import MetricModel  # noqa: E402
from service.runtime.postprocess import ItemScore  # noqa: E402

PAIRS = ROOT / "models" / "dev_sets" / "obvious_pairs.csv"
AUSTEN = "Pride and Prejudice is an 1813 novel by Jane Austen. It follows Elizabeth Bennet."


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path, help="a version folder, e.g. repository/context_adherence/2")
    args = parser.parse_args()
    model = MetricModel(load_artifact(args.artifact.resolve()))
    pairs = read_rows(PAIRS)
    right = ranked = 0
    for pair in pairs:
        items = [
            {"input": pair["input"], "context": pair["context"], "output": pair[k]}
            for k in ("faithful", "hallucinated")
        ]
        good, bad = model.score(items)
        assert isinstance(good, ItemScore) and isinstance(bad, ItemScore), (good, bad)
        both = good.passed and not bad.passed
        right += both
        ranked += good.score > bad.score
        verdict = "ok " if both else "BAD"
        print(f"{verdict} {good.score:.3f} {bad.score:.3f} | {pair['faithful']} | {pair['hallucinated']}")
    filler = " ".join(f"Paragraph {i} talks about the weather in spring and the harvest." for i in range(150))
    item = {
        "input": "Who wrote Pride and Prejudice?",
        "context": f"{filler} {AUSTEN}",
        "output": "Jane Austen wrote it.",
    }
    (long,) = model.score([item])
    assert isinstance(long, ItemScore)
    print(f"long context ({long.windows} windows): {long.score:.3f}, passed={long.passed}")
    threshold = model.artifact.manifest.spec.threshold
    print(f"both answers right: {right}/{len(pairs)}; faithful ranked first: {ranked}/{len(pairs)}")
    print(f"threshold {threshold:.4g}")
    return 0 if right == len(pairs) and long.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
