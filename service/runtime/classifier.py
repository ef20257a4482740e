"""A loaded metric: encoder, ONNX session and postprocessing behind one object.

The server's scheduler calls `encode` and `forward` separately (it batches windows from many
requests); offline callers such as `evaluate` use `score`, which batches the same way.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from service.runtime.artifact import Artifact, load_artifact
from service.runtime.encoding import EncodedItem, ItemTooLongError, PairEncoder, Window, collate
from service.runtime.evidence import EvidenceCombiner
from service.runtime.postprocess import ItemScore, aggregate_claims, aggregate_windows, decide, probabilities
from service.runtime.session import CPU, OnnxSession
from service.runtime.spec import MetricSpec

Item = Mapping[str, str | None]


class MetricModel:
    def __init__(
        self, artifact: Artifact, *, intra_op_threads: int = 0, providers: Sequence[str] = (CPU,)
    ) -> None:
        self.artifact = artifact
        self.spec: MetricSpec = artifact.spec
        self.encoder = PairEncoder.from_file(artifact.tokenizer_path, self.spec)
        self.session = OnnxSession(
            artifact.model_path, intra_op_threads=intra_op_threads, providers=providers
        )
        self.combiner: EvidenceCombiner | None = artifact.manifest.evidence

    @classmethod
    def load(cls, folder: Path, *, intra_op_threads: int = 0, check_layout: bool = True) -> MetricModel:
        return cls(load_artifact(folder, check_layout=check_layout), intra_op_threads=intra_op_threads)

    def another_instance(self) -> MetricModel:
        """The same model on a session of its own (same threads and providers): one more
        instance that can run a batch while this one runs another."""
        twin = copy.copy(self)
        twin.session = OnnxSession(
            self.artifact.model_path,
            intra_op_threads=self.session.intra_op_threads,
            providers=self.session.providers,
        )
        return twin

    def encode(self, items: Sequence[Item]) -> list[EncodedItem | ItemTooLongError]:
        return encode_with_evidence(self.encoder, self.combiner, items)

    def forward(self, windows: Sequence[Window]) -> np.ndarray:
        """Label probabilities, one row per window, for windows run as one padded batch."""
        logits = self.session.run(collate(windows, self.encoder.pad_id))
        return probabilities(logits, self.spec.activation)

    def finish(self, item: EncodedItem, window_probs: np.ndarray) -> ItemScore:
        return finish_item(item, window_probs, self.spec, self.combiner)

    def score(
        self,
        items: Sequence[Item],
        *,
        max_batch_tokens: int = 4096,
        max_batch_rows: int = 32,
    ) -> list[ItemScore | ItemTooLongError]:
        """Score items offline: windows sorted by length, cut into token-budget batches."""
        return score_encoded(
            self.encode(items),
            self.forward,
            self.spec,
            self.combiner,
            max_batch_tokens=max_batch_tokens,
            max_batch_rows=max_batch_rows,
        )


def encode_with_evidence(
    encoder: PairEncoder, combiner: EvidenceCombiner | None, items: Sequence[Item]
) -> list[EncodedItem | ItemTooLongError]:
    """Encode items; with a combiner, attach its features computed on the whole item."""
    encoded = encoder.try_encode_many(items)
    if combiner is None:
        return encoded
    return [
        dataclasses.replace(e, evidence=combiner.features(item, windows=len(e.windows)))
        if isinstance(e, EncodedItem)
        else e
        for item, e in zip(items, encoded, strict=True)
    ]


def score_encoded(
    encoded: Sequence[EncodedItem | ItemTooLongError],
    forward: Callable[[Sequence[Window]], np.ndarray],
    spec: MetricSpec,
    combiner: EvidenceCombiner | None = None,
    *,
    max_batch_tokens: int = 4096,
    max_batch_rows: int = 32,
    progress: str | None = None,
) -> list[ItemScore | ItemTooLongError]:
    """Run every window through `forward` in length-sorted batches and decide per item.

    `forward` maps windows to probability rows; parity checks pass a PyTorch one so the
    reference goes through exactly the same windows, batching and aggregation.
    """
    owners: list[int] = []
    windows: list[Window] = []
    for index, item in enumerate(encoded):
        if isinstance(item, EncodedItem):
            owners.extend([index] * len(item.windows))
            windows.extend(item.windows)
    probs = np.zeros((len(windows), len(spec.labels)))
    batches = plan_batches([len(w) for w in windows], max_batch_tokens, max_batch_rows)
    with tqdm(total=len(windows), desc=progress, unit="window", disable=progress is None) as bar:
        for batch in batches:
            probs[batch] = forward([windows[i] for i in batch])
            bar.update(len(batch))
    rows_of: dict[int, list[int]] = {}
    for row, owner in enumerate(owners):
        rows_of.setdefault(owner, []).append(row)
    return [
        finish_item(item, probs[rows_of[i]], spec, combiner) if isinstance(item, EncodedItem) else item
        for i, item in enumerate(encoded)
    ]


def finish_item(
    item: EncodedItem, window_probs: np.ndarray, spec: MetricSpec, combiner: EvidenceCombiner | None = None
) -> ItemScore:
    """Aggregate an item's window rows, apply the evidence combiner if any, and decide."""
    row = aggregate_item(item, window_probs, spec)
    if combiner is not None and item.evidence is not None:
        score = combiner.combine(float(row[spec.positive_index]), item.evidence, windows=len(item.windows))
        row = np.full(2, 1.0 - score)
        row[spec.positive_index] = score
    return decide(row, spec, windows=len(item.windows), truncated_tokens=item.truncated_tokens)


def aggregate_item(item: EncodedItem, window_probs: np.ndarray, spec: MetricSpec) -> np.ndarray:
    """The item's probability row from its windows' rows: by claim when it was encoded by claims."""
    how = spec.long_input.aggregation
    if item.claim_windows is not None:
        return aggregate_claims(window_probs, item.claim_windows, spec.positive_index, how)
    return aggregate_windows(window_probs, spec.positive_index, how)


def plan_batches(lengths: Sequence[int], max_batch_tokens: int, max_batch_rows: int) -> list[list[int]]:
    """Indices grouped into batches of similar length whose padded size fits the budget.

    Sorting by length before cutting keeps padding low; a batch closes when one more row would
    push rows x longest length past the token budget or the row cap.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[i]  # ascending order: the newest row is the longest
        if current and ((len(current) + 1) * longest > max_batch_tokens or len(current) >= max_batch_rows):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
