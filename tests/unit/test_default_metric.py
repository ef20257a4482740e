"""The committed default metric loads, verifies, and gets obvious pairs right.

Its encoder learned HaluEval QA's style (short answers after a question), and its model card
says so; the obvious pairs here are in that style.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from service.runtime.artifact import load_artifact
from service.runtime.classifier import MetricModel
from service.runtime.postprocess import ItemScore

FOLDER = Path(__file__).resolve().parents[2] / "repository" / "context_adherence" / "1"
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
