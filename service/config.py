"""Server settings: one pydantic-settings model, from environment (LUNASERVE_*) and the CLI.

Nested groups map to `LUNASERVE_BATCHING__MAX_BATCH_TOKENS=...` in the environment and to
`--batching.max_batch_tokens ...` on the command line. Every field says what it trades off.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.batching.admission import AdmissionLimits
from service.batching.policy import BatchLimits
from service.runtime.cpus import usable_cpus
from service.runtime.session import check_providers

DEFAULT_REPOSITORY = Path(__file__).resolve().parent.parent / "repository"


class BatchingSettings(BaseModel):
    max_batch_tokens: int = Field(
        1024,
        ge=64,
        description="Padded tokens per forward pass: bigger batches may raise throughput under load and"
        " add latency; on one or two CPU cores batch 1 is already near peak at >= 128 tokens"
        " (docs/benchmarks.md).",
    )
    max_batch_rows: int = Field(
        32,
        ge=1,
        le=1024,
        description="Rows per forward pass, whatever their length (the calibration may lower it).",
    )
    max_wait_ms: float = Field(
        2.0, ge=0, le=1000, description="How long an under-full first batch waits for company after idle."
    )
    lookahead_rows: int = Field(
        128, ge=1, description="Queued windows considered when grouping similar lengths (less padding)."
    )
    guardrail_active_batch_tokens: int = Field(
        512,
        ge=16,
        description="While guardrail traffic flows, observability rows may fill a batch only up to this many "
        "padded tokens: lower guardrail tail latency, lower observability throughput.",
    )
    guardrail_active_s: float = Field(
        1.0,
        ge=0,
        description="Guardrail traffic counts as flowing this long after its last request arrived: longer"
        " keeps observability batches short for longer after a guardrail burst.",
    )

    calibrate: bool = Field(
        True,
        description="Time the model at 1, 2, 4, ... rows when it loads and cap batches where a bigger batch"
        " stops paying (see min_batch_gain); off: max_batch_rows as set.",
    )
    calibration_tokens: int = Field(
        128, ge=8, description="Row length the calibration measures at (capped by the metric's max_tokens)."
    )
    min_batch_gain: float = Field(
        0.1,
        ge=0,
        le=10,
        description="Throughput a step up in batch rows must add to be used: higher keeps batches small"
        " (lower latency), lower takes any gain (more throughput under overload).",
    )

    def limits(self) -> BatchLimits:
        return BatchLimits(
            max_batch_tokens=self.max_batch_tokens,
            max_batch_rows=self.max_batch_rows,
            max_wait_s=self.max_wait_ms / 1000,
            lookahead_rows=self.lookahead_rows,
            guardrail_active_batch_tokens=self.guardrail_active_batch_tokens,
            guardrail_active_s=self.guardrail_active_s,
        )


class AdmissionSettings(BaseModel):
    max_queue_requests: int = Field(1024, ge=1, description="Requests queued per model before 503s.")
    max_queue_tokens: int = Field(262_144, ge=64, description="Tokens queued per model before 503s.")
    observability_share: float = Field(
        0.75,
        gt=0,
        le=1,
        description="Share of the token bound observability may fill; guardrail keeps the rest.",
    )
    initial_cost_per_token_s: float = Field(
        1e-4,
        ge=0,
        description="Inference seconds per token assumed until the first batch is measured: higher refuses"
        " more at start-up, lower admits work that may then miss its deadline.",
    )
    cost_quantile: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Quantile of recent batches' cost per token (weighted by their tokens) that waits are"
        " estimated with: higher keeps accepted requests safer within their deadlines when batch times"
        " spread, lower admits more.",
    )
    cost_horizon_s: float = Field(
        10.0,
        gt=0,
        description="How long a batch's cost counts as recent; with no batch that recent the model is idle"
        " and its lowest measured cost is the estimate again.",
    )

    def limits(self) -> AdmissionLimits:
        return AdmissionLimits(
            max_queue_requests=self.max_queue_requests,
            max_queue_tokens=self.max_queue_tokens,
            observability_share=self.observability_share,
            initial_cost_per_token_s=self.initial_cost_per_token_s,
            cost_quantile=self.cost_quantile,
            cost_horizon_s=self.cost_horizon_s,
        )


class DeadlineSettings(BaseModel):
    guardrail_timeout_ms: float = Field(
        200, gt=0, description="Deadline of a guardrail request that states none."
    )
    observability_timeout_ms: float = Field(
        10_000, gt=0, description="Deadline of an observability request that states none."
    )
    max_timeout_ms: float = Field(60_000, gt=0, description="Largest timeout_ms a client may ask for.")
    response_allowance_ms: float = Field(
        10,
        ge=0,
        description="Kept back from every deadline for sending the answer: inference must end this much"
        " earlier (at most half the timeout), so an accepted answer reaches the client in time;"
        " higher sheds a little more under overload.",
    )

    def deadline(self, arrived: float, timeout_ms: float | None, classes: Sequence[str]) -> float:
        """When inference must be done, on the clock of `arrived`: the stated timeout (else the
        tightest default of the traffic classes involved, capped at max_timeout_ms) counted from
        arrival, less the response allowance (which never takes more than half the timeout)."""
        default = min(
            self.guardrail_timeout_ms if c == "guardrail" else self.observability_timeout_ms for c in classes
        )
        ms = min(timeout_ms or default, self.max_timeout_ms)
        return arrived + max(ms - self.response_allowance_ms, ms / 2) / 1000


class LimitSettings(BaseModel):
    max_body_bytes: int = Field(4 << 20, ge=1024, description="Request bodies above this get 413.")
    max_items: int = Field(256, ge=1, description="Items per request; more get 422.")
    max_field_chars: int = Field(200_000, ge=1, description="Characters per text field; more get 422.")


class ApiKey(BaseModel):
    key: SecretStr = Field(description="The bearer token.")
    traffic_class: Literal["guardrail", "observability"] | None = Field(
        None, description="Default traffic class of this key's requests (else the metric's use case)."
    )


class AuthSettings(BaseModel):
    api_keys: list[ApiKey] = Field(
        default_factory=list, description="Bearer keys for scoring (JSON list); empty leaves scoring open."
    )
    admin_keys: list[SecretStr] = Field(
        default_factory=list, description="Bearer keys for /v1/admin; empty disables the admin API."
    )
    protect_metrics: bool = Field(False, description="Require a scoring key for /metrics.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LUNASERVE_", env_nested_delimiter="__", extra="forbid")

    repository: Path = Field(DEFAULT_REPOSITORY, description="Model repository: <metric>/<version>/.")
    host: str = Field("127.0.0.1", description="Address to bind; 0.0.0.0 exposes the server.")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind (0: any free port).")
    intra_op_threads: int = Field(
        0,
        ge=0,
        description="ONNX Runtime threads per model instance (0: the CPUs this process may use, its"
        " cgroup quota included, shared out among the metric's instances).",
    )
    instances: int = Field(
        1,
        ge=1,
        le=64,
        description="Model instances per served metric (Triton's instance groups): each a session with"
        " its own threads, fed batches by the metric's one queue. On a many-core host where batch 1 is"
        " fastest, more instances use the cores that one instance leaves idle.",
    )
    guardrail_instances: int = Field(
        0,
        ge=0,
        le=8,
        description="Further instances per served metric that take guardrail traffic alone: a guardrail"
        " request then never waits for an observability batch in flight. Each costs a session's"
        " memory; on a host with a core to spare for it, it also keeps its idle speed under a flood.",
    )
    shared_instances_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="With guardrail_instances, the OS niceness added to the other instances' inference"
        " threads (Linux): at 10 a guardrail forward pass gets ~90% of a core it shares with an"
        " observability one, instead of half; 0 keeps every thread at equal priority.",
    )
    metric_instances: dict[str, int] = Field(
        default_factory=dict,
        description='Instances for named metrics, over `instances` (JSON, e.g. {"context_adherence": 4}).',
    )
    execution_providers: list[str] = Field(
        default_factory=lambda: ["CPUExecutionProvider"],
        min_length=1,
        description="ONNX Runtime execution providers in order of preference (JSON list), e.g."
        ' ["CUDAExecutionProvider", "CPUExecutionProvider"] with onnxruntime-gpu installed.',
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    drain_timeout_s: float = Field(30, gt=0, description="Longest wait for queued work on shutdown.")
    batching: BatchingSettings = Field(default_factory=BatchingSettings)
    admission: AdmissionSettings = Field(default_factory=AdmissionSettings)
    deadlines: DeadlineSettings = Field(default_factory=DeadlineSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.admission.max_queue_tokens < self.batching.max_batch_tokens:
            raise ValueError("admission.max_queue_tokens must hold at least one full batch")
        wrong = {m: n for m, n in self.metric_instances.items() if not 1 <= n <= 64}
        if wrong:
            raise ValueError(f"metric_instances must be between 1 and 64: {wrong}")
        check_providers(self.execution_providers)  # a GPU setting on a CPU-only build fails here, clearly
        return self

    def instances_of(self, metric: str) -> int:
        """Instances that take every traffic class (those kept for guardrail come on top)."""
        return self.metric_instances.get(metric, self.instances)

    def all_instances_of(self, metric: str) -> int:
        """Every instance of `metric`: those for every class and those kept for guardrail."""
        return self.instances_of(metric) + self.guardrail_instances

    def threads_per_instance(self, metric: str) -> int:
        """intra_op_threads if set, else this process's usable CPUs shared among all the
        metric's instances (those kept for guardrail included)."""
        if self.intra_op_threads:
            return self.intra_op_threads
        return max(1, usable_cpus() // self.all_instances_of(metric))

    def instances_share_cores(self, metric: str) -> bool:
        """Whether the metric's instances' threads outnumber the usable CPUs."""
        return self.all_instances_of(metric) * self.threads_per_instance(metric) > usable_cpus()

    def non_default(self) -> dict[str, object]:
        """Settings that differ from their defaults, secrets redacted: logged at startup."""
        return self.model_dump(mode="json", exclude_defaults=True)
