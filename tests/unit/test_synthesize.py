"""`lunaserve data synthesize` against a small fake OpenAI-compatible server on a real socket."""

from __future__ import annotations

import csv
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lunaserve.cli import main
from models.provenance import synthetic_share
from models.synthesize import Endpoint, parse_reply, synthesize

KEY = "sekret"


class FakeLLM(ThreadingHTTPServer):
    """Replies by context: `flaky` is refused once (503, Retry-After 0), `chatty` first answers
    without JSON, `broken` fails with 500 until `broken_until` requests, the rest answer at once."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.seen: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.broken_until = 10**9

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class Handler(BaseHTTPRequestHandler):
    server: FakeLLM

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        fake = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with fake.lock:
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            time.sleep(
                0.02
            )  # requests overlap, so the concurrency limit is exercised (a bound, not a timing)
            self.reply(fake, body)
        finally:
            with fake.lock:
                fake.in_flight -= 1

    def reply(self, fake: FakeLLM, body: dict) -> None:  # type: ignore[type-arg]
        if self.path != "/v1/chat/completions":
            return self.send(404, {"error": "not found"})
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            return self.send(401, {"error": "bad key"})
        context = body["messages"][1]["content"].split("Context:\n", 1)[1].split("\n", 1)[0]
        with fake.lock:
            fake.seen[context] += 1
            n = fake.seen[context]
        if context.startswith("flaky") and n == 1:
            return self.send(503, {"error": "busy"}, {"Retry-After": "0"})
        if context.startswith("broken") and n <= fake.broken_until:
            return self.send(500, {"error": "boom"})
        reply = {
            "faithful": f"It says {context}.",
            "unfaithful": f"It says not {context}.",
            "change": "negated",
        }
        content = "Sure!" if context.startswith("chatty") and n == 1 else f"```json\n{json.dumps(reply)}\n```"
        self.send(
            200, {"choices": [{"message": {"role": "assistant", "content": content}}], "model": body["model"]}
        )

    def send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:  # type: ignore[type-arg]
        data = json.dumps(payload).encode()
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    server = FakeLLM()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def write_contexts(path: Path, names: list[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["input", "context"])
        for name in names:
            writer.writerow([f"What about {name}?", name])
    return path


def read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_synthesize_retries_limits_concurrency_and_resumes(fake: FakeLLM, tmp_path: Path) -> None:
    names = ["alpha", "beta", "gamma", "flaky one", "chatty one", "broken one", "alpha"]  # alpha twice
    contexts = write_contexts(tmp_path / "contexts.csv", names)
    out = tmp_path / "synthetic.csv"
    endpoint = Endpoint(url=fake.url, model="fake-llm", api_key=KEY)
    first = synthesize(contexts, out, endpoint, concurrency=2, attempts=3, backoff_s=0, progress=False)
    assert (first.written_rows, first.skipped_contexts, first.failed_contexts) == (10, 0, 1)
    assert "broken one" not in {r["context"] for r in read(out)} and "HTTP 500" in first.failures[0]
    assert fake.max_in_flight <= 2
    assert fake.seen["flaky one"] == 2 and fake.seen["chatty one"] == 2 and fake.seen["broken one"] == 3
    rows = read(out)
    assert Counter(r["label"] for r in rows) == {"supported": 5, "hallucinated": 5}
    assert {r["source"] for r in rows} == {"synthetic"}
    assert {r["generator"] for r in rows} == {f"fake-llm @ {fake.url}"}
    assert all(r["explanation"] == "negated" for r in rows if r["label"] == "hallucinated")
    # A re-run asks only for what is missing: the broken context, which now answers.
    fake.broken_until = 0
    before = sum(fake.seen.values())
    second = synthesize(contexts, out, endpoint, concurrency=2, attempts=3, backoff_s=0, progress=False)
    assert (second.written_rows, second.skipped_contexts, second.failed_contexts) == (2, 5, 0)
    assert sum(fake.seen.values()) == before + 1
    rows = read(out)
    assert len(rows) == 12 and len({(r["context"], r["label"]) for r in rows}) == 12
    assert synthetic_share(out) == f"12 of 12 training rows (100%) are synthetic: 12 by fake-llm @ {fake.url}"


def test_cli_synthesize_reports_a_refused_key_without_retrying(
    fake: FakeLLM, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    contexts = write_contexts(tmp_path / "contexts.csv", ["alpha"])
    argv = [
        "data",
        "synthesize",
        "--contexts",
        str(contexts),
        "--out",
        str(tmp_path / "o.csv"),
        "--url",
        fake.url,
    ]
    argv += ["--model", "fake-llm", "--api-key-env", "LUNASERVE_TEST_KEY"]
    monkeypatch.delenv("LUNASERVE_TEST_KEY", raising=False)
    assert main(argv) == 1
    assert "LUNASERVE_TEST_KEY: the environment variable is not set" in capsys.readouterr().err
    monkeypatch.setenv("LUNASERVE_TEST_KEY", "wrong")
    assert main(argv) == 1
    assert "HTTP 401" in capsys.readouterr().err and sum(fake.seen.values()) == 0
    monkeypatch.setenv("LUNASERVE_TEST_KEY", KEY)
    assert main(argv) == 0
    assert "2 rows written" in capsys.readouterr().out


def test_data_check_reports_the_synthetic_share(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "train.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["input", "output", "context", "label", "source", "generator"])
        for i in range(40):
            source, generator = ("synthetic", "llm-x @ http://h/v1") if i < 10 else ("customer", "")
            writer.writerow(
                [f"q{i}", f"a{i}", f"c{i}", ["supported", "hallucinated"][i % 2], source, generator]
            )
    main(["data", "check", "--kind", "train", str(path)])
    assert "synthetic rows: 10 of 40 (25%); by generator: llm-x @ http://h/v1: 10" in capsys.readouterr().out


def test_parse_reply_takes_the_json_object_and_refuses_half_answers() -> None:
    assert parse_reply('Here: {"faithful": "A.", "unfaithful": "B."} done')["unfaithful"] == "B."
    for bad in ("no json", '{"faithful": "A."}', '{"faithful": "A.", "unfaithful": "A."}', "[1, 2]"):
        with pytest.raises(ValueError):
            parse_reply(bad)
