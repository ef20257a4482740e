"""The endpoint a user writes by hand: FastAPI, a sync `def` route, one ONNX Runtime run per request.

python handwritten_ort.py MODEL.onnx TOKENIZER.json --port 8101 --threads 1
"""

from __future__ import annotations

import argparse

import onnxruntime as ort
import uvicorn
from fastapi import FastAPI
from pairs import feeds, load_tokenizer, supported_probability


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("tokenizer")
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    tokenizer = load_tokenizer(args.tokenizer)
    app = FastAPI()

    @app.get("/ready")
    def ready() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/score")
    def score(item: dict[str, str]) -> dict[str, float]:
        (logits,) = session.run(None, feeds(tokenizer, [item], names))
        return {"score": supported_probability(logits)[0]}

    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
