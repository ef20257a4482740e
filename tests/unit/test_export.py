"""models.export on a tiny random BERT: the real optimum export, static int8 and the parity gate."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from models.export import ExportOptions, export_to_repository, weight_matmuls
from models.parity import ParityError
from service.runtime.artifact import load_artifact
from service.runtime.classifier import MetricModel
from service.runtime.spec import MetricSpec, load_spec
from tests.tiny_models import WORDS, build_tiny_bert

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def tiny_spec(**parity: float) -> MetricSpec:
    raw = load_spec(ROOT / "specs" / "context_adherence.yaml").model_dump()
    raw["parity"].update(parity)
    return MetricSpec.model_validate({**raw, "max_tokens": 96})


def write_eval_csv(path: Path, labels: list[str], rows: int = 60) -> Path:
    rng = random.Random(0)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["input", "output", "context", "label"])
        for _ in range(rows):
            writer.writerow(
                [
                    " ".join(rng.choices(WORDS, k=3)),
                    " ".join(rng.choices(WORDS, k=rng.randint(2, 8))),
                    " ".join(rng.choices(WORDS, k=rng.randint(5, 150))),  # some need windows
                    rng.choice(labels),
                ]
            )
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = tiny_spec()
    return build_tiny_bert(tmp_path_factory.mktemp("ckpt"), spec.labels)


def test_export_static_int8_publishes_verified_entry(checkpoint: Path, tmp_path: Path) -> None:
    spec = tiny_spec()
    eval_csv = write_eval_csv(tmp_path / "eval.csv", spec.labels)
    folder = export_to_repository(
        checkpoint, spec, tmp_path / "repo", eval_csv=eval_csv, options=ExportOptions(calibration_rows=32)
    )
    artifact = load_artifact(folder)
    parity = artifact.manifest.parity
    assert parity["items"] == 60 and parity["windows"] > 60
    assert parity["decision_agreement"] >= spec.parity.min_decision_agreement
    assert parity["batch_max_score_delta"] <= spec.parity.max_batch_score_delta
    assert artifact.manifest.export["quantization"]["mode"] == "static"
    assert weight_matmuls(artifact.model_path) == []  # weights now behind QDQ, not bare MatMuls
    model = MetricModel(artifact)
    (result,) = model.score([{"output": "paris", "context": "the capital of france is paris"}])
    assert 0.0 <= result.score <= 1.0
    card = (folder / "MODEL_CARD.md").read_text()
    assert "decision agreement 1.000" in card or "decision agreement 0.9" in card


def test_export_refuses_to_publish_when_parity_misses(checkpoint: Path, tmp_path: Path) -> None:
    # An impossible bound: the int8 model cannot be exactly the fp32 one on every item.
    spec = tiny_spec(min_decision_agreement=1.0, max_f1_drop=0.0, max_batch_score_delta=0.0)
    raw = spec.model_dump()
    raw["parity"]["min_decision_agreement"] = 1.0
    eval_csv = write_eval_csv(tmp_path / "eval.csv", spec.labels)
    options = ExportOptions(quantization="dynamic", per_channel=False, calibration_rows=8)
    try:
        export_to_repository(checkpoint, spec, tmp_path / "repo", eval_csv=eval_csv, options=options)
    except ParityError as exc:
        assert "Nothing was published" in str(exc)
        assert not (tmp_path / "repo" / spec.name / spec.version).exists()
    else:
        pytest.fail("dynamic per-tensor int8 met a zero-tolerance bound; the gate did not bite")


def test_export_existing_version_needs_force(checkpoint: Path, tmp_path: Path) -> None:
    spec = tiny_spec()
    (tmp_path / "repo" / spec.name / spec.version).mkdir(parents=True)
    with pytest.raises(FileExistsError, match="--force"):
        export_to_repository(checkpoint, spec, tmp_path / "repo", eval_csv=tmp_path / "none.csv")


def test_export_with_evidence_fits_and_declares_the_combiner(checkpoint: Path, tmp_path: Path) -> None:
    spec = tiny_spec()
    eval_csv = write_eval_csv(tmp_path / "eval.csv", spec.labels)
    options = ExportOptions(calibration_rows=16, evidence_features=("n_missing_content",))
    folder = export_to_repository(checkpoint, spec, tmp_path / "repo", eval_csv=eval_csv, options=options)
    manifest = load_artifact(folder).manifest
    assert manifest.evidence is not None
    assert set(manifest.evidence.feature_weights) == {"n_missing_content"}
    assert manifest.parity["decision_agreement"] >= 0.99
    assert "How the score is computed" in (folder / "MODEL_CARD.md").read_text()


def test_export_chooses_the_threshold_for_every_task_and_records_how(
    checkpoint: Path, tmp_path: Path
) -> None:
    spec = tiny_spec()
    plain = write_eval_csv(tmp_path / "plain.csv", spec.labels)
    with open(plain, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    eval_csv = tmp_path / "eval.csv"
    with open(eval_csv, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*rows[0], "source"])
        writer.writeheader()
        writer.writerows({**row, "source": "task_a" if i % 3 else "task_b"} for i, row in enumerate(rows))
    options = ExportOptions(
        quantization="none", evidence_features=("share_missing_content",), threshold_from_eval=True
    )
    folder = export_to_repository(checkpoint, spec, tmp_path / "repo", eval_csv=eval_csv, options=options)
    manifest = load_artifact(folder).manifest
    choice = manifest.export["threshold"]
    assert manifest.spec.threshold == choice["value"] != spec.threshold
    assert set(choice["accuracy_by_group"]) == {"task_a", "task_b"}
    assert choice["rows_by_group"] == {"task_a": 40, "task_b": 20}
    assert "lowest per-task accuracy" in choice["rule"] and choice["fitted_on"] == "eval.csv (60 rows)"
    card = (folder / "MODEL_CARD.md").read_text()
    assert "How the threshold was chosen" in card and f"{manifest.spec.threshold:.4g}" in card


def test_export_embeddings_mode_keeps_fp32_compute(checkpoint: Path, tmp_path: Path) -> None:
    """`embeddings`: only large word-embedding tables become int8 blocks; the encoder stays fp32."""
    spec = tiny_spec()
    eval_csv = write_eval_csv(tmp_path / "eval.csv", spec.labels)
    options = ExportOptions(quantization="embeddings")
    folder = export_to_repository(checkpoint, spec, tmp_path / "repo", eval_csv=eval_csv, options=options)
    manifest = load_artifact(folder).manifest
    quantisation = manifest.export["quantization"]
    assert quantisation["mode"] == "embeddings"
    assert quantisation["embeddings"] == {"int8_weight_only_blocks_of_32": []}  # the tiny table is small
    assert manifest.parity["decision_agreement"] == 1.0
    assert manifest.parity["batch_max_score_delta"] <= 1e-5


def test_export_weights_mode_stores_int8_blocks_and_serves_fp32(checkpoint: Path, tmp_path: Path) -> None:
    """`weights`: every MatMul weight stored as int8 blocks, folded back to fp32 when the session loads."""
    import onnx
    import onnxruntime as ort

    spec = tiny_spec()
    eval_csv = write_eval_csv(tmp_path / "eval.csv", spec.labels)
    plain = export_to_repository(
        checkpoint, spec, tmp_path / "plain", eval_csv=eval_csv, options=ExportOptions(quantization="none")
    )
    options = ExportOptions(quantization="weights", weight_min_elements=1)
    folder = export_to_repository(checkpoint, spec, tmp_path / "repo", eval_csv=eval_csv, options=options)
    manifest = load_artifact(folder).manifest
    quantisation = manifest.export["quantization"]
    stored = onnx.load(str(folder / "model.onnx")).graph
    int8 = [t for t in stored.initializer if t.data_type == onnx.TensorProto.INT8]
    matmuls = quantisation["matmul_weights"]["int8_weight_only_blocks_of_32_along_k"]
    assert quantisation["mode"] == "weights" and matmuls > 0 and len(int8) >= matmuls
    assert (folder / "model.onnx").stat().st_size < (plain / "model.onnx").stat().st_size
    assert manifest.parity["decision_agreement"] == 1.0
    assert manifest.parity["batch_max_score_delta"] <= 1e-5
    assert "folded back to fp32" in (folder / "MODEL_CARD.md").read_text()
    # The dequantising nodes are constants only: the optimised graph keeps none of them.
    options_ort = ort.SessionOptions()
    options_ort.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options_ort.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(folder / "model.onnx"), options_ort, providers=["CPUExecutionProvider"])
    optimised = onnx.load(str(tmp_path / "optimised.onnx")).graph
    assert not [n.name for n in optimised.node if n.name.endswith("_dequantise")]
    assert not [t.name for t in optimised.initializer if t.data_type == onnx.TensorProto.INT8]


def test_export_options_refuse_windowed_weights_without_evidence() -> None:
    from models.export import ExportOptions

    with pytest.raises(ValueError, match="need --evidence"):
        ExportOptions(windowed_evidence_features=("local_missing_share",))


def test_export_rows_int8_publishes_a_batch_invariant_entry(checkpoint: Path, tmp_path: Path) -> None:
    spec = tiny_spec()
    eval_csv = write_eval_csv(tmp_path / "eval.csv", spec.labels)
    kept = "intermediate/dense"  # the tiny BERT's FFN input products stay fp32
    options = ExportOptions(
        quantization="rows", calibration_rows=8, weight_min_elements=1, fp32_matmuls=(kept,)
    )
    folder = export_to_repository(checkpoint, spec, tmp_path / "repo", eval_csv=eval_csv, options=options)
    artifact = load_artifact(folder)
    quantisation = artifact.manifest.export["quantization"]
    assert quantisation["mode"] == "rows" and quantisation["matmuls"] > 0 and "smoothing" in quantisation
    left = weight_matmuls(artifact.model_path)  # the named ones, and only those, are fp32 MatMuls
    assert left and all(kept in name for name in left)
    assert artifact.manifest.parity["batch_max_score_delta"] <= 1e-6  # one scale per token
    assert "Quantisation: rows, int8 per output column" in (folder / "MODEL_CARD.md").read_text()


def test_export_keeps_named_matmuls_fp32_in_rows_mode_only() -> None:
    assert ExportOptions(quantization="rows", fp32_matmuls=("output/dense",)).fp32_matmuls == (
        "output/dense",
    )
    with pytest.raises(ValueError, match="--keep-fp32"):
        ExportOptions(quantization="weights", fp32_matmuls=("output/dense",))
