"""A hand-written FastAPI endpoint on the transformers pipeline, on the fp32 PyTorch checkpoint.

python transformers_pipeline.py CHECKPOINT_DIR --port 8102 --threads 1
"""

from __future__ import annotations

import argparse

import torch
from pairs import MAX_TOKENS, first_and_second, serve
from transformers import pipeline


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--port", type=int, default=8102)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    classify = pipeline("text-classification", model=args.checkpoint, device="cpu", top_k=None)
    supported = (classify.model.config.id2label or {}).get(1, "LABEL_1")

    def score(item: dict[str, str]) -> float:
        first, second = first_and_second(item)
        scores = classify(
            {"text": first, "text_pair": second}, truncation="only_second", max_length=MAX_TOKENS
        )
        return float(next(s["score"] for s in scores if s["label"] == supported))

    serve(score, args.port)


if __name__ == "__main__":
    main()
