"""Training rows written by an LLM the customer approves (`lunaserve data synthesize`).

The product's process allows LLM-generated training rows when the generator is stated in the
model card. For each of the customer's contexts (a CSV with `context` and, when the metric has
one, `input`), any OpenAI-compatible chat endpoint the customer points at (a local server is
typical) writes one faithful and one unfaithful response, with the prompt below. Every row
carries `source=synthetic` and `generator` (model @ endpoint), so `data check` can report the
synthetic share and the model card can state it.

Production behaviour: at most `concurrency` requests in flight; connection errors, timeouts, 429
and 5xx are retried with jittered exponential backoff (a server's Retry-After is honoured); a
reply that is not the JSON asked for is asked again, then recorded as failed; rows are appended
to the output as they arrive, so an interrupted run resumes where it stopped (contexts already
in the output are skipped) and no finished row is lost.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import os
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

PROMPT_VERSION = "1"
SYSTEM_PROMPT = (
    "You write test data for a hallucination detector. Given a context (and a question when there is"
    " one), write two responses an assistant could give, in the same style and about the same length:"
    " FAITHFUL uses only facts stated in the context; UNFAITHFUL looks just as plausible but contains"
    " exactly one claim the context does not support (a changed name, number or date, a reversed"
    " statement, two facts wrongly combined, or an added unsupported detail). Reply with JSON only:"
    ' {"faithful": "...", "unfaithful": "...", "change": "what the unfaithful response got wrong"}'
)
USER_TEMPLATE = "Context:\n{context}\n\nQuestion: {input}\n"
USER_TEMPLATE_NO_INPUT = "Context:\n{context}\n"
COLUMNS = ["input", "output", "context", "label", "source", "generator", "context_id", "explanation"]
RETRY_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504}


class SynthesisError(ValueError):
    """Bad input to synthesis (no contexts, a missing column, a missing API key)."""


@dataclass(frozen=True)
class Endpoint:
    url: str  # the base URL, e.g. http://127.0.0.1:8080/v1
    model: str
    api_key: str | None = None
    timeout_s: float = 60.0
    temperature: float = 0.7

    @property
    def generator(self) -> str:
        return f"{self.model} @ {self.url}"


@dataclass(frozen=True)
class Outcome:
    written_rows: int
    skipped_contexts: int  # already in the output (a resumed run)
    failed_contexts: int
    failures: list[str]


def context_id(item: Mapping[str, str]) -> str:
    """Stable id of a context (with its question): what a resumed run skips."""
    text = (item.get("input") or "") + "\x1f" + item["context"]
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def read_contexts(path: Path) -> list[dict[str, str]]:
    """The contexts CSV: a `context` column (non-empty), an optional `input`; duplicates kept once."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "context" not in reader.fieldnames:
                raise SynthesisError(f"{path}: no 'context' column (columns: {reader.fieldnames})")
            rows = list(reader)
    except (OSError, UnicodeDecodeError) as exc:
        raise SynthesisError(f"{path}: cannot read: {exc}") from None
    seen: set[str] = set()
    out = []
    for number, row in enumerate(rows, start=2):
        if not (row.get("context") or "").strip():
            raise SynthesisError(f"{path}:{number}:context: empty")
        item = {"input": (row.get("input") or "").strip(), "context": row["context"].strip()}
        if (key := context_id(item)) not in seen:
            seen.add(key)
            out.append(item)
    if not out:
        raise SynthesisError(f"{path}: no contexts")
    return out


def done_ids(out_path: Path) -> set[str]:
    """Contexts whose two rows are already in the output."""
    if not out_path.is_file():
        return set()
    with open(out_path, newline="", encoding="utf-8") as fh:
        counts: dict[str, int] = {}
        for row in csv.DictReader(fh):
            counts[row["context_id"]] = counts.get(row["context_id"], 0) + 1
    return {k for k, n in counts.items() if n >= 2}


def messages(item: Mapping[str, str]) -> list[dict[str, str]]:
    template = USER_TEMPLATE if item.get("input") else USER_TEMPLATE_NO_INPUT
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": template.format(**item)},
    ]


def parse_reply(content: str) -> dict[str, str]:
    """The JSON object in the model's reply (code fences and chatter around it are tolerated)."""
    match = re.search(r"\{.*\}", content, flags=re.DOTALL)
    if not match:
        raise ValueError("no JSON object in the reply")
    data = json.loads(match.group(0))
    if not isinstance(data, dict):
        raise ValueError("the reply's JSON is not an object")
    out = {k: str(data.get(k) or "").strip() for k in ("faithful", "unfaithful", "change")}
    if not out["faithful"] or not out["unfaithful"]:
        raise ValueError("the reply lacks a faithful or an unfaithful response")
    if out["faithful"] == out["unfaithful"]:
        raise ValueError("the two responses are the same")
    return out


def rows_for(item: Mapping[str, str], reply: Mapping[str, str], generator: str) -> list[dict[str, str]]:
    common = {"input": item.get("input", ""), "context": item["context"], "source": "synthetic"}
    cid = context_id(item)
    return [
        {**common, "output": reply["faithful"], "label": "supported", "generator": generator,
         "context_id": cid, "explanation": ""},
        {**common, "output": reply["unfaithful"], "label": "hallucinated", "generator": generator,
         "context_id": cid, "explanation": reply.get("change", "")},
    ]  # fmt: skip


class _Writer:
    """Appends rows as they come, flushed, so an interrupted run keeps every finished context."""

    def __init__(self, path: Path) -> None:
        new = not path.is_file() or path.stat().st_size == 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._writer = csv.DictWriter(self._fh, fieldnames=COLUMNS)
        if new:
            self._writer.writeheader()
            self._fh.flush()

    def write(self, rows: Sequence[dict[str, str]]) -> None:
        self._writer.writerows(rows)
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


async def _ask(
    client: httpx.AsyncClient, endpoint: Endpoint, item: Mapping[str, str], attempts: int, backoff_s: float
) -> dict[str, str]:
    """One context's reply, retried where retrying can help; raises with the last reason."""
    body = {"model": endpoint.model, "messages": messages(item), "temperature": endpoint.temperature}
    reason = ""
    for attempt in range(attempts):
        wait = backoff_s * (2**attempt) * (0.5 + random.random())  # jittered exponential backoff
        try:
            response = await client.post("/chat/completions", json=body)
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        else:
            if response.status_code == 200:
                try:
                    content = response.json()["choices"][0]["message"]["content"]
                    return parse_reply(content)
                except (ValueError, KeyError, IndexError, TypeError) as exc:
                    reason = f"unusable reply: {exc}"
            elif response.status_code in RETRY_STATUSES:
                reason = f"HTTP {response.status_code}"
                wait = _retry_after(response) or wait
            else:  # 400, 401, 404...: asking again will not help
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        if attempt + 1 < attempts:
            await asyncio.sleep(wait)
    raise RuntimeError(f"gave up after {attempts} attempts: {reason}")


async def synthesize_async(
    contexts: Sequence[dict[str, str]],
    out_path: Path,
    endpoint: Endpoint,
    *,
    concurrency: int = 4,
    attempts: int = 4,
    backoff_s: float = 1.0,
    progress: bool = True,
) -> Outcome:
    done = done_ids(out_path)
    todo = [c for c in contexts if context_id(c) not in done]
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    limit = asyncio.Semaphore(concurrency)
    failures: list[str] = []
    written = 0
    writer = _Writer(out_path)
    bar = _progress_bar(len(todo), progress)
    try:
        async with httpx.AsyncClient(
            base_url=endpoint.url.rstrip("/"),
            headers=headers,
            timeout=endpoint.timeout_s,
            limits=httpx.Limits(max_connections=concurrency),
        ) as client:

            async def one(item: dict[str, str]) -> None:
                nonlocal written
                async with limit:
                    try:
                        reply = await _ask(client, endpoint, item, attempts, backoff_s)
                    except RuntimeError as exc:
                        failures.append(f"context {context_id(item)}: {exc}")
                    else:
                        writer.write(rows_for(item, reply, endpoint.generator))
                        written += 2
                    if bar is not None:
                        bar.update(1)

            await asyncio.gather(*(one(item) for item in todo))
    finally:
        writer.close()
        if bar is not None:
            bar.close()
    return Outcome(written, len(contexts) - len(todo), len(failures), failures)


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="synthesize", unit="context")


def synthesize(
    contexts_csv: Path,
    out_path: Path,
    endpoint: Endpoint,
    *,
    concurrency: int = 4,
    attempts: int = 4,
    backoff_s: float = 1.0,
    progress: bool = True,
) -> Outcome:
    """Write a faithful and an unfaithful row per context of `contexts_csv` into `out_path`."""
    if concurrency < 1 or attempts < 1:
        raise SynthesisError("concurrency and attempts must be at least 1")
    contexts = read_contexts(contexts_csv)
    return asyncio.run(
        synthesize_async(
            contexts,
            out_path,
            endpoint,
            concurrency=concurrency,
            attempts=attempts,
            backoff_s=backoff_s,
            progress=progress,
        )
    )


def api_key_from_env(name: str | None) -> str | None:
    """The key named by `--api-key-env`; naming a variable that is unset is an error, not a silent no-key."""
    if not name:
        return None
    value = os.environ.get(name)
    if not value:
        raise SynthesisError(f"--api-key-env {name}: the environment variable is not set")
    return value
