"""Checkpoint -> ONNX (optimum) -> ORT graph optimisation -> int8 -> parity gate -> repository.

Static (calibrated) int8 is the default: dynamic int8 computes activation scales over the whole
batch, so an item's score would depend on its batch neighbours. Only MatMuls with a constant
weight are quantised (the projections and feed-forward layers, where the time goes); the
attention products between activations stay fp32, which keeps the scores close to fp32.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import onnxruntime
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from models.combine import fit_combiner
from models.data_check import read_labelled_csv
from models.parity import ParityError, ParityReport, measure_parity, onnx_forward, remembered
from models.provenance import load_card_notes, source_info
from models.repository import publish_entry
from models.row_int8 import channel_ranges, quantise_rows
from models.threshold import choose_threshold
from models.weight_blocks import MIN_WEIGHT_ELEMENTS, quantise_embedding_tables, quantise_matmul_weights
from service.runtime.classifier import score_encoded
from service.runtime.encoding import EncodedItem, PairEncoder, Window, collate
from service.runtime.evidence import EvidenceCombiner, EvidenceFeature
from service.runtime.postprocess import ItemScore
from service.runtime.spec import MetricSpec
from service.runtime.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

# "embeddings": fp32 compute, only the word-embedding table stored as int8 blocks (half the file,
# the same scores to within the parity gate); "weights": fp32 compute, the embeddings and every
# large MatMul weight stored as int8 blocks that ONNX Runtime folds back to fp32 at load (a
# quarter of the file, the speed of fp32); "rows": int8 products with one activation scale per
# token (models/row_int8.py: batch-invariant, unlike "dynamic"); "none": the fp32 model as exported.
Quantization = Literal["static", "dynamic", "rows", "embeddings", "weights", "none"]


@dataclass(frozen=True)
class ExportOptions:
    quantization: Quantization = "static"
    calibration_rows: int = 128  # items from the eval CSV whose windows set activation ranges
    calibration_method: Literal["minmax", "percentile"] = "minmax"
    per_channel: bool = True  # per-channel weights: same speed, much closer to fp32
    embeddings_int8: bool = True  # word embeddings as int8 blocks: half the file, no speed cost
    weight_min_elements: int = MIN_WEIGHT_ELEMENTS  # "weights": smaller MatMul weights stay fp32
    fp32_matmuls: tuple[str, ...] = ()  # "rows": MatMuls whose node name holds one of these stay fp32
    opset: int = 18
    parity_rows: int = 0  # 0: every row of the eval CSV
    batch_probe_items: int = 48  # items scored alone and in mixed batches for invariance
    evidence_features: tuple[str, ...] = ()  # combine these with the encoder, fitted on the eval CSV
    windowed_evidence_features: tuple[str, ...] = ()  # weights of their own for items read in windows
    threshold_from_eval: bool = False  # choose the threshold on the eval CSV (models/threshold.py)
    group_column: str = "source"  # the eval CSV's column naming each row's task, for that choice

    def __post_init__(self) -> None:
        if self.fp32_matmuls and self.quantization != "rows":
            raise ValueError("--keep-fp32 names MatMuls to leave out of --quantization rows only")
        if self.windowed_evidence_features and not self.evidence_features:
            raise ValueError("windowed evidence weights (--evidence-windowed) need --evidence as well")


MIN_PARITY_ROWS = 100


def split_calibration(
    rows: list[dict[str, str]], options: ExportOptions
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Calibration rows first; parity is measured on the rows after them when enough remain."""
    if options.calibration_rows <= 0:
        raise ValueError("calibration_rows must be a positive number of rows")
    calibration = rows[: options.calibration_rows]
    rest = rows[options.calibration_rows :]
    parity = rest if len(rest) >= MIN_PARITY_ROWS else rows  # small eval sets: measure on all
    return calibration, parity[: options.parity_rows] if options.parity_rows else parity


def export_onnx(checkpoint: Path, out_dir: Path, opset: int) -> Path:
    """fp32 ONNX with dynamic batch and sequence axes, through optimum's exporter."""
    from optimum.exporters.onnx import main_export

    main_export(
        str(checkpoint),
        output=out_dir,
        task="text-classification",
        opset=opset,
        local_files_only=True,
        do_validation=False,
        library_name="transformers",
    )
    model = out_dir / "model.onnx"
    if not model.exists():
        raise RuntimeError(f"optimum wrote no model.onnx into {out_dir}")
    return model


def optimise_graph(model: Path, out: Path) -> Path:
    """ORT's offline graph optimisation (constant folding, shape inference) before int8."""
    quant_pre_process(str(model), str(out), skip_symbolic_shape=True)
    return out


def weight_matmuls(model: Path) -> list[str]:
    """Names of MatMul nodes whose second input is a constant: the layers worth int8."""
    graph = onnx.load(str(model), load_external_data=False).graph
    constants = {t.name for t in graph.initializer}
    constants |= {n.output[0] for n in graph.node if n.op_type == "Constant"}
    return [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in constants]


class _WindowReader(CalibrationDataReader):  # type: ignore[misc]
    """Feeds calibration windows to ORT in small length-sorted batches."""

    def __init__(self, windows: Sequence[Window], pad_id: int, input_names: Sequence[str]) -> None:
        ordered = sorted(windows, key=len)
        self._batches: Iterator[dict[str, np.ndarray]] = iter(
            {k: v for k, v in collate(ordered[i : i + 8], pad_id).items() if k in input_names}
            for i in range(0, len(ordered), 8)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantise(
    model: Path, out: Path, options: ExportOptions, windows: Sequence[Window], pad_id: int
) -> dict[str, Any]:
    """Write the int8 (or fp32) model to `out`; returns what was done, for the manifest."""
    if options.quantization in ("none", "embeddings", "weights"):
        shutil.copyfile(model, out)
        if options.quantization == "embeddings":
            return {"mode": "embeddings", "embeddings": _embeddings(out)}
        if options.quantization == "weights":
            matmuls = quantise_matmul_weights(out, out, min_elements=options.weight_min_elements)
            return {
                "mode": "weights",
                "compute": "fp32 (int8 blocks folded back to fp32 weights when the session loads)",
                "embeddings": _embeddings(out),
                "matmul_weights": {"int8_weight_only_blocks_of_32_along_k": len(matmuls)},
            }
        return {"mode": "none"}
    input_names = [i.name for i in onnx.load(str(model), load_external_data=False).graph.input]
    if options.quantization == "rows":
        reader = _WindowReader(windows, pad_id, input_names)
        ranges = channel_ranges(
            model, iter(reader.get_next, None), min_elements=options.weight_min_elements,
            keep_fp32=options.fp32_matmuls,
        )  # fmt: skip
        info = quantise_rows(
            model, out, min_elements=options.weight_min_elements, keep_fp32=options.fp32_matmuls,
            channel_ranges=ranges,
        )  # fmt: skip
        if options.fp32_matmuls:
            info["fp32_matmuls"] = list(options.fp32_matmuls)
        info["calibration_windows"] = len(windows)
        if options.embeddings_int8:
            info["embeddings"] = _embeddings(out)
        return info
    nodes = weight_matmuls(model)
    if options.quantization == "dynamic":
        quantize_dynamic(
            str(model),
            str(out),
            per_channel=options.per_channel,
            weight_type=QuantType.QInt8,
            nodes_to_quantize=nodes,
        )
        info = {"mode": "dynamic", "per_channel": options.per_channel, "nodes": len(nodes)}
        if options.embeddings_int8:
            info["embeddings"] = _embeddings(out)
        return info
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
    quantize_static(
        str(model),
        str(out),
        _WindowReader(windows, pad_id, input_names),
        quant_format=QuantFormat.QDQ,
        per_channel=options.per_channel,
        reduce_range=False,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_quantize=nodes,
        calibrate_method=method[options.calibration_method],
    )
    info = {
        "mode": "static",
        "format": "QDQ",
        "activations": "uint8 per-tensor, calibrated",
        "weights": "int8 per-channel" if options.per_channel else "int8 per-tensor",
        "calibration_method": options.calibration_method,
        "calibration_windows": len(windows),
        "nodes": len(nodes),
        "kept_fp32": "attention products between activations, LayerNorm, softmax, GELU",
    }
    if options.embeddings_int8:
        info["embeddings"] = _embeddings(out)
    return info


def _embeddings(model: Path) -> dict[str, Any]:
    tables = quantise_embedding_tables(model, model)
    return {"int8_weight_only_blocks_of_32": tables}


def _versions() -> dict[str, str]:
    import optimum.version
    import torch
    import transformers

    return {
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "optimum": optimum.version.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }


def export_to_repository(
    checkpoint: Path,
    spec: MetricSpec,
    repository: Path,
    *,
    eval_csv: Path,
    options: ExportOptions | None = None,
    force: bool = False,
    card_notes: Path | None = None,
) -> Path:
    """Export, check parity against the checkpoint, and publish `<repository>/<name>/<version>`.

    Raises ParityError (and publishes nothing) when the artifact misses the spec's bounds.
    """
    options = options or ExportOptions()
    target = repository / spec.name / spec.version
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists; pass --force to replace that version")
    tokenizer_json = checkpoint / "tokenizer.json"
    if not tokenizer_json.is_file():
        raise FileNotFoundError(f"{checkpoint}: no tokenizer.json (a fast tokenizer is required)")
    rows = read_labelled_csv(eval_csv, spec)
    encoder = PairEncoder(load_tokenizer(tokenizer_json), spec)
    calibration_rows, parity_rows = split_calibration(rows, options)
    calibration = [
        w
        for item in encoder.try_encode_many(calibration_rows)
        if isinstance(item, EncodedItem)
        for w in item.windows
    ]
    with tempfile.TemporaryDirectory(prefix="lunaserve-export-") as tmp:
        work = Path(tmp)
        log.info("exporting %s to ONNX (opset %d)", checkpoint, options.opset)
        fp32 = export_onnx(checkpoint, work / "onnx", options.opset)
        optimised = optimise_graph(fp32, work / "optimised.onnx")
        log.info("quantising (%s) with %d calibration windows", options.quantization, len(calibration))
        final = work / "model.onnx"
        quantisation = quantise(optimised, final, options, calibration, encoder.pad_id)
        artifact = remembered(onnx_forward(final, encoder.pad_id, spec.activation))  # parity reuses it
        eval_scores = _eval_scores(artifact, encoder, rows, eval_csv, options)
        combiner = eval_scores.combiner
        threshold_choice = None
        if options.threshold_from_eval:
            threshold_choice = choose_threshold(
                eval_scores.scores, eval_scores.positives, eval_scores.groups(options.group_column)
            )
            log.info("threshold: %s", threshold_choice)
            spec = spec.model_copy(update={"threshold": threshold_choice.value})
            encoder = PairEncoder(encoder.tokenizer, spec)
        report: ParityReport = measure_parity(
            checkpoint,
            final,
            encoder,
            parity_rows,
            combiner=combiner,
            batch_probe_items=options.batch_probe_items,
            artifact_forward=artifact,
        )
        log.info("parity: %s", report.summary())
        failures = report.failures(spec.parity)
        if failures:
            raise ParityError(
                f"{checkpoint}: the exported artifact misses the parity bounds: {'; '.join(failures)}."
                " Nothing was published."
            )
        export_info = {
            "opset": options.opset,
            "exporter": "optimum.exporters.onnx.main_export (dynamic batch and sequence axes)",
            "graph_optimisation": "onnxruntime quant_pre_process offline; ORT_ENABLE_ALL at load",
            "quantization": quantisation,
            "calibration_rows": len(calibration_rows),
            "parity_rows": len(parity_rows),
            "parity_excludes_calibration_rows": len(rows) - len(calibration_rows) >= MIN_PARITY_ROWS,
            "cpu_flags": _cpu_flags(),
            "versions": _versions(),
            "options": asdict(options),
            "threshold": (
                threshold_choice.to_dict() | {"fitted_on": f"{eval_csv.name} ({len(eval_scores.rows)} rows)"}
                if threshold_choice
                else {"value": spec.threshold, "rule": "as the metric's spec states"}
            ),
        }
        return publish_entry(
            repository,
            spec,
            model=final,
            tokenizer=tokenizer_json,
            source=source_info(checkpoint, load_card_notes(card_notes)),
            export=export_info,
            parity=report.to_dict(),
            evidence=combiner,
            force=force,
        )


@dataclass(frozen=True)
class EvalScores:
    """The artifact's served scores of the eval rows (encoder alone, then with its combiner)."""

    rows: list[dict[str, str]]
    scores: list[float]
    positives: list[bool]
    combiner: EvidenceCombiner | None

    def groups(self, column: str) -> list[str]:
        return [row.get(column) or "all" for row in self.rows]


def _eval_scores(
    artifact: Callable[[Sequence[Window]], np.ndarray],
    encoder: PairEncoder,
    rows: list[dict[str, str]],
    eval_csv: Path,
    options: ExportOptions,
) -> EvalScores:
    """Score the eval rows with the exported artifact; fit the declared evidence combiner on them."""
    results = score_encoded(encoder.try_encode_many(rows), artifact, encoder.spec)
    kept = [(row, r) for row, r in zip(rows, results, strict=True) if isinstance(r, ItemScore)]
    kept_rows, scores = [row for row, _ in kept], [r.score for _, r in kept]
    windows = [r.windows for _, r in kept]
    positives = [row["label"] == encoder.spec.positive_label for row in kept_rows]
    alone = EvalScores(kept_rows, scores, positives, None)
    if not options.evidence_features:
        return alone
    features = [EvidenceFeature(f) for f in options.evidence_features]
    windowed = [EvidenceFeature(f) for f in options.windowed_evidence_features]
    split = (
        f"; items read in several windows ({sum(n > 1 for n in windows)} rows) weighted on their own"
        if windowed else ""
    )  # fmt: skip
    combiner = fit_combiner(
        scores, kept_rows, encoder.spec.positive_label, features, groups=alone.groups(options.group_column),
        windows=windows, windowed_features=windowed,
        fitted_on=f"{eval_csv.name} ({len(kept)} rows), sign-constrained logistic regression (L2, C=1,"
        f" every task weighted equally) on the artifact's encoder scores{split}",
    )  # fmt: skip
    log.info("evidence combiner: %s", combiner.model_dump_json())
    combined = [
        combiner.combine(s, combiner.features(row, windows=n), windows=n)
        for s, row, n in zip(scores, kept_rows, windows, strict=True)
    ]
    return EvalScores(kept_rows, combined, positives, combiner)


def _cpu_flags() -> list[str]:
    """The int8 kernels ORT picks depend on these; recorded so a reader can compare machines."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    flags = set(text.split())
    return [f for f in wanted if f in flags]
