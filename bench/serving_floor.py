"""The least a Python server can do for a scoring request: the floor `bench/serving_cost.py`
compares lunaserve's serving cost with.

A bare ASGI app on uvicorn (uvloop and httptools, as lunaserve): read the body, `json.loads`,
encode on the event loop, one forward pass on one inference thread, post-process, `json.dumps`.
No framework, validation, queue, admission, deadlines, metrics or disconnect handling, and so
not a server anyone should run: what it spends per request beyond `MetricModel.score` is what
uvicorn and a thread hop cost alone.

    LUNASERVE_FLOOR_MODEL=repository/context_adherence/2 uvicorn bench.serving_floor:app --port 8100
"""

from __future__ import annotations

import asyncio
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from service.runtime.classifier import MetricModel
from service.runtime.encoding import EncodedItem

_model: MetricModel | None = None
_inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="floor-infer")


def _load() -> MetricModel:
    threads = int(os.environ.get("LUNASERVE_FLOOR_THREADS", "1"))
    return MetricModel.load(Path(os.environ["LUNASERVE_FLOOR_MODEL"]), intra_op_threads=threads)


async def _lifespan(receive: Any, send: Any) -> None:
    global _model
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            _model = await asyncio.to_thread(_load)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    assert _model is not None
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    payload: dict[str, object] = {"status": "ok"}  # /readyz and any other path but the scoring one
    if scope["path"] == "/":
        encoded = [e for e in _model.encode(json.loads(body)["items"]) if isinstance(e, EncodedItem)]
        windows = [w for e in encoded for w in e.windows]
        probs = await asyncio.get_running_loop().run_in_executor(_inference, _model.forward, windows)
        results, row = [], 0
        for item in encoded:
            scored = _model.finish(item, probs[row : row + len(item.windows)])
            row += len(item.windows)
            results.append(
                {"score": float(scored.score), "label": scored.label, "passed": bool(scored.passed)}
            )
        payload = {"results": results}
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})  # fmt: skip
    await send({"type": "http.response.body", "body": json.dumps(payload).encode()})
