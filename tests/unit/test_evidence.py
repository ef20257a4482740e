"""service.runtime.evidence and models.combine: features, the logistic combination, fitting it."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from models.combine import fit_combiner
from service.runtime.classifier import MetricModel
from service.runtime.evidence import EvidenceCombiner, EvidenceFeature, evidence_features
from tests.conftest import counting_spec
from tests.tiny_models import expected_score, write_counting_artifact

F = EvidenceFeature


def test_evidence_features_count_what_the_context_lacks() -> None:
    features = evidence_features(
        "Marie Curie won 2 Nobel prizes in 1911, the year she moved to Berlin.",
        "Marie Curie received the Nobel prize in Chemistry in 1911.",
    )
    # content words absent: won, 2, prizes, year, moved, berlin
    assert features[F.N_MISSING_CONTENT] == 6
    assert features[F.SHARE_MISSING_CONTENT] == pytest.approx(6 / 10)
    assert features[F.N_MISSING_NAMES] == 1  # berlin
    assert features[F.N_MISSING_NUMBERS] == 1  # 2
    assert evidence_features("", "anything")[F.SHARE_MISSING_CONTENT] == 0.0


def test_evidence_combiner_is_a_logistic_model_of_logit_and_features() -> None:
    combiner = EvidenceCombiner(model_weight=2.0, feature_weights={F.N_MISSING_CONTENT: -1.5}, bias=0.25)
    p = 0.8
    expected = 1 / (1 + math.exp(-(2.0 * math.log(p / (1 - p)) - 1.5 * 3 + 0.25)))
    assert combiner.combine(p, {F.N_MISSING_CONTENT: 3.0}) == pytest.approx(expected)
    assert 0.0 < combiner.combine(1.0, {F.N_MISSING_CONTENT: 0.0}) < 1.0  # clipped, never inf


def test_metric_model_applies_the_declared_combiner_on_the_whole_context(tmp_path: Path) -> None:
    combiner = EvidenceCombiner(model_weight=1.0, feature_weights={F.N_MISSING_CONTENT: -1.0}, bias=0.0)
    folder = write_counting_artifact(tmp_path / "repo", counting_spec(), tmp_path, evidence=combiner)
    model = MetricModel.load(folder)
    long_context = " ".join(["x"] * 150) + " paris"  # "paris" only in the last window
    supported, unsupported = model.score(
        [
            {"output": "good paris", "context": long_context},
            {"output": "good berlin", "context": long_context},
        ]
    )
    p = expected_score(1, 0)
    logit = math.log(p / (1 - p))
    assert supported.windows > 1
    assert supported.score == pytest.approx(1 / (1 + math.exp(-(logit - 1))))  # "good" is missing
    assert unsupported.score == pytest.approx(1 / (1 + math.exp(-(logit - 2))))  # "good", "berlin"


def test_fit_combiner_learns_that_missing_words_count_against() -> None:
    rng = random.Random(0)
    rows, scores = [], []
    for i in range(200):
        supported = i % 2 == 0
        extra = "" if supported else " " + " ".join(rng.choice(["berlin", "rome", "oslo"]) for _ in range(2))
        rows.append({"output": "paris is big" + extra, "context": "paris is big and old",
                     "label": "supported" if supported else "hallucinated"})  # fmt: skip
        scores.append(rng.uniform(0.3, 0.7))  # an uninformative encoder
    combiner = fit_combiner(scores, rows, "supported", [F.N_MISSING_CONTENT], fitted_on="toy rows")
    assert combiner.feature_weights[F.N_MISSING_CONTENT] < -1
    assert abs(combiner.model_weight) < abs(combiner.feature_weights[F.N_MISSING_CONTENT])
    with pytest.raises(ValueError, match="both classes"):
        fit_combiner([0.5], [rows[0]], "supported", [F.N_MISSING_CONTENT], fitted_on="")
