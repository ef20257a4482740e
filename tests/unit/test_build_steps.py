"""Pieces of `lunaserve build` that need no training: what a fine-tuned preset inherits."""

from __future__ import annotations

from pathlib import Path

from lunaserve.build import preset_evidence, quality_gate
from service.runtime.evidence import EvidenceCombiner, EvidenceFeature, LogisticWeights
from tests.conftest import counting_spec
from tests.tiny_models import write_counting_artifact

F = EvidenceFeature


def test_a_fine_tuned_preset_keeps_the_preset_s_evidence_features(tmp_path: Path) -> None:
    combiner = EvidenceCombiner(
        model_weight=1.0,
        feature_weights={F.SHARE_MISSING_CONTENT: -2.0, F.SHARE_MISSING_NUMBERS: -1.0},
        bias=0.0,
        windowed=LogisticWeights(model_weight=1.0, feature_weights={F.SHARE_MISSING_CONTENT: -1.0}, bias=0.0),
    )
    with_evidence = write_counting_artifact(tmp_path / "a", counting_spec(), tmp_path, evidence=combiner)
    plain = write_counting_artifact(tmp_path / "b", counting_spec(), tmp_path)
    assert preset_evidence(with_evidence) == (
        ("share_missing_content", "share_missing_numbers"),
        ("share_missing_content",),
    )
    assert preset_evidence(plain) == ((), ()) and preset_evidence(None) == ((), ())


def test_the_quality_gate_wants_more_than_trivial_and_no_less_than_the_preset() -> None:
    trivial = {"length_only": 0.55, "word_overlap": 0.70}
    assert quality_gate(0.80, trivial, None) is None
    assert quality_gate(0.80, trivial, 0.79) is None
    below_trivial = quality_gate(0.69, trivial, None)
    assert below_trivial is not None and "word overlap scorer (0.700)" in below_trivial
    below_preset = quality_gate(0.708, trivial, 0.786)
    assert below_preset is not None and "below the preset's 0.786" in below_preset
    assert "--approach preset_as_is" in below_preset
