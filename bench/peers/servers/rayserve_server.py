"""Ray Serve with `@serve.batch`, on an ONNX model, one replica.

python rayserve_server.py MODEL.onnx TOKENIZER.json --port 8104 --threads 1 --max-batch 8
"""

from __future__ import annotations

import argparse
import signal
import threading

import ray
from fastapi import FastAPI
from pairs import feeds, load_tokenizer, ort_session, supported_probability
from ray import serve

app = FastAPI()


def build(model: str, tokenizer: str, threads: int, max_batch: int, wait_s: float):  # type: ignore[no-untyped-def]
    @serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 1}, max_ongoing_requests=1000)
    @serve.ingress(app)
    class PairClassifier:
        def __init__(self) -> None:
            self.session, self.names = ort_session(model, threads)
            self.tokenizer = load_tokenizer(tokenizer)

        @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=wait_s)
        async def scores(self, items: list[dict[str, str]]) -> list[float]:
            (logits,) = self.session.run(None, feeds(self.tokenizer, items, self.names))
            return supported_probability(logits)

        @app.get("/ready")
        async def ready(self) -> dict[str, str]:
            return {"status": "ok"}

        @app.post("/score")
        async def score(self, item: dict[str, str]) -> dict[str, float]:
            return {"score": await self.scores(item)}

    return PairClassifier.bind()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("tokenizer")
    parser.add_argument("--port", type=int, default=8104)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--batch-timeout-s", type=float, default=0.005)
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(
        build(args.model, args.tokenizer, args.threads, args.max_batch, args.batch_timeout_s),
        route_prefix="/",
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
