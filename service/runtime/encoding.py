"""Items -> token windows, exactly as training, evaluation and serving see them.

An item's fields form a text pair: the first segment (query and response) is never cut; the
second (the context) is cut by the metric's long-input policy, either truncated at one end or
split into overlapping windows that each carry the whole first segment. The tokenizer's
special-token template is read in `service.runtime.tokenizer`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from service.runtime.claims import split_claims
from service.runtime.evidence import EvidenceFeature
from service.runtime.spec import InputField, LongInputMode, MetricSpec
from service.runtime.tokenizer import PairTemplate, load_tokenizer, pad_token_id

SEGMENT_JOINER = "\n"
MIN_CONTEXT_TOKENS = 32  # a window narrower than this cannot show support; reject instead
INLINE_TOKENIZE_TEXTS = 64  # up to this many texts are tokenised in the caller's thread


class ItemTooLongError(ValueError):
    """The item cannot be encoded under the metric's policy (reject, or response too long)."""


@dataclass(frozen=True)
class Window:
    """One model input: token ids of the whole pair, with specials, unpadded."""

    input_ids: np.ndarray
    token_type_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def stretched(self, tokens: int) -> Window:
        """This window's ids repeated to `tokens` long: a row of a chosen length, for timing."""
        reps = -(-tokens // len(self))
        return Window(
            input_ids=np.tile(self.input_ids, reps)[:tokens], token_type_ids=np.zeros(tokens, np.int64)
        )


@dataclass(frozen=True)
class EncodedItem:
    windows: tuple[Window, ...]
    truncated_tokens: int  # tokens of the cut segment that no window saw
    evidence: Mapping[EvidenceFeature, float] | None = None  # whole-context features, when declared
    claim_windows: tuple[int, ...] | None = None  # windows per claim, in order, when scored by claims

    @property
    def tokens(self) -> int:
        """Real tokens the model will process for this item (its cost)."""
        return sum(len(w) for w in self.windows)


def segment_text(item: Mapping[str, str | None], fields: Sequence[InputField]) -> str:
    """Join an item's fields for one segment; absent and empty fields are left out."""
    parts = [(item.get(f.value) or "").strip() for f in fields]
    return SEGMENT_JOINER.join(p for p in parts if p)


class PairEncoder:
    """Turns items into windows under one metric's text pair, max tokens and long-input policy."""

    def __init__(self, tokenizer: Tokenizer, spec: MetricSpec) -> None:
        self.tokenizer = tokenizer
        self.spec = spec
        self.template = PairTemplate.from_tokenizer(tokenizer)
        self.pad_id = pad_token_id(tokenizer)

    @classmethod
    def from_file(cls, path: Path, spec: MetricSpec) -> PairEncoder:
        return cls(load_tokenizer(path), spec)

    def encode(self, item: Mapping[str, str | None]) -> EncodedItem:
        return self.encode_many([item])[0]

    def encode_many(self, items: Sequence[Mapping[str, str | None]]) -> list[EncodedItem]:
        """Encode a list of items; raises ItemTooLongError naming the first item that fails."""
        results = self.try_encode_many(items)
        for result in results:
            if isinstance(result, ItemTooLongError):
                raise result
        return results  # type: ignore[return-value]

    def try_encode_many(
        self, items: Sequence[Mapping[str, str | None]]
    ) -> list[EncodedItem | ItemTooLongError]:
        """Encode each item, returning the error in its place for items that cannot be encoded.

        Under a claim policy each claim of an item is encoded as an item of its own (the claim in
        place of the whole field) and the item keeps all their windows, claim after claim.
        """
        claims = self.spec.claims
        if claims is None:
            return self._encode_whole(items)
        owners: list[int] = []
        parts: list[Mapping[str, str | None]] = []
        for index, item in enumerate(items):
            text = item.get(claims.field.value) or ""
            for claim in split_claims(text, max_claims=claims.max_claims, min_words=claims.min_claim_words):
                owners.append(index)
                parts.append({**item, claims.field.value: claim})
        encoded = self._encode_whole(parts)
        grouped: list[list[EncodedItem | ItemTooLongError]] = [[] for _ in items]
        for owner, part in zip(owners, encoded, strict=True):
            grouped[owner].append(part)
        return [_merge_claims(index, group) for index, group in enumerate(grouped)]

    def _encode_whole(
        self, items: Sequence[Mapping[str, str | None]]
    ) -> list[EncodedItem | ItemTooLongError]:
        pair = self.spec.text_pair
        firsts = [segment_text(it, pair.first) for it in items]
        seconds = [segment_text(it, pair.second) for it in items] if pair.second else []
        encoded = self._tokenize(firsts + seconds)
        n = len(items)
        results: list[EncodedItem | ItemTooLongError] = []
        for i in range(n):
            a = np.asarray(encoded[i].ids, np.int64)
            try:
                if pair.second:
                    results.append(self._pair(a, np.asarray(encoded[n + i].ids, np.int64), i))
                else:
                    results.append(self._single(a, i))
            except ItemTooLongError as exc:
                results.append(exc)
        return results

    def _tokenize(self, texts: list[str]) -> list[Encoding]:
        """Token ids of each text, in the calling thread for a few texts.

        `encode_batch` hands the texts to a Rayon pool and waits for it: on a CPU shared with
        inference that hand-off waits for the scheduler to run the pool's thread, costing a
        request milliseconds for under a millisecond of work. Large batches (offline) still
        go to the pool, where the parallelism pays.
        """
        if len(texts) <= INLINE_TOKENIZE_TEXTS:
            return [self.tokenizer.encode(text, add_special_tokens=False) for text in texts]
        return list(self.tokenizer.encode_batch(texts, add_special_tokens=False))

    def _single(self, a: np.ndarray, index: int) -> EncodedItem:
        prefix, suffix = self.template.single
        budget = self.spec.max_tokens - self.template.single_specials
        pieces, cut = self._cut(a, budget, index)
        windows = tuple(
            Window(
                input_ids=np.concatenate([np.asarray(prefix, np.int64), p, np.asarray(suffix, np.int64)]),
                token_type_ids=np.zeros(len(prefix) + len(p) + len(suffix), np.int64),
            )
            for p in pieces
        )
        return EncodedItem(windows=windows, truncated_tokens=cut)

    def _pair(self, a: np.ndarray, b: np.ndarray, index: int) -> EncodedItem:
        budget = self.spec.max_tokens - self.template.pair_specials - len(a)
        if budget < min(MIN_CONTEXT_TOKENS, max(len(b), 1)):
            raise ItemTooLongError(
                f"item {index}: the kept fields ({', '.join(f.value for f in self.spec.text_pair.first)})"
                f" take {len(a)} tokens, leaving {max(budget, 0)} of the metric's"
                f" {self.spec.max_tokens} for the context; shorten them"
            )
        pieces, cut = self._cut(b, budget, index)
        return EncodedItem(windows=tuple(self._join(a, p) for p in pieces), truncated_tokens=cut)

    def _join(self, a: np.ndarray, b: np.ndarray) -> Window:
        prefix, middle, suffix = self.template.pair
        t_pre, t_a, t_mid, t_b, t_suf = self.template.pair_type_ids
        parts = [
            np.asarray(prefix, np.int64),
            a,
            np.asarray(middle, np.int64),
            b,
            np.asarray(suffix, np.int64),
        ]
        kinds = (t_pre, t_a, t_mid, t_b, t_suf)
        ids = np.concatenate(parts)
        types = np.concatenate([np.full(len(p), t, np.int64) for p, t in zip(parts, kinds, strict=True)])
        return Window(input_ids=ids, token_type_ids=types)

    def _cut(self, tokens: np.ndarray, budget: int, index: int) -> tuple[list[np.ndarray], int]:
        """Apply the long-input policy to the segment that may be cut."""
        if budget <= 0:
            raise ItemTooLongError(f"item {index}: no room for any token under max_tokens")
        if len(tokens) <= budget:
            return [tokens], 0
        policy = self.spec.long_input
        excess = len(tokens) - budget
        if policy.mode == LongInputMode.REJECT:
            raise ItemTooLongError(
                f"item {index}: {len(tokens) + self.spec.max_tokens - budget} tokens exceed the"
                f" metric's max_tokens {self.spec.max_tokens} and its policy is reject"
            )
        if policy.mode == LongInputMode.TRUNCATE_TAIL:
            return [tokens[:budget]], excess
        if policy.mode == LongInputMode.TRUNCATE_HEAD:
            return [tokens[excess:]], excess
        starts, covered = window_starts(len(tokens), budget, policy.window_overlap_tokens, policy.max_windows)
        return [tokens[s : s + budget] for s in starts], len(tokens) - covered


def _merge_claims(
    index: int, parts: Sequence[EncodedItem | ItemTooLongError]
) -> EncodedItem | ItemTooLongError:
    """One item from its claims' encodings; the first claim that cannot be encoded fails it."""
    for part in parts:
        if isinstance(part, ItemTooLongError):
            return ItemTooLongError(f"item {index}: a claim of the response: {part}")
    done = [p for p in parts if isinstance(p, EncodedItem)]
    return EncodedItem(
        windows=tuple(w for p in done for w in p.windows),
        truncated_tokens=max(p.truncated_tokens for p in done),
        claim_windows=tuple(len(p.windows) for p in done),
    )


def window_starts(length: int, width: int, overlap: int, max_windows: int) -> tuple[list[int], int]:
    """Start offsets of overlapping windows over `length` tokens, and how many tokens they cover.

    Windows step by `width - overlap`; the last one is pulled back to end at the segment's end
    so no window is short. Beyond `max_windows` the tail is left out (and counted by the caller).
    """
    overlap = min(overlap, width // 2)
    step = width - overlap
    needed = math.ceil((length - width) / step) + 1
    if needed <= max_windows:
        starts = [min(i * step, length - width) for i in range(needed)]
        return starts, length
    starts = [i * step for i in range(max_windows)]
    return starts, starts[-1] + width


def collate(windows: Sequence[Window], pad_id: int) -> dict[str, np.ndarray]:
    """Pad windows to the longest into the model's int64 inputs."""
    longest = max(len(w) for w in windows)
    input_ids = np.full((len(windows), longest), pad_id, np.int64)
    attention_mask = np.zeros((len(windows), longest), np.int64)
    token_type_ids = np.zeros((len(windows), longest), np.int64)
    for row, w in enumerate(windows):
        input_ids[row, : len(w)] = w.input_ids
        attention_mask[row, : len(w)] = 1
        token_type_ids[row, : len(w)] = w.token_type_ids
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
