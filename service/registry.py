"""Metrics by name and version: loading, warm-up, the active version, and atomic hot swap.

A swap loads and verifies the new version beside the old one, warms it, starts its scheduler,
then replaces the active entry in one assignment and drains the old one in the background.
A request that reached the old version as it began draining is re-run on the new one, so no
request fails because of a swap.

`score` is the request path's one call: it checks the items, runs them on the active version
and returns the results with their timings; every outcome of a scoring request (ok, invalid,
rejected, expired, failed, cancelled) is recorded here, through the metric's observer
(`service.metrics.SchedulerMetrics`). The registry also owns the server's health and its
draining state, which readiness reports and the scoring routes consult.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Sequence
from pathlib import Path

from service.batching.clock import Clock
from service.batching.observer import NullObserver
from service.batching.policy import Priority
from service.batching.runner import Runner, RunnerFactory, ThreadRunner
from service.batching.scheduler import (
    AdmissionError,
    BatchFailedError,
    BatchScheduler,
    DeadlineExceededError,
    RequestTooLargeError,
)
from service.config import Settings
from service.loaded_metric import (
    Item,
    LoadedMetric,
    ScoredItems,
    SupersededError,
    UnscorableItemsError,
    calibrate_batches,
    check_items,
    warm_up,
)
from service.metrics import ServerMetrics
from service.runtime.artifact import ArtifactError, find_artifacts, load_artifact
from service.runtime.classifier import MetricModel
from service.runtime.spec import NAME_PATTERN, VERSION_PATTERN
from service.runtime.thread_priority import at_lower_priority

log = logging.getLogger(__name__)

TRAFFIC_CLASSES = {"guardrail": Priority.GUARDRAIL, "observability": Priority.OBSERVABILITY}
# How a scoring request ended, by the error it ended with (Prometheus `outcome` label);
# errors not listed (an unknown metric, items refused before scoring) are not counted.
OUTCOMES: dict[type[BaseException], str] = {
    UnscorableItemsError: "invalid",
    RequestTooLargeError: "invalid",
    AdmissionError: "rejected",
    DeadlineExceededError: "expired",
    BatchFailedError: "failed",
    asyncio.CancelledError: "cancelled",
}


class MetricNotFoundError(LookupError):
    """No such metric (or version) in the repository."""


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order: 2 < 10, and 1.10 > 1.9."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[._-]", version))


class MetricRegistry:
    def __init__(
        self,
        settings: Settings,
        server_metrics: ServerMetrics,
        clock: Clock,
        runner_factory: RunnerFactory = ThreadRunner,
    ) -> None:
        self.settings = settings
        self.server_metrics = server_metrics
        self.clock = clock
        self.runner_factory = runner_factory  # how a version's batches reach its model (tests gate it)
        self.active: dict[str, LoadedMetric] = {}
        self.started = False  # the repository was loaded and every served version warmed
        self.draining = False  # shutting down: readiness fails and new scoring requests are refused
        self._swap_lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()

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

    def traffic_class(self, metric: str, requested: str | None) -> str:
        """The class a request runs in: the one it asked for (or its key's), else the metric's use case."""
        if requested:
            return requested
        loaded = self.active.get(metric)
        return loaded.spec.use_case if loaded else "observability"

    # -- health and lifecycle --------------------------------------------------------------

    def health(self) -> dict[str, str]:
        """Readiness checks by name, "ok" or what is wrong; ready when every one is "ok"."""
        dead = [name for name, m in self.active.items() if not m.scheduler.alive]
        return {
            "loaded": "ok" if self.active and self.started else "no metric loaded",
            "schedulers": "ok" if not dead else "dead: " + ", ".join(dead),
            "draining": "draining" if self.draining else "ok",
        }

    async def start(self) -> None:
        """Serve the newest verifiable version of every metric; raises if none can be served."""
        problems = await self.load_repository()
        if not self.active:
            raise RuntimeError(
                f"no servable metric in {self.settings.repository}: {'; '.join(problems) or 'empty'}"
            )
        self.started = True
        log.info("ready: %s", ", ".join(f"{n}/{m.spec.version}" for n, m in self.active.items()))

    def start_draining(self) -> None:
        """Fail readiness and refuse new scoring requests at once; `close` finishes the rest."""
        self.draining = True

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
        settings = self.settings
        try:
            model = await asyncio.to_thread(
                MetricModel, artifact, intra_op_threads=settings.threads_per_instance(metric),
                providers=settings.execution_providers,
            )  # fmt: skip
            window = await asyncio.to_thread(warm_up, model)
            instances = [model]
            for _ in range(settings.all_instances_of(metric) - 1):
                instances.append(await asyncio.to_thread(model.another_instance))
                await asyncio.to_thread(warm_up, instances[-1])
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
        several = len(instances) > 1
        # with instances kept for guardrail, the others' passes yield a shared core to theirs
        general = len(instances) - settings.guardrail_instances
        nice = settings.shared_instances_nice if settings.guardrail_instances else 0
        runners: list[Runner] = [
            self.runner_factory(
                at_lower_priority(nice if i < general else 0, m.forward),
                f"{metric}-{version}" + (f"-{i}" if several else ""),
            )
            for i, m in enumerate(instances)
        ]
        scheduler = BatchScheduler(
            runners,
            clock=self.clock,
            limits=limits,
            admission=self.settings.admission.limits(),
            observer=self.server_metrics.observer(metric),
            name=f"{metric}/{version}",
            guardrail_instances=settings.guardrail_instances,
            # spill guardrail work onto the others only where no two instances share a core
            guardrail_spills=not settings.instances_share_cores(metric),
        )
        if calibration is not None:
            scheduler.cost_per_token_s = calibration.seconds_per_token()  # not the configured guess
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
            self.server_metrics.set_active_version(
                metric, version, old.spec.version if old else None,
                max_batch_rows=new.scheduler.limits.max_batch_rows, instances=new.scheduler.instances,
                guardrail_instances=new.scheduler.guardrail_instances,
            )  # fmt: skip
            log.info("serving %s version %s", metric, version)
            if old is not None:
                old.scheduler.observer = NullObserver()  # the gauges now speak for the new version
                task = asyncio.get_running_loop().create_task(self._retire(old))
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
            return new

    async def _retire(self, old: LoadedMetric) -> None:
        await old.scheduler.drain()
        log.info("retired %s version %s", old.spec.name, old.spec.version)

    # -- scoring ---------------------------------------------------------------------------

    async def score(
        self, metric: str, items: Sequence[Item], traffic_class: str, deadline: float, *, arrived_s: float
    ) -> ScoredItems:
        """Score `items` with the active version of `metric` before `deadline` (app clock).

        Raises MetricNotFoundError, UnscorableItemsError, RequestTooLargeError, AdmissionError,
        DeadlineExceededError or BatchFailedError; `service.api.errors` maps each to a status.
        """
        loaded = self.get(metric)
        check_items(loaded.spec, items, self.settings.limits.max_field_chars)
        priority = TRAFFIC_CLASSES[traffic_class]
        observer = self.server_metrics.observer(metric)
        try:
            scored = await self._score_on_active(metric, items, priority, deadline, arrived_s)
        except BaseException as exc:
            outcome = next((o for t, o in OUTCOMES.items() if isinstance(exc, t)), None)
            if outcome is not None:
                # an item the metric cannot encode is counted before its class is (Prometheus: "unknown")
                observer.request_outcome(None if isinstance(exc, UnscorableItemsError) else priority, outcome)
            if isinstance(exc, DeadlineExceededError) and metric in self.active:
                exc.retry_after_s = self.active[metric].scheduler.retry_after_s()
            raise
        finally:
            observer.request_ended(priority, self.clock.now() - arrived_s)
        observer.request_outcome(priority, "ok")
        observer.request_scored(priority, scored.inference_s, scored.tokens)
        return scored

    async def _score_on_active(
        self, metric: str, items: Sequence[Item], priority: Priority, deadline: float, arrived_s: float
    ) -> ScoredItems:
        while True:
            loaded = self.get(metric)
            try:
                return await loaded.score(items, priority, deadline, arrived=arrived_s)
            except SupersededError:
                if self.active.get(metric) is loaded:  # draining for shutdown, not for a swap
                    loaded.scheduler.observer.rejected(priority, "draining")
                    raise AdmissionError("draining", "the server is shutting down", 1.0) from None

    async def close(self) -> None:
        """Drain every active metric (accepted requests finish), then stop."""
        self.draining = True
        timeout = self.settings.drain_timeout_s
        await asyncio.gather(*(m.scheduler.drain(timeout) for m in self.active.values()))
        await asyncio.gather(*self._retiring)
        self.active.clear()
