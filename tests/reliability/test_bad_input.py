"""Hostile and malformed input over a real socket: a clear 4xx, never a 500 or a hang, still ready.

Pass criteria, against a live uvicorn server on a tiny metric with small limits (4 items, 1,000
characters a field, 64 KiB a body): every case below gets its stated status with an
`application/problem+json` body (or 200 where the input is odd but valid); no answer takes
longer than the client's 30 s timeout; afterwards `/readyz` is 200, a normal request is
scored, and the server log has no unhandled error.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.server import LocalServer
from tests.conftest import counting_spec
from tests.tiny_models import write_counting_artifact

SCORE = "/v1/metrics/context_adherence/score"
MAX_CHARS, MAX_ITEMS, MAX_BODY = 1000, 4, 64 * 1024


def item(output: str = "good", context: str = "the city") -> dict[str, str]:
    return {"output": output, "context": context}


def body(**fields: object) -> bytes:
    return json.dumps({"items": [item()], **fields}).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    root = tmp_path_factory.mktemp("bad_input")
    (root / "work").mkdir()
    write_counting_artifact(root / "repo", counting_spec(), root / "work")
    args = [
        "--batching.calibrate", "false", "--limits.max_field_chars", str(MAX_CHARS),
        "--limits.max_items", str(MAX_ITEMS), "--limits.max_body_bytes", str(MAX_BODY),
        "--deadlines.guardrail_timeout_ms", "30000",
    ]  # fmt: skip
    with LocalServer(root / "repo", root / "server.log", args) as running:
        yield running


def send(server: LocalServer, path: str, payload: bytes, headers: dict[str, str] | None = None,
         chunked: bool = False) -> tuple[int, str, bytes]:  # fmt: skip
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if chunked:
        pieces = (payload[i : i + 8192] for i in range(0, len(payload), 8192))
        connection.request("POST", path, body=pieces, headers=all_headers, encode_chunked=True)
    else:
        connection.request("POST", path, body=payload, headers=all_headers)
    try:
        response = connection.getresponse()
        return response.status, response.getheader("content-type") or "", response.read()
    finally:
        connection.close()


NESTED = b"[" * 100_000 + b"]" * 100_000
CASES = {
    "not JSON": (b"not json", {400, 422}),
    "empty body": (b"", {400, 422}),
    "invalid UTF-8": (b'{"items":[{"output":"\xff\xfe","context":"a"}]}', {400}),
    "lone surrogate": (b'{"items":[{"output":"\\ud800","context":"a"}]}', {422}),
    "deeply nested arrays": (NESTED[: MAX_BODY // 2 - 1] + NESTED[-(MAX_BODY // 2 - 1) :], {400, 422}),
    "wrong types": (b'{"items":[{"output":5,"context":["a"]}]}', {422}),
    "unknown field": (b'{"items":[{"output":"a","context":"b","extra":1}]}', {422}),
    "no items": (b'{"items":[]}', {422}),
    "items at the limit": (json.dumps({"items": [item()] * MAX_ITEMS}).encode(), {200}),
    "items one past the limit": (json.dumps({"items": [item()] * (MAX_ITEMS + 1)}).encode(), {422}),
    "field at the limit": (json.dumps({"items": [item("g" * MAX_CHARS)]}).encode(), {200}),
    "field one past the limit": (json.dumps({"items": [item("g" * (MAX_CHARS + 1))]}).encode(), {422}),
    "NUL bytes in text": (json.dumps({"items": [item("go\u0000od", "the\u0000city")]}).encode(), {200}),
    "blank required field": (json.dumps({"items": [item("\u3000\ufeff\x1e")]}).encode(), {422}),
    "timeout below the minimum": (body(timeout_ms=1), {422}),
    "timeout beyond any number": (b'{"items":[{"output":"a","context":"b"}],"timeout_ms":1e999}', {200, 422}),
    "unknown traffic class": (body(traffic_class="vip"), {422}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_a_clear_answer(server: LocalServer, case: str) -> None:
    payload, expected = CASES[case]
    status, content_type, data = send(server, SCORE, payload)
    assert status in expected, (case, status, data[:300])
    if status >= 400:
        assert content_type == "application/problem+json"
        assert json.loads(data)["status"] == status


def test_unknown_metrics_are_404_and_named(server: LocalServer) -> None:
    status, _, data = send(server, "/v1/metrics/no_such_metric/score", body())
    assert status == 404 and "no_such_metric" in json.loads(data)["detail"]
    multi = json.dumps({"metrics": ["no_such_metric"], "items": [item()]}).encode()
    status, _, data = send(server, "/v1/score", multi)
    assert status == 200 and json.loads(data)["outcomes"][0]["status"] == "not_found"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_bodies_over_the_limit_are_413(server: LocalServer, chunked: bool) -> None:
    oversized = json.dumps({"items": [item("g" * MAX_BODY)]}).encode()
    status, content_type, _ = send(server, SCORE, oversized, chunked=chunked)
    assert status == 413 and content_type == "application/problem+json"


def test_server_is_still_ready_and_logged_no_crash(server: LocalServer) -> None:
    for case in CASES:  # every case once more, then the server must be as it was
        send(server, SCORE, CASES[case][0])
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("GET", "/readyz")
        assert connection.getresponse().status == 200
    finally:
        connection.close()
    status, _, data = send(server, SCORE, body())
    assert status == 200 and json.loads(data)["results"][0]["label"]
    log = Path(server.log_path).read_text()
    assert "unhandled error" not in log and "Traceback" not in log
