"""The endpoint a user writes by hand: FastAPI, a sync `def` route, one ONNX Runtime run per request.

python handwritten_ort.py MODEL.onnx TOKENIZER.json --port 8101 --threads 1
"""

from __future__ import annotations

import argparse

from pairs import feeds, load_tokenizer, ort_session, serve, supported_probability


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("tokenizer")
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    session, names = ort_session(args.model, args.threads)
    tokenizer = load_tokenizer(args.tokenizer)

    def score(item: dict[str, str]) -> float:
        (logits,) = session.run(None, feeds(tokenizer, [item], names))
        return float(supported_probability(logits)[0])

    serve(score, args.port)


if __name__ == "__main__":
    main()
