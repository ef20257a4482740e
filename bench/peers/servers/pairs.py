"""What every peer does to a request before its model: the same text pair lunaserve forms.

Standalone (peers run in their own virtual environments, without lunaserve installed): the
response and the query form the first segment (joined by a newline), the context the second,
cut to 512 tokens at the context's end, as `specs/context_adherence.yaml` says. Every item of
the benchmark's mix fits one window, so no peer needs windowing to be compared fairly.
"""

from __future__ import annotations

import numpy as np

MAX_TOKENS = 512


def first_and_second(item: dict[str, str]) -> tuple[str, str]:
    first = "\n".join(p for p in ((item.get("output") or "").strip(), (item.get("input") or "").strip()) if p)
    return first, (item.get("context") or "").strip()


def load_tokenizer(path: str):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(path)
    tokenizer.enable_truncation(MAX_TOKENS, strategy="only_second")
    tokenizer.no_padding()
    return tokenizer


def feeds(tokenizer, items: list[dict[str, str]], input_names: list[str]) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """Padded int64 arrays for an ONNX classifier, only the inputs its graph declares."""
    encodings = tokenizer.encode_batch([first_and_second(item) for item in items])
    longest = max(len(e.ids) for e in encodings)
    arrays = {
        name: np.zeros((len(encodings), longest), np.int64)
        for name in ("input_ids", "attention_mask", "token_type_ids")
    }
    for row, e in enumerate(encodings):
        arrays["input_ids"][row, : len(e.ids)] = e.ids
        arrays["attention_mask"][row, : len(e.ids)] = 1
        arrays["token_type_ids"][row, : len(e.ids)] = e.type_ids
    return {name: arrays[name] for name in input_names}


def supported_probability(logits: np.ndarray) -> list[float]:
    """Softmax over [hallucinated, supported]; the second column."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return [float(v) for v in p[:, 1]]
