"""Parity of an exported artifact against its PyTorch checkpoint, and batch invariance.

Both sides score the same windows through `service.runtime.classifier.score_encoded`, so the
only difference measured is the artifact itself (export, graph optimisation, int8).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.figures import macro_f1
from service.runtime.classifier import encode_with_evidence, score_encoded
from service.runtime.encoding import EncodedItem, PairEncoder, Window, collate
from service.runtime.evidence import EvidenceCombiner
from service.runtime.postprocess import ItemScore, probabilities
from service.runtime.session import OnnxSession
from service.runtime.spec import MetricSpec, ParityBounds

MIXED_GROUP_SIZES = (8, 32)  # items per mixed batch: a small one and the server's row cap
MIXED_PERMUTATIONS = 3


class ParityError(ValueError):
    """The artifact misses the spec's parity bounds; nothing is published."""


@dataclass(frozen=True)
class ParityReport:
    items: int
    windows: int
    max_abs_score_diff: float
    mean_abs_score_diff: float
    decision_agreement: float
    macro_f1_reference: float
    macro_f1_artifact: float
    f1_drop: float
    batch_probe_items: int
    batch_max_score_delta: float  # largest |served score alone - inside mixed padded batches|
    batch_decision_flips: int

    def failures(self, bounds: ParityBounds) -> list[str]:
        out = []
        if self.decision_agreement < bounds.min_decision_agreement:
            out.append(f"decision agreement {self.decision_agreement:.4f} < {bounds.min_decision_agreement}")
        if self.f1_drop > bounds.max_f1_drop:
            out.append(f"macro-F1 drop {self.f1_drop:.4f} > {bounds.max_f1_drop}")
        if self.batch_max_score_delta > bounds.max_batch_score_delta:
            out.append(
                f"score moves by {self.batch_max_score_delta:.4f} between alone and mixed batches"
                f" (> {bounds.max_batch_score_delta})"
            )
        return out

    def summary(self) -> str:
        return (
            f"agreement {self.decision_agreement:.4f}, max |dp| {self.max_abs_score_diff:.4f},"
            f" macro-F1 {self.macro_f1_reference:.4f} -> {self.macro_f1_artifact:.4f},"
            f" batch delta {self.batch_max_score_delta:.2e} ({self.batch_decision_flips} flips)"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def torch_forward(checkpoint: Path, pad_id: int, activation: str) -> Any:
    """A `forward` over windows with the PyTorch checkpoint in fp32 (the reference)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(checkpoint), local_files_only=True)
    model.eval()

    def forward(windows: Sequence[Window]) -> np.ndarray:
        batch = {k: torch.from_numpy(v) for k, v in collate(windows, pad_id).items()}
        with torch.inference_mode():
            logits = model(**batch).logits.float().numpy()
        return probabilities(logits, activation)

    return forward


def onnx_forward(model_path: Path, pad_id: int, activation: str) -> Any:
    session = OnnxSession(model_path)

    def forward(windows: Sequence[Window]) -> np.ndarray:
        return probabilities(session.run(collate(windows, pad_id)), activation)

    return forward


def remembered(forward: Callable[[Sequence[Window]], np.ndarray]) -> Callable[[Sequence[Window]], np.ndarray]:
    """`forward` that runs each distinct window (by its tokens) once, however often it is asked.

    The export scores the eval split with the artifact twice (the combiner and threshold, then
    parity: ~90 s a pass on 2 cores), and an evaluation scores its windows with and without the
    evidence. Never for batch invariance, which must run every batch it compares.
    """
    rows: dict[bytes, np.ndarray] = {}

    def run(windows: Sequence[Window]) -> np.ndarray:
        keys = [w.input_ids.tobytes() + b"/" + w.token_type_ids.tobytes() for w in windows]
        todo = {key: w for key, w in zip(keys, windows, strict=True) if key not in rows}
        if todo:
            for key, row in zip(todo, forward(list(todo.values())), strict=True):
                rows[key] = row
        return np.stack([rows[key] for key in keys])

    return run


def batch_invariance(
    forward: Any,
    encoded: Sequence[EncodedItem],
    spec: MetricSpec,
    combiner: EvidenceCombiner | None,
    *,
    probe_items: int,
    seed: int = 0,
) -> tuple[float, int, int]:
    """Largest change of an item's served score between scored alone and inside mixed batches.

    The score compared is the final one (every window, aggregation, evidence combiner), for a
    seeded random sample of items, inside groups of 8 and 32 items whose windows are padded
    together as the server would batch them. Returns (largest change, decisions flipped, items).
    """
    rng = random.Random(seed)
    probe = rng.sample(list(encoded), min(probe_items, len(encoded)))
    alone = np.array([_final([item], forward, spec, combiner)[0] for item in probe])
    worst, flips = 0.0, 0
    for group_size in MIXED_GROUP_SIZES:
        for _ in range(MIXED_PERMUTATIONS):
            order = list(range(len(probe)))
            rng.shuffle(order)
            for start in range(0, len(order), group_size):
                chunk = order[start : start + group_size]
                mixed = np.array(_final([probe[i] for i in chunk], forward, spec, combiner))
                delta = np.abs(mixed - alone[chunk])
                worst = max(worst, float(delta.max()))
                flips += int(np.sum((mixed >= spec.threshold) != (alone[chunk] >= spec.threshold)))
    return worst, flips, len(probe)


def _final(
    items: Sequence[EncodedItem], forward: Any, spec: MetricSpec, combiner: EvidenceCombiner | None
) -> list[float]:
    rows = max(MIXED_GROUP_SIZES)
    results = score_encoded(items, forward, spec, combiner, max_batch_rows=rows, max_batch_tokens=rows * 512)
    return [r.score for r in results if isinstance(r, ItemScore)]


def measure_parity(
    checkpoint: Path,
    artifact_model: Path,
    encoder: PairEncoder,
    rows: Sequence[Mapping[str, str]],
    *,
    combiner: EvidenceCombiner | None = None,
    batch_probe_items: int = 48,
    artifact_forward: Callable[[Sequence[Window]], np.ndarray] | None = None,
) -> ParityReport:
    """Final scores (after any evidence combiner) of the artifact against the checkpoint's.

    `artifact_forward` (e.g. `remembered`, holding windows the export already scored) replaces
    the artifact's own forward for the comparison; batch invariance always runs the artifact.
    """
    spec = encoder.spec
    encoded_all = encode_with_evidence(encoder, combiner, rows)
    kept = [(row, item) for row, item in zip(rows, encoded_all, strict=True) if isinstance(item, EncodedItem)]
    if not kept:
        raise ParityError("no row of the eval set could be encoded; cannot check parity")
    encoded = [item for _, item in kept]
    truth = [row["label"] == spec.positive_label for row, _ in kept]
    reference = torch_forward(checkpoint, encoder.pad_id, spec.activation)
    artifact = onnx_forward(artifact_model, encoder.pad_id, spec.activation)
    compared = artifact_forward or artifact
    ref_scores = _scores(score_encoded(encoded, reference, spec, combiner, progress="parity: PyTorch"))
    art_scores = _scores(score_encoded(encoded, compared, spec, combiner, progress="parity: ONNX"))
    diff = np.abs(ref_scores - art_scores)
    ref_pass = ref_scores >= spec.threshold
    art_pass = art_scores >= spec.threshold
    f1_ref = macro_f1(truth, ref_pass.tolist())
    f1_art = macro_f1(truth, art_pass.tolist())
    delta, flips, probed = batch_invariance(artifact, encoded, spec, combiner, probe_items=batch_probe_items)
    return ParityReport(
        items=len(encoded),
        windows=sum(len(e.windows) for e in encoded),
        max_abs_score_diff=float(diff.max()),
        mean_abs_score_diff=float(diff.mean()),
        decision_agreement=float(np.mean(ref_pass == art_pass)),
        macro_f1_reference=f1_ref,
        macro_f1_artifact=f1_art,
        f1_drop=max(0.0, f1_ref - f1_art),
        batch_probe_items=probed,
        batch_max_score_delta=delta,
        batch_decision_flips=flips,
    )


def _scores(results: Sequence[ItemScore | Exception]) -> np.ndarray:
    return np.array([r.score for r in results if isinstance(r, ItemScore)])
