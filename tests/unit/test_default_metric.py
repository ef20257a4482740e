"""The committed metric versions load, verify, vouch for their figures and get obvious pairs right.

Version 1's encoder learned HaluEval QA's style (short answers after a question), and its model
card says so; its obvious pairs here are in that style. Version 2 (the default: the newest
version) is held to issue 9's bar: on every recorded held-out set it ranks above the best trivial
baseline, each HaluEval task's accuracy at its threshold is at least 0.60, and the obvious pairs
of `models/dev_sets/obvious_pairs.csv` (full sentences, paraphrases, one swapped name, number or
negation) are right, save the misses listed below with the reason, which fail the test the day
they pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from models.csv_reading import read_rows
from service.runtime.artifact import load_artifact
from service.runtime.classifier import MetricModel
from service.runtime.postprocess import ItemScore

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "repository" / "context_adherence" / "1"
FOLDER_2 = ROOT / "repository" / "context_adherence" / "2"
EIFFEL = "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France."
AUSTEN = "Pride and Prejudice is an 1813 novel by Jane Austen. It follows Elizabeth Bennet."
WATER = "At sea level, water boils at 100 degrees Celsius (212 degrees Fahrenheit)."

SUPPORTED = [
    {"input": "Where is the Eiffel Tower?", "context": EIFFEL, "output": "Paris"},
    {"input": "Who wrote Pride and Prejudice?", "context": AUSTEN, "output": "Jane Austen"},
    {
        "input": "At what temperature does water boil at sea level?",
        "context": WATER,
        "output": "100 degrees Celsius",
    },
]
HALLUCINATED = [
    {"input": "Where is the Eiffel Tower?", "context": EIFFEL, "output": "Berlin, Germany"},
    {"input": "Who wrote Pride and Prejudice?", "context": AUSTEN, "output": "Charles Dickens"},
    {
        "input": "At what temperature does water boil at sea level?",
        "context": WATER,
        "output": "Water boils at 70 degrees Celsius at sea level, according to NASA.",
    },
]


@pytest.fixture(scope="module")
def model() -> MetricModel:
    return MetricModel(load_artifact(FOLDER))


def scores(model: MetricModel, items: list[dict[str, str]]) -> list[ItemScore]:
    results = model.score(items)
    assert all(isinstance(r, ItemScore) for r in results)
    return [r for r in results if isinstance(r, ItemScore)]


def test_default_metric_manifest_vouches_for_its_figures(model: MetricModel) -> None:
    manifest = model.artifact.manifest
    assert manifest.spec.name == "context_adherence" and manifest.spec.version == "1"
    assert manifest.parity["decision_agreement"] >= 0.99
    assert manifest.parity["batch_max_score_delta"] <= 0.005
    quality = manifest.quality["qa_test_length_neutral"]
    assert quality["roc_auc"] > quality["baselines"]["word_overlap"]["roc_auc"]
    assert quality["roc_auc"] > quality["baselines"]["length_only"]["roc_auc"]


def test_default_metric_scores_obvious_pairs(model: MetricModel) -> None:
    supported, hallucinated = scores(model, SUPPORTED), scores(model, HALLUCINATED)
    assert all(r.passed and r.label == "supported" for r in supported), [r.score for r in supported]
    assert not any(r.passed for r in hallucinated), [r.score for r in hallucinated]
    assert min(r.score for r in supported) > max(r.score for r in hallucinated)


def test_default_metric_windows_a_long_context(model: MetricModel) -> None:
    filler = " ".join(f"Paragraph {i} talks about the weather in spring and the harvest." for i in range(150))
    item = {
        "input": "Who wrote Pride and Prejudice?",
        "context": filler + " " + AUSTEN,
        "output": "Jane Austen",
    }
    (result,) = scores(model, [item])
    assert result.windows > 1 and result.truncated_tokens == 0
    assert result.passed  # the supporting sentence sits in the last window only


# Version 2's known misses: kept in the test, expected to fail until a version gets them right.
KNOWN_MISSES: dict[str, str] = {}  # faithful answer -> why it fails (none today)
OBVIOUS = [
    pytest.param(pair, id=pair["faithful"][:40], marks=[pytest.mark.xfail(strict=True, reason=why)])
    if (why := KNOWN_MISSES.get(pair["faithful"]))
    else pytest.param(pair, id=pair["faithful"][:40])
    for pair in read_rows(ROOT / "models" / "dev_sets" / "obvious_pairs.csv")
]
TRIVIAL = ("length_only", "word_overlap", "missing_words")


@pytest.fixture(scope="module")
def model_2() -> MetricModel:
    return MetricModel(load_artifact(FOLDER_2))


def test_version_2_manifest_vouches_for_its_figures(model_2: MetricModel) -> None:
    manifest = model_2.artifact.manifest
    assert manifest.spec.name == "context_adherence" and manifest.spec.version == "2"
    assert manifest.parity["decision_agreement"] >= 0.99
    assert manifest.parity["batch_max_score_delta"] <= 0.005
    for record in ("halueval_qa", "halueval_dialogue", "halueval_summarization", "handwritten_rag"):
        quality = manifest.quality[record]
        best = max(quality["baselines"][b]["roc_auc"] for b in TRIVIAL)
        assert quality["roc_auc"] > best, (record, quality["roc_auc"], best)
    for record in ("halueval_qa", "halueval_dialogue", "halueval_summarization"):
        assert manifest.quality[record]["accuracy"] >= 0.60, record


@pytest.mark.parametrize("pair", OBVIOUS)
def test_version_2_gets_obvious_pairs_right(model_2: MetricModel, pair: dict[str, str]) -> None:
    items = [
        {"input": pair["input"], "context": pair["context"], "output": pair[k]}
        for k in ("faithful", "hallucinated")
    ]
    good, bad = scores(model_2, items)
    assert good.passed and not bad.passed, (good.score, bad.score, model_2.artifact.manifest.spec.threshold)


@pytest.mark.parametrize("answer", ["Jane Austen", "Jane Austen wrote it."])
def test_version_2_windows_a_long_context(model_2: MetricModel, answer: str) -> None:
    filler = " ".join(f"Paragraph {i} talks about the weather in spring and the harvest." for i in range(150))
    question = "Who wrote Pride and Prejudice?"
    right, wrong = (
        {"input": question, "context": filler + " " + AUSTEN, "output": output}
        for output in (answer, answer.replace("Jane Austen", "Charles Dickens"))
    )
    found, not_found = scores(model_2, [right, wrong])
    assert found.windows > 1 and found.truncated_tokens == 0
    assert found.passed and not not_found.passed  # the supporting sentence sits in the last window only


@pytest.mark.xfail(
    strict=True, reason="version 2's known miss: a short wrong answer against a one-sentence context passes"
)
def test_version_2_rejects_a_short_wrong_answer_against_a_short_context(model_2: MetricModel) -> None:
    context = "The Eiffel Tower is a wrought-iron tower in Paris, France."
    items = [
        {"input": "Where is the Eiffel Tower?", "context": context, "output": city}
        for city in ("London", "Madrid")
    ]
    assert not any(r.passed for r in scores(model_2, items))


def test_version_2_answers_in_sentences_against_a_short_context(model_2: MetricModel) -> None:
    """The README's example: a sentence answer, right and with one place changed."""
    context = "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France."
    context += " It was completed in 1889."
    answers = ("It is in Paris, on the Champ de Mars.", "It is in Berlin, on the Champ de Mars.")
    right, wrong = scores(
        model_2, [{"input": "Where is the Eiffel Tower?", "context": context, "output": a} for a in answers]
    )
    assert right.passed and not wrong.passed, (right.score, wrong.score)
