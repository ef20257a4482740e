"""Request and response bodies of the HTTP API (pydantic models only).

Field names are a contract: clients and the load tests depend on them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

TrafficClassName = Literal["guardrail", "observability"]


class ScoreItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: str | None = Field(None, description="The user's query, when there is one.")
    output: str | None = Field(None, description="The LLM response being judged.")
    context: str | None = Field(None, description="The context the response should keep to.")

    @field_validator("input", "output", "context")
    @classmethod
    def _encodable(cls, value: str | None) -> str | None:
        """JSON may carry lone surrogates (\\ud800) that no tokenizer can take: refuse them here."""
        if value is not None:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"not valid Unicode text at character {exc.start}") from None
        return value


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[ScoreItem] = Field(min_length=1, description="Items scored in one call, answered in order.")
    traffic_class: TrafficClassName | None = Field(
        None,
        description="guardrail goes first, shed last; default: per API key, else the metric use case.",
    )
    timeout_ms: float | None = Field(
        None,
        ge=10,
        description="Deadline from arrival, in milliseconds (at least 10: less cannot cross the server);"
        " default per traffic class.",
    )


class MultiScoreRequest(ScoreRequest):
    metrics: list[str] = Field(
        min_length=1,
        max_length=32,
        description="Metrics to score the items with, each named once.",
        json_schema_extra={"uniqueItems": True},
    )

    @field_validator("metrics")
    @classmethod
    def _each_once(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a metric is named twice")
        return value


class ItemResult(BaseModel):
    score: float = Field(description="Probability of the metric's positive ('good') label.")
    label: str
    passed: bool = Field(description="score >= the metric's threshold.")
    windows: int = Field(description="Context windows the item was scored in.")
    truncated_tokens: int = Field(description="Context tokens that no window saw.")


class ScoreResponse(BaseModel):
    metric: str
    version: str
    results: list[ItemResult]


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


class MetricOutcome(BaseModel):
    metric: str
    status: Literal["ok", "deadline_exceeded", "rejected", "failed", "invalid", "not_found"]
    version: str | None = None
    results: list[ItemResult] | None = None
    problem: Problem | None = None


class MultiScoreResponse(BaseModel):
    outcomes: list[MetricOutcome]


class MetricSummary(BaseModel):
    name: str
    active_version: str | None
    versions: list[str]
    use_case: str | None = None
    description: str | None = None


class MetricList(BaseModel):
    metrics: list[MetricSummary]


class BatchCalibrationInfo(BaseModel):
    tokens: int = Field(description="Tokens per row of the timed batches.")
    min_gain: float = Field(description="Throughput gain a step up in rows had to add to be taken.")
    rows_per_s: dict[str, float] = Field(description="Measured rows per second, by rows per batch.")


class BatchingInfo(BaseModel):
    max_batch_rows: int = Field(description="Row cap of a batch: calibrated at load unless configured off.")
    max_batch_tokens: int = Field(description="Token budget of a batch (padded length x rows).")
    calibration: BatchCalibrationInfo | None = Field(
        None, description="The timing that chose max_batch_rows; null when calibration is off."
    )
    instances: int = Field(description="Model instances taking batches from this metric's queue.")
    guardrail_instances: int = Field(
        0, description="Of those, the instances kept for guardrail traffic (setting guardrail_instances)."
    )
    guardrail_spills: bool = Field(
        True,
        description="Whether the other instances take guardrail work while every kept one is busy: only"
        " where no two instances share a core.",
    )
    intra_op_threads: int = Field(description="ONNX Runtime threads of each instance.")
    execution_providers: list[str] = Field(description="ONNX Runtime providers the sessions use, in order.")


class MetricDetail(MetricSummary):
    spec: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None
    quality: dict[str, Any] | None = None
    evidence: dict[str, Any] | None = None
    files: dict[str, Any] | None = Field(None, description="sha256 and size of each artifact file served.")
    batching: BatchingInfo | None = Field(
        None, description="Batch limits of the serving version and the calibration that chose its row cap."
    )


class ActivateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str = Field(min_length=1, max_length=32)


class ReloadResponse(BaseModel):
    metrics: list[MetricSummary]
    problems: list[str]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)
