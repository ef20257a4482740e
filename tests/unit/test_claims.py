"""Claim-by-claim scoring: sentences split, each scored against every window, the weakest decides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.runtime.claims import sentences, split_claims
from service.runtime.classifier import MetricModel
from service.runtime.postprocess import ItemScore, aggregate_claims
from service.runtime.spec import MetricSpec, WindowAggregation
from tests.conftest import counting_spec
from tests.tiny_models import expected_score, write_counting_artifact


def test_sentences_split_after_end_marks() -> None:
    assert sentences("It opens at 9. Entry is free! Really? yes") == [
        "It opens at 9.",
        "Entry is free!",
        "Really?",
        "yes",
    ]
    assert sentences("3.5 percent of U.S.A.") == ["3.5 percent of U.S.A."]
    assert sentences("   ") == []


def test_short_fragments_join_a_neighbour_and_claims_are_capped() -> None:
    assert split_claims("Yes. The tower is in Paris.", max_claims=8, min_words=3) == [
        "Yes. The tower is in Paris."
    ]
    assert split_claims("The tower is in Paris. It is tall.", max_claims=8, min_words=3) == [
        "The tower is in Paris.",
        "It is tall.",
    ]
    five = " ".join(f"Claim number {i} holds." for i in range(5))
    capped = split_claims(five, max_claims=3, min_words=3)
    assert (
        len(capped) == 3 and capped[-1] == "Claim number 2 holds. Claim number 3 holds. Claim number 4 holds."
    )
    assert split_claims("", max_claims=3, min_words=3) == [""]


def test_weakest_claim_gives_the_item_row() -> None:
    probs = np.array([[0.2, 0.8], [0.6, 0.4], [0.1, 0.9], [0.7, 0.3], [0.5, 0.5]])
    # claim 1: windows 0-1 (best 0.8); claim 2: windows 2-3 (best 0.9); claim 3: window 4 (0.5)
    row = aggregate_claims(probs, (2, 2, 1), positive=1, how=WindowAggregation.MAX)
    assert row.tolist() == [0.5, 0.5]
    with pytest.raises(ValueError):
        aggregate_claims(probs, (2, 2), positive=1, how=WindowAggregation.MAX)


def _model(tmp_path: Path, spec: MetricSpec) -> MetricModel:
    work = tmp_path / "work"
    work.mkdir(parents=True, exist_ok=True)
    return MetricModel.load(write_counting_artifact(tmp_path / "repo", spec, work))


def test_a_response_is_as_faithful_as_its_weakest_claim(tmp_path: Path) -> None:
    claims = {"max_claims": 8, "min_claim_words": 2}
    by_claims = _model(tmp_path / "a", counting_spec(claims=claims))
    whole = _model(tmp_path / "b", counting_spec())
    item = {"input": "", "context": "the city", "output": "good good good. bad the city."}
    (claimed,) = by_claims.score([item])
    (plain,) = whole.score([item])
    assert isinstance(claimed, ItemScore) and isinstance(plain, ItemScore)
    assert claimed.score == pytest.approx(expected_score(0, 1))  # "bad the city." is the weakest
    assert plain.score == pytest.approx(expected_score(3, 1))
    assert claimed.windows == 2 and plain.windows == 1


def test_each_claim_finds_its_own_window(tmp_path: Path) -> None:
    # Context: "good" near its start only, the filler after it: a long context in several windows.
    spec = counting_spec(
        claims={"max_claims": 8, "min_claim_words": 2}, long_input={"window_overlap_tokens": 0}
    )
    model = _model(tmp_path, spec)
    context = "good " + " ".join(["x"] * 120)
    item = {"input": "", "context": context, "output": "the city. the river."}
    (result,) = model.score([item])
    assert isinstance(result, ItemScore)
    per_claim = result.windows // 2
    assert per_claim > 1 and result.windows == 2 * per_claim
    assert result.score == pytest.approx(expected_score(1, 0))  # each claim's best window holds "good"


def test_claims_must_split_a_field_that_is_never_cut() -> None:
    with pytest.raises(ValueError, match="never cut"):
        counting_spec(claims={"field": "context"})
