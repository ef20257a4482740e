"""What every peer does to a request before its model: the same text pair lunaserve forms.

Standalone (peers run in their own virtual environments, without lunaserve installed): the
response and the query form the first segment (joined by a newline), the context the second,
cut to 512 tokens at the context's end, as `specs/context_adherence.yaml` says. Every item of
the benchmark's mix fits one window, so no peer needs windowing to be compared fairly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

MAX_TOKENS = 512


def first_and_second(item: dict[str, str]) -> tuple[str, str]:
    first = "\n".join(p for p in ((item.get("output") or "").strip(), (item.get("input") or "").strip()) if p)
    return first, (item.get("context") or "").strip()


def ort_session(model: str, threads: int):  # type: ignore[no-untyped-def]
    """An ONNX Runtime CPU session with `threads` intra-op threads and one inter-op thread, as
    lunaserve runs its own; with the input names its graph declares."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return session, [i.name for i in session.get_inputs()]


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


def serve(score: Callable[[dict[str, str]], float], port: int) -> None:
    """The hand-written peers' app: `/ready`, and `/score` taking one item, a sync `def` route
    (FastAPI runs it on its thread pool), on uvicorn."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/ready")
    def ready() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/score")
    def score_one(item: dict[str, str]) -> dict[str, float]:
        return {"score": score(item)}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
