"""models.calibrate and `lunaserve calibrate`: the threshold fitted to the customer's rows."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from lunaserve.cli import main
from models.calibrate import CalibrationError, Objective, bootstrap, figures_at, fit
from service.runtime.artifact import load_artifact
from service.runtime.classifier import MetricModel
from tests.tiny_models import expected_score, write_counting_artifact
from tests.unit.test_evaluate import spec_for_tests


def brute_force(scores: np.ndarray, good: np.ndarray) -> list[tuple[float, dict[str, float]]]:
    """Every threshold on a fine grid with its figures: what `fit` must match."""
    return [(t, figures_at(scores, good, t)) for t in np.linspace(-0.001, 1.001, 2003)]


def test_fit_finds_the_known_best_threshold_of_two_equal_classes() -> None:
    """Two equal Gaussians around 0.3 and 0.7: the best macro-F1 threshold is their midpoint."""
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(0.7, 0.1, 3000), rng.normal(0.3, 0.1, 3000)])
    good = np.arange(6000) < 3000
    threshold, reached = fit(scores, good, Objective.parse("macro_f1"))
    assert threshold == pytest.approx(0.5, abs=0.02)
    assert reached["macro_f1"] == pytest.approx(0.977, abs=0.01)  # 1 - Phi(2) per side
    stability = bootstrap(scores, good, Objective("macro_f1"), threshold, samples=200, seed=1)
    lo, hi = stability["threshold"]
    assert lo <= threshold <= hi and hi - lo < 0.05
    assert stability["unreachable_samples"] == 0


@pytest.mark.parametrize("seed", range(5))
def test_fit_matches_brute_force_for_every_objective(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(30, 120))
    good = rng.random(n) < 0.5
    good[:2] = [True, False]
    scores = np.clip(np.where(good, rng.normal(0.65, 0.2, n), rng.normal(0.4, 0.2, n)), 0, 1).round(3)
    grid = brute_force(scores, good)
    threshold, reached = fit(scores, good, Objective("macro_f1"))
    assert reached == figures_at(scores, good, threshold)
    assert reached["macro_f1"] == pytest.approx(max(f["macro_f1"] for _, f in grid))
    for kind, other in (("bad_precision", "bad_recall"), ("bad_recall", "bad_precision")):
        target = 0.7
        feasible = [
            f for _, f in grid if f[kind] >= target and (kind != "bad_precision" or f["bad_recall"] > 0)
        ]
        objective = Objective(kind, target)  # type: ignore[arg-type]
        if not feasible:
            with pytest.raises(CalibrationError, match="no threshold reaches"):
                fit(scores, good, objective)
            continue
        threshold, reached = fit(scores, good, objective)
        assert reached[kind] >= target
        assert reached[other] == pytest.approx(max(f[other] for f in feasible))


def test_objectives_parse_and_refuse_nonsense() -> None:
    assert Objective.parse("bad_precision:0.9") == Objective("bad_precision", 0.9)
    assert str(Objective.parse("bad_recall:1")) == "bad_recall:1"
    for text in ("f1", "bad_precision", "bad_precision:1.5", "bad_recall:0", "bad_recall:-0.2"):
        with pytest.raises(CalibrationError, match="objective"):
            Objective.parse(text)


def test_fit_needs_both_classes_and_reachable_targets() -> None:
    with pytest.raises(CalibrationError, match="both"):
        fit(np.array([0.2, 0.8]), np.array([True, True]), Objective("macro_f1"))
    scores = np.array([0.1, 0.2, 0.3, 0.4])  # the good rows score lowest: flags are never right
    good = np.array([True, True, False, False])
    with pytest.raises(CalibrationError, match=r"no threshold reaches bad_precision:0\.9"):
        fit(scores, good, Objective("bad_precision", 0.9))


def write_rows(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["input", "output", "context", "label"])
        for i, (output, label) in enumerate(rows):
            writer.writerow(["who", output, f"the city {i}", label])
    return path


def test_cli_calibrate_publishes_a_version_with_the_fitted_threshold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The counting model scores sigmoid(#good - #bad): every row sits below the spec's 0.5, so
    the shipped threshold flags them all; the fitted one separates them."""
    spec = spec_for_tests()
    entry = write_counting_artifact(tmp_path / "repo", spec, tmp_path)
    rows = [("good bad bad", "supported")] * 20 + [("bad bad bad", "hallucinated")] * 20
    rows += [("bad bad bad", "supported")] * 2  # two good rows the model cannot tell apart
    test_csv = write_rows(tmp_path / "mine.csv", rows)
    code = main(["calibrate", str(entry), "--test", str(test_csv), "--bootstrap", "50"])
    out = capsys.readouterr().out
    assert code == 0, out
    version = str(int(spec.version) + 1)
    folder = entry.parent / version
    assert f"published {folder}" in out and "threshold 0.5 -> " in out
    manifest = load_artifact(folder).manifest  # verifies digests and layout
    low, high = expected_score(0, 3), expected_score(1, 2)
    assert manifest.spec.version == version
    assert manifest.spec.threshold == pytest.approx((low + high) / 2)
    record = manifest.export["threshold"]
    assert record["calibrated_from"] == f"{spec.name}/{spec.version}" and record["objective"] == "macro_f1"
    assert record["before"]["bad_recall"] == 1.0 and record["before"]["macro_f1"] < 0.5
    assert record["reached"]["bad_recall"] == 1.0 and record["reached"]["bad_precision"] == pytest.approx(
        20 / 22
    )
    assert record["stability"]["samples"] == 50
    assert manifest.files["model.onnx"].sha256 == load_artifact(entry).manifest.files["model.onnx"].sha256
    assert os.path.samefile(folder / "model.onnx", entry / "model.onnx")  # shared, not copied
    card = (folder / "MODEL_CARD.md").read_text()
    assert f"Calibrated from {spec.name}/{spec.version} on mine.csv" in card and "bootstrap samples" in card
    results = MetricModel(load_artifact(folder)).score(
        [{"input": "who", "output": o, "context": "x"} for o, _ in rows]
    )
    assert [r.passed for r in results] == [True] * 20 + [False] * 22  # type: ignore[union-attr]


def test_cli_calibrate_names_an_unreachable_objective(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = write_counting_artifact(tmp_path / "repo", spec_for_tests(), tmp_path)
    rows = [("bad bad bad", "supported")] * 5 + [("good", "hallucinated")] * 5  # ranked backwards
    test_csv = write_rows(tmp_path / "mine.csv", rows)
    code = main(["calibrate", str(entry), "--test", str(test_csv), "--objective", "bad_precision:0.9"])
    assert code == 1
    assert "no threshold reaches bad_precision:0.9" in capsys.readouterr().err
    assert sorted(p.name for p in entry.parent.iterdir()) == [entry.name]  # nothing published
