"""LitServe with its dynamic batching, on an ONNX model (inference in its own worker process).

python litserve_server.py MODEL.onnx TOKENIZER.json --port 8103 --threads 1 --max-batch 8
"""

from __future__ import annotations

import argparse

import litserve as ls
from pairs import feeds, load_tokenizer, ort_session, supported_probability


class PairClassifier(ls.LitAPI):
    def __init__(self, model: str, tokenizer: str, threads: int, **batching: float) -> None:
        super().__init__(api_path="/score", **batching)
        self.model_path, self.tokenizer_path, self.threads = model, tokenizer, threads

    def setup(self, device: str) -> None:
        self.session, self.names = ort_session(self.model_path, self.threads)
        self.tokenizer = load_tokenizer(self.tokenizer_path)

    def decode_request(self, request: dict[str, str]) -> dict[str, str]:
        return request

    def batch(self, inputs: list[dict[str, str]]) -> list[dict[str, str]]:
        return inputs

    def predict(self, items: list[dict[str, str]]) -> list[float]:
        (logits,) = self.session.run(None, feeds(self.tokenizer, items, self.names))
        return supported_probability(logits)

    def unbatch(self, output: list[float]) -> list[float]:
        return output

    def encode_response(self, output: float) -> dict[str, float]:
        return {"score": output}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("tokenizer")
    parser.add_argument("--port", type=int, default=8103)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--batch-timeout-s", type=float, default=0.005)
    args = parser.parse_args()
    api = PairClassifier(
        args.model,
        args.tokenizer,
        args.threads,
        max_batch_size=args.max_batch,
        batch_timeout=args.batch_timeout_s,
    )
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1)
    server.run(port=args.port, host="127.0.0.1", generate_client_file=False)


if __name__ == "__main__":
    main()
