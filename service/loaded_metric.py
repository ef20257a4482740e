"""One served version of a metric: its model, its scheduler, and scoring a request's items.

Items are checked against the spec and encoded here, their windows go to the version's
scheduler as one request, and the rows that come back are turned into one score per item.
`ScoredItems` carries the results with every timing the caller reports (queue wait,
inference, tokens); the registry (`service.registry`) picks the version and records outcomes.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from service.batching.calibration import BatchCalibration, calibrate
from service.batching.policy import Priority
from service.batching.queue import RequestResult
from service.batching.scheduler import AdmissionError, BatchScheduler
from service.config import BatchingSettings
from service.runtime.classifier import MetricModel
from service.runtime.encoding import EncodedItem, ItemTooLongError, Window
from service.runtime.postprocess import ItemScore
from service.runtime.spec import MetricSpec

Item = Mapping[str, str | None]
TEXT_FIELDS = ("input", "output", "context")
INLINE_ENCODE_CHARS = 16_000  # about 4k tokens: ~1 ms of tokenising
WARMUP_ITEM = {
    "input": "What is the capital of France?",
    "output": "Paris.",
    "context": "Paris is in France.",
}


class UnscorableItemsError(ValueError):
    """Items the metric cannot score under its spec; `problems` name each item (and field)."""

    def __init__(self, detail: str, problems: list[dict[str, Any]]) -> None:
        super().__init__(detail)
        self.detail = detail
        self.problems = problems


class SupersededError(Exception):
    """The version drained while the request was on its way; retry on the active one."""


@dataclass(frozen=True)
class ScoredItems:
    metric: str
    version: str
    results: list[ItemScore]
    queued_s: float
    inference_s: float
    tokens: int


# A character that is not whitespace, spelled out so that Python's `re` (this check) and ECMA regex
# (the OpenAPI pattern, generated clients) agree: Python's \s adds \x1c-\x1f and \x85, ECMA's adds \ufeff.
TEXT_CHAR = r"[^\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
_TEXT_CHAR = re.compile(TEXT_CHAR)


def fields_over_limit(items: Sequence[Item], max_chars: int) -> list[dict[str, Any]]:
    """One problem for each text field longer than `max_chars`, naming its item and field."""
    return [
        {"item": index, "field": name, "msg": f"{len(value)} characters; the limit is {max_chars}"}
        for index, item in enumerate(items)
        for name in TEXT_FIELDS
        if (value := item.get(name)) is not None and len(value) > max_chars
    ]


def check_items(spec: MetricSpec, items: Sequence[Item], max_chars: int) -> None:
    """Every field the spec requires is present, and no field is longer than `max_chars`."""
    problems: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        for field in spec.required_fields:
            if not _TEXT_CHAR.search(item.get(field.value) or ""):
                problems.append(
                    {"item": index, "field": field.value, "msg": f"{spec.name} requires {field.value}"}
                )
    problems += fields_over_limit(items, max_chars)
    problems.sort(key=lambda problem: problem["item"])  # stable: each item's own problems together
    if problems:
        raise UnscorableItemsError(f"{len(problems)} problem(s) in the items", problems)


class LoadedMetric:
    """One version of a metric with its own scheduler and inference thread."""

    def __init__(
        self, model: MetricModel, scheduler: BatchScheduler, calibration: BatchCalibration | None = None
    ) -> None:
        self.model = model
        self.scheduler = scheduler
        self.calibration = calibration  # None: the row cap is the configured one

    @property
    def spec(self) -> MetricSpec:
        return self.model.spec

    async def score(
        self, items: Sequence[Item], priority: Priority, deadline: float, *, arrived: float | None = None
    ) -> ScoredItems:
        # Small requests are tokenised on the loop (well under a millisecond): a shared thread
        # pool would queue a guardrail item behind a flood of observability ones before it
        # even reached the scheduler that puts it first. Large ones go to a thread.
        try:
            fewest = fewest_tokens(items, self.spec.max_tokens)
            self.scheduler.refuse_early(priority, deadline, tokens=fewest, arrived=arrived)
        except AdmissionError as exc:
            if exc.reason == "draining":
                raise SupersededError from exc
            raise
        chars = sum(len(v or "") for item in items for v in item.values())
        if chars <= INLINE_ENCODE_CHARS:
            encoded = self.model.encode(items)
        else:
            encoded = await asyncio.to_thread(self.model.encode, items)
        for index, item in enumerate(encoded):
            if isinstance(item, ItemTooLongError):
                message = str(item).replace(f"item {index}: ", "", 1)
                raise UnscorableItemsError("an item cannot be scored", [{"item": index, "msg": message}])
        ready = [e for e in encoded if isinstance(e, EncodedItem)]
        windows = [w for e in ready for w in e.windows]
        try:
            future = self.scheduler.submit(windows, priority, deadline, arrived=arrived)
        except AdmissionError as exc:
            if exc.reason == "draining":
                raise SupersededError from exc
            raise
        result: RequestResult = await future
        scores, row = [], 0
        for item in ready:
            scores.append(self.model.finish(item, result.rows[row : row + len(item.windows)]))
            row += len(item.windows)
        return ScoredItems(
            self.spec.name, self.spec.version, scores, result.queued_s, result.inference_s,
            tokens=sum(len(w) for w in windows),
        )  # fmt: skip


def fewest_tokens(items: Sequence[Item], max_tokens: int) -> int:
    """A lower bound, without tokenising, of the tokens `items` will queue.

    A tokenizer splits at whitespace at least, so each word is at least one token; an item
    queues at least one window, and a window holds at most `max_tokens`. In a burst most
    requests are refused, and this refuses them before the tokenizer spends ~1 ms of the event
    loop on each (docs/benchmarks.md, "A burst of 400").
    """
    return sum(min(sum(len((v or "").split()) for v in item.values()), max_tokens) for item in items)


def warm_up(model: MetricModel) -> Window:
    """One forward pass: proves the model, tokenizer and spec fit together, and warms ORT.

    Returns the warm-up window, whose tokens the batch calibration repeats.
    """
    (encoded,) = model.encode([WARMUP_ITEM])
    if not isinstance(encoded, EncodedItem):
        raise ValueError(f"the warm-up item cannot be encoded: {encoded}")
    probs = model.forward(encoded.windows)
    labels = len(model.spec.labels)
    if probs.shape != (len(encoded.windows), labels):
        raise ValueError(f"the model gives outputs of shape {probs.shape[1:]} for {labels} labels")
    model.finish(encoded, probs)
    return encoded.windows[0]


def calibrate_batches(model: MetricModel, window: Window, settings: BatchingSettings) -> BatchCalibration:
    """Time the model at growing batches of rows `calibration_tokens` long; choose the row cap."""
    tokens = min(settings.calibration_tokens, model.spec.max_tokens)
    max_rows = max(1, min(settings.max_batch_rows, settings.max_batch_tokens // tokens))
    return calibrate(
        model.forward, window.stretched(tokens), max_rows=max_rows, min_gain=settings.min_batch_gain
    )
