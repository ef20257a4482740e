"""Every Prometheus series the server exports: names, buckets and label sets in one place.

Base units (seconds, tokens), `lunaserve_` prefix, and bounded labels: `metric` comes from the
repository (a handful), `traffic_class`, `outcome` and `reason` from fixed sets. The Prometheus
registry is passed in, never the global one, so tests and several apps in one process do not
collide. `SchedulerMetrics` is the only writer of the per-request and per-batch series: the
scheduler's observer (`service.batching.observer`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from service.batching.policy import Priority

LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.002, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0,
)  # fmt: skip
TOKEN_BUCKETS = (16, 32, 64, 128, 192, 256, 384, 512, 1024, 2048, 4096, 8192, 16384, 32768)
BATCH_ROW_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128)
RATIO_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)

TRAFFIC_CLASS = {Priority.GUARDRAIL: "guardrail", Priority.OBSERVABILITY: "observability"}
OUTCOMES = ("ok", "rejected", "expired", "failed", "cancelled", "invalid")


class ServerMetrics:
    def __init__(self, prometheus_registry: CollectorRegistry) -> None:
        self.prometheus_registry = registry = prometheus_registry
        self._observers: dict[str, SchedulerMetrics] = {}
        by_class = ["metric", "traffic_class"]
        self.request_duration = Histogram(
            "lunaserve_request_duration_seconds",
            "Time from a scoring request's arrival (headers read) to its answer.",
            by_class, buckets=LATENCY_BUCKETS_S, registry=registry,
        )  # fmt: skip
        self.queue_wait = Histogram(
            "lunaserve_queue_wait_seconds",
            "Time a request waited in its model's queue before its first batch started.",
            by_class, buckets=LATENCY_BUCKETS_S, registry=registry,
        )  # fmt: skip
        self.inference_duration = Histogram(
            "lunaserve_inference_duration_seconds",
            "Time a request spent in forward passes (the batches holding its windows).",
            by_class, buckets=LATENCY_BUCKETS_S, registry=registry,
        )  # fmt: skip
        self.input_tokens = Histogram(
            "lunaserve_input_tokens",
            "Tokens a request sends to the model (all windows of all its items).",
            ["metric"], buckets=TOKEN_BUCKETS, registry=registry,
        )  # fmt: skip
        self.batch_size = Histogram(
            "lunaserve_batch_size", "Rows (windows) in one forward pass.",
            ["metric"], buckets=BATCH_ROW_BUCKETS, registry=registry,
        )  # fmt: skip
        self.batch_tokens = Histogram(
            "lunaserve_batch_tokens", "Padded tokens (rows x longest row) in one forward pass.",
            ["metric"], buckets=TOKEN_BUCKETS, registry=registry,
        )  # fmt: skip
        self.batch_padding = Histogram(
            "lunaserve_batch_padding_ratio", "Share of a batch's padded tokens that are padding.",
            ["metric"], buckets=RATIO_BUCKETS, registry=registry,
        )  # fmt: skip
        self.batch_duration = Histogram(
            "lunaserve_batch_duration_seconds", "Wall time of one forward pass.",
            ["metric"], buckets=LATENCY_BUCKETS_S, registry=registry,
        )  # fmt: skip
        self.real_tokens = Counter(
            "lunaserve_batch_real_tokens", "Real (unpadded) tokens run through the model.",
            ["metric"], registry=registry,
        )  # fmt: skip
        self.padded_tokens = Counter(
            "lunaserve_batch_padded_tokens", "Padded tokens run through the model.",
            ["metric"], registry=registry,
        )  # fmt: skip
        self.requests = Counter(
            "lunaserve_requests", "Scoring requests by how they ended.",
            [*by_class, "outcome"], registry=registry,
        )  # fmt: skip
        self.rejections = Counter(
            "lunaserve_rejections", "Requests refused at admission, by reason.",
            [*by_class, "reason"], registry=registry,
        )  # fmt: skip
        self.dropped = Counter(
            "lunaserve_dropped_requests", "Admitted requests dropped before inference, by reason.",
            [*by_class, "reason"], registry=registry,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "lunaserve_queue_depth", "Requests waiting in a model's queue.", ["metric"], registry=registry
        )
        self.queued_tokens = Gauge(
            "lunaserve_queued_tokens", "Tokens waiting in a model's queue.", ["metric"], registry=registry
        )
        self.cost_per_token = Gauge(
            "lunaserve_cost_per_token_seconds",
            "Inference seconds per token as admission reads it: 'wait' (a high quantile of recent batches)"
            " and 'idle' (the lowest measured, which alone can refuse a request for good).",
            ["metric", "reading"], registry=registry,
        )  # fmt: skip
        self.batch_rows_limit = Gauge(
            "lunaserve_batch_rows_limit", "Row cap of the serving version's batches (calibrated or set).",
            ["metric"], registry=registry,
        )  # fmt: skip
        self.model_instances = Gauge(
            "lunaserve_model_instances", "Model instances (sessions) serving each metric's batches.",
            ["metric"], registry=registry,
        )  # fmt: skip
        self.guardrail_instances = Gauge(
            "lunaserve_guardrail_instances",
            "Of a metric's model instances, those that take guardrail traffic alone.",
            ["metric"], registry=registry,
        )  # fmt: skip
        self.model_info = Gauge(
            "lunaserve_model_info", "1 for the version of each metric that is serving.",
            ["metric", "version"], registry=registry,
        )  # fmt: skip

    def outcome_totals(self) -> dict[str, int]:
        """Scoring requests by outcome, over every metric and class (logged at shutdown)."""
        totals = dict.fromkeys(OUTCOMES, 0)
        for metric in self.requests.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    totals[sample.labels["outcome"]] += int(sample.value)
        return totals

    def observer(self, metric: str) -> SchedulerMetrics:
        """The one observer of `metric` (made on first use): every version of it, old and new,
        writes the same series."""
        observer = self._observers.get(metric)
        if observer is None:
            observer = self._observers[metric] = SchedulerMetrics(self, metric)
        return observer

    def set_active_version(
        self, metric: str, version: str, previous: str | None, *, max_batch_rows: int, instances: int = 1,
        guardrail_instances: int = 0,
    ) -> None:  # fmt: skip
        if previous is not None and previous != version:
            self.model_info.remove(metric, previous)
        self.model_info.labels(metric, version).set(1)
        self.batch_rows_limit.labels(metric).set(max_batch_rows)
        self.model_instances.labels(metric).set(instances)
        self.guardrail_instances.labels(metric).set(guardrail_instances)


class SchedulerMetrics:
    """The scheduler's observer for one metric (see batching.observer.SchedulerObserver).

    Each labelled series is looked up once, when first written, not per observation: a scoring
    request makes ~17 observations and `labels()` costs more than the observation itself
    (docs/benchmarks.md, "Serving cost"). A series still appears only once it has a value.
    """

    def __init__(self, metrics: ServerMetrics, metric: str) -> None:
        self.m = metrics
        self.metric = metric
        self._series: dict[tuple[object, ...], Any] = {}

    def _of(self, family: MetricWrapperBase, *labels: str) -> Any:
        """`family`'s series for this metric and `labels`, made on first use."""
        key = (id(family), *labels)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = family.labels(self.metric, *labels)
        return series

    def batch_done(self, windows: int, real_tokens: int, padded_tokens: int, seconds: float) -> None:
        m = self.m
        self._of(m.batch_size).observe(windows)
        self._of(m.batch_tokens).observe(padded_tokens)
        self._of(m.batch_padding).observe(1 - real_tokens / padded_tokens if padded_tokens else 0.0)
        self._of(m.batch_duration).observe(seconds)
        self._of(m.real_tokens).inc(real_tokens)
        self._of(m.padded_tokens).inc(padded_tokens)

    def queue_waited(self, priority: Priority, seconds: float) -> None:
        self._of(self.m.queue_wait, TRAFFIC_CLASS[priority]).observe(seconds)

    def rejected(self, priority: Priority, reason: str) -> None:
        self._of(self.m.rejections, TRAFFIC_CLASS[priority], reason).inc()

    def dropped(self, priority: Priority, reason: str) -> None:
        self._of(self.m.dropped, TRAFFIC_CLASS[priority], reason).inc()

    def queue_changed(self, requests: int, tokens: int) -> None:
        self._of(self.m.queue_depth).set(requests)
        self._of(self.m.queued_tokens).set(tokens)

    def cost_changed(self, per_token_s: float, idle_per_token_s: float) -> None:
        self._of(self.m.cost_per_token, "wait").set(per_token_s)
        self._of(self.m.cost_per_token, "idle").set(idle_per_token_s)

    def request_ended(self, priority: Priority, seconds: float) -> None:
        self._of(self.m.request_duration, TRAFFIC_CLASS[priority]).observe(seconds)

    def request_outcome(self, priority: Priority | None, outcome: str) -> None:
        cls = TRAFFIC_CLASS[priority] if priority is not None else "unknown"
        self._of(self.m.requests, cls, outcome).inc()

    def request_scored(self, priority: Priority, inference_s: float, tokens: int) -> None:
        self._of(self.m.inference_duration, TRAFFIC_CLASS[priority]).observe(inference_s)
        self._of(self.m.input_tokens).observe(tokens)


class HealthCollector(Collector):
    """Readiness and each scheduler's liveness, read when Prometheus scrapes (never stale).

    `lunaserve_ready` is 1 when /readyz answers 200; `lunaserve_scheduler_alive` is 1 per served
    metric whose scheduler task runs: the series the deploy/prometheus alerts are written on.
    """

    def __init__(self, ready: Callable[[], bool], schedulers: Callable[[], Mapping[str, bool]]) -> None:
        self.ready = ready
        self.schedulers = schedulers

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("lunaserve_ready", "1 when the server is ready to score (as /readyz).",
                                value=1.0 if self.ready() else 0.0)  # fmt: skip
        alive = GaugeMetricFamily(
            "lunaserve_scheduler_alive",
            "1 when a served metric's batch scheduler is running.",
            labels=["metric"],
        )
        for metric, running in sorted(self.schedulers().items()):
            alive.add_metric([metric], 1.0 if running else 0.0)
        yield alive
