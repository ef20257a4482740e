"""Metrics by name and version: loading, warm-up, the active version, and atomic hot swap.

A swap loads and verifies the new version beside the old one, warms it, starts its scheduler,
then replaces the active entry in one assignment and drains the old one in the background.
A request that reached the old version as it began draining is re-run on the new one, so no
request fails because of a swap.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from service.batching.calibration import BatchCalibration, calibrate
from service.batching.clock import Clock
from service.batching.observer import NullObserver
from service.batching.policy import Priority
from service.batching.queue import RequestResult
from service.batching.runner import ThreadRunner
from service.batching.scheduler import AdmissionError, BatchScheduler
from service.config import BatchingSettings, Settings
from service.metrics import ServerMetrics
from service.runtime.artifact import ArtifactError, find_artifacts, load_artifact
from service.runtime.classifier import MetricModel
from service.runtime.encoding import EncodedItem, ItemTooLongError, Window
from service.runtime.postprocess import ItemScore
from service.runtime.spec import NAME_PATTERN, VERSION_PATTERN, MetricSpec

log = logging.getLogger(__name__)

Item = Mapping[str, str | None]
INLINE_ENCODE_CHARS = 16_000  # about 4k tokens: ~1 ms of tokenising
WARMUP_ITEM = {
    "input": "What is the capital of France?",
    "output": "Paris.",
    "context": "Paris is in France.",
}


class MetricNotFoundError(LookupError):
    """No such metric (or version) in the repository."""


class InvalidItemError(ValueError):
    """An item the metric cannot score under its spec; `index` is its place in the request."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


class _SupersededError(Exception):
    """The version drained while the request was on its way; retry on the active one."""


@dataclass(frozen=True)
class ScoredItems:
    metric: str
    version: str
    results: list[ItemScore]
    queued_s: float
    inference_s: float
    tokens: int


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order: 2 < 10, and 1.10 > 1.9."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[._-]", version))


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

    async def score(self, items: Sequence[Item], priority: Priority, deadline: float) -> ScoredItems:
        # Small requests are tokenised on the loop (well under a millisecond): a shared thread
        # pool would queue a guardrail item behind a flood of observability ones before it
        # even reached the scheduler that puts it first. Large ones go to a thread.
        chars = sum(len(v or "") for item in items for v in item.values())
        if chars <= INLINE_ENCODE_CHARS:
            encoded = self.model.encode(items)
        else:
            encoded = await asyncio.to_thread(self.model.encode, items)
        for index, item in enumerate(encoded):
            if isinstance(item, ItemTooLongError):
                raise InvalidItemError(index, str(item).replace(f"item {index}: ", "", 1))
        ready = [e for e in encoded if isinstance(e, EncodedItem)]
        windows = [w for e in ready for w in e.windows]
        try:
            future = self.scheduler.submit(windows, priority, deadline)
        except AdmissionError as exc:
            if exc.reason == "draining":
                raise _SupersededError from exc
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


class MetricRegistry:
    def __init__(self, settings: Settings, metrics: ServerMetrics, clock: Clock) -> None:
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.active: dict[str, LoadedMetric] = {}
        self._swap_lock = asyncio.Lock()
        self._draining: set[asyncio.Task[None]] = set()

    # -- what the repository holds ---------------------------------------------------------

    def available(self) -> dict[str, list[str]]:
        """Versions per metric found in the repository (not yet verified), naturally sorted."""
        found: dict[str, list[str]] = {}
        for folder in find_artifacts(self.settings.repository):
            found.setdefault(folder.parent.name, []).append(folder.name)
        return {name: sorted(versions, key=version_key) for name, versions in sorted(found.items())}

    def folder(self, metric: str, version: str) -> Path:
        """The folder of `metric` version `version`; names are checked so no path escapes."""
        if not re.fullmatch(NAME_PATTERN, metric) or not re.fullmatch(VERSION_PATTERN, version):
            raise MetricNotFoundError(f"{metric!r} / {version!r} is not a valid metric name and version")
        folder = self.settings.repository / metric / version
        if not (folder / "manifest.json").is_file():
            raise MetricNotFoundError(f"metric {metric!r} has no version {version!r} in the repository")
        return folder

    def get(self, metric: str) -> LoadedMetric:
        try:
            return self.active[metric]
        except KeyError:
            raise MetricNotFoundError(f"no metric named {metric!r} is served") from None

    @property
    def healthy(self) -> bool:
        return bool(self.active) and all(m.scheduler.alive for m in self.active.values())

    # -- loading and swapping --------------------------------------------------------------

    async def load_repository(self) -> list[str]:
        """Load the newest verifiable version of every metric not yet served; returns problems."""
        problems: list[str] = []
        for name, versions in self.available().items():
            if name in self.active:
                continue
            for version in reversed(versions):
                try:
                    await self.activate(name, version)
                    break
                except ArtifactError as exc:
                    problems.append(str(exc))
                    log.error("not serving %s/%s: %s", name, version, exc)
        return problems

    async def _load(self, metric: str, version: str) -> LoadedMetric:
        folder = self.folder(metric, version)
        artifact = await asyncio.to_thread(load_artifact, folder)
        if (artifact.spec.name, artifact.spec.version) != (metric, version):
            raise ArtifactError(f"{folder}: holds {artifact.spec.name}/{artifact.spec.version}")
        try:
            model = await asyncio.to_thread(
                MetricModel, artifact, intra_op_threads=self.settings.intra_op_threads
            )
            window = await asyncio.to_thread(warm_up, model)
            batching = self.settings.batching
            calibration = None
            limits = batching.limits()
            if batching.calibrate:
                calibration = await asyncio.to_thread(calibrate_batches, model, window, batching)
                limits = dataclasses.replace(limits, max_batch_rows=calibration.max_batch_rows)
                log.info(
                    "%s/%s: batches capped at %d rows (rows/s at %d tokens by batch rows: %s)",
                    metric, version, calibration.max_batch_rows, calibration.tokens,
                    ", ".join(f"{r}: {v:.1f}" for r, v in calibration.rows_per_s().items()),
                )  # fmt: skip
        except Exception as exc:  # ORT, tokenizers and numpy raise their own types
            raise ArtifactError(f"{folder}: cannot load: {type(exc).__name__}: {exc}") from None
        runner = ThreadRunner(model.forward, f"{metric}-{version}")
        scheduler = BatchScheduler(
            runner,
            clock=self.clock,
            limits=limits,
            admission=self.settings.admission.limits(),
            observer=self.metrics.observer(metric),
            name=f"{metric}/{version}",
        )
        scheduler.start()
        return LoadedMetric(model, scheduler, calibration)

    async def activate(self, metric: str, version: str) -> LoadedMetric:
        """Serve `version` of `metric`; the old version drains. Raises and keeps the old on failure."""
        async with self._swap_lock:
            old = self.active.get(metric)
            if old is not None and old.spec.version == version:
                return old
            new = await self._load(metric, version)
            self.active[metric] = new
            self.metrics.set_active_version(
                metric, version, old.spec.version if old else None,
                max_batch_rows=new.scheduler.limits.max_batch_rows,
            )  # fmt: skip
            log.info("serving %s version %s", metric, version)
            if old is not None:
                old.scheduler.observer = NullObserver()  # the gauges now speak for the new version
                task = asyncio.get_running_loop().create_task(self._retire(old))
                self._draining.add(task)
                task.add_done_callback(self._draining.discard)
            return new

    async def _retire(self, old: LoadedMetric) -> None:
        await old.scheduler.drain()
        log.info("retired %s version %s", old.spec.name, old.spec.version)

    async def score(
        self, metric: str, items: Sequence[Item], priority: Priority, deadline: float
    ) -> ScoredItems:
        while True:
            loaded = self.get(metric)
            try:
                return await loaded.score(items, priority, deadline)
            except _SupersededError:
                if self.active.get(metric) is loaded:  # draining for shutdown, not for a swap
                    loaded.scheduler.observer.rejected(priority, "draining")
                    raise AdmissionError("draining", "the server is shutting down", 1.0) from None

    async def close(self) -> None:
        """Drain every active metric (accepted requests finish), then stop."""
        timeout = self.settings.drain_timeout_s
        await asyncio.gather(*(m.scheduler.drain(timeout) for m in self.active.values()))
        await asyncio.gather(*self._draining)
        self.active.clear()
