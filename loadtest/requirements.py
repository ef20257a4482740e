"""The metric owner's statement of load and latency, as a validated YAML file.

One file per metric and use case: the QPS and input tokens at average and at peak load, the
latency budget for each, the error ratio allowed, how long each stage of the test runs, and
optionally the hourly price of one replica. Invalid files fail with one message that names the
file and every faulty field (`latency_ms.peak.p99: ...`), never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.runtime.spec import NAME_PATTERN


class RequirementsError(ValueError):
    """A requirements file that cannot be read or does not validate; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoadPoint(_Strict):
    """Traffic at one load level."""

    qps: float = Field(gt=0, le=100_000, description="Requests per second the metric must take.")
    input_tokens: int = Field(
        ge=4, le=65_536, description="Tokens of one item (query + response + context, with specials)."
    )


class TokenDistribution(_Strict):
    """How item sizes spread around each load level's `input_tokens` (its mean)."""

    kind: Literal["fixed", "lognormal"] = Field(
        "fixed", description="fixed: every item has the stated size; lognormal: sizes spread around it."
    )
    sigma: float = Field(0.5, gt=0, le=2, description="lognormal: spread of log(size).")
    min_tokens: int = Field(16, ge=4, description="Smallest item drawn.")
    max_tokens: int = Field(4096, ge=4, le=65_536, description="Largest item drawn.")

    @model_validator(mode="after")
    def _ordered(self) -> TokenDistribution:
        if self.min_tokens > self.max_tokens:
            raise ValueError("min_tokens must not exceed max_tokens")
        return self


class Load(_Strict):
    average: LoadPoint
    peak: LoadPoint
    distribution: TokenDistribution = Field(default_factory=TokenDistribution)
    arrivals: Literal["poisson", "constant"] = Field(
        "poisson",
        description="poisson: independent arrivals (bursty, like real traffic); constant: evenly spaced.",
    )

    @model_validator(mode="after")
    def _peak_at_least_average(self) -> Load:
        if self.peak.qps < self.average.qps:
            raise ValueError(f"peak.qps ({self.peak.qps:g}) is below average.qps ({self.average.qps:g})")
        return self


class LatencyBudget(_Strict):
    """Largest acceptable latency percentiles, in milliseconds, measured at the client."""

    p50: float = Field(gt=0, le=600_000)
    p95: float = Field(gt=0, le=600_000)
    p99: float = Field(gt=0, le=600_000)

    @model_validator(mode="after")
    def _monotone(self) -> LatencyBudget:
        if not self.p50 <= self.p95 <= self.p99:
            raise ValueError(
                f"budgets must satisfy p50 <= p95 <= p99 (got {self.p50}, {self.p95}, {self.p99})"
            )
        return self


class Latency(_Strict):
    average: LatencyBudget
    peak: LatencyBudget


class Stages(_Strict):
    """Seconds per stage: warm-up (not judged), average, peak, and recovery back at average."""

    warmup_s: float = Field(10, ge=0, le=3600)
    average_s: float = Field(60, gt=0, le=86_400)
    peak_s: float = Field(60, gt=0, le=86_400)
    recovery_s: float = Field(30, gt=0, le=86_400)
    settle_s: float = Field(
        1.0, ge=0, le=600, description="Start of each judged stage left out while users are spawned."
    )

    @model_validator(mode="after")
    def _settle_fits(self) -> Stages:
        shortest = min(self.average_s, self.peak_s, self.recovery_s)
        if self.settle_s >= shortest / 2:
            raise ValueError(
                f"settle_s ({self.settle_s:g}) must be under half the shortest stage ({shortest:g})"
            )
        return self


class RequestShape(_Strict):
    """What one request looks like on the wire."""

    items_per_request: int = Field(1, ge=1, le=256, description="Items per POST (evaluations per request).")
    traffic_class: Literal["guardrail", "observability"] | None = Field(
        None, description="Sent as traffic_class; default: the use case."
    )
    timeout_ms: float | None = Field(None, gt=0, description="Sent as timeout_ms; default: the server's.")


class CapacitySearch(_Strict):
    """The step search for the highest QPS that stays within the peak latency budget."""

    enabled: bool = True
    step_s: float = Field(
        30,
        gt=0,
        le=3600,
        description="Seconds judged per step: a p99 over fewer than ~500 answers swings widely near"
        " capacity, so short steps pass rates that a longer stage at the same rate fails.",
    )
    warmup_s: float = Field(2, ge=0, le=600, description="Unjudged seconds before each step.")
    growth: float = Field(1.5, gt=1, le=10, description="Rate multiplier while steps pass.")
    resolution: float = Field(
        0.1, gt=0, lt=1, description="Stop bisecting when the gap is below this share of the rate."
    )
    max_steps: int = Field(10, ge=1, le=50, description="Steps at most (each one is a load run).")
    max_qps: float | None = Field(None, gt=0, description="Do not probe above this rate.")
    min_headroom: float = Field(
        1.0, gt=0, le=100, description="Sustainable QPS must be at least this multiple of peak QPS."
    )


class Quality(_Strict):
    """What the served model must keep of the figures in its manifest."""

    max_drift: float = Field(
        0.02, ge=0, le=1, description="Largest drop of ROC-AUC / macro-F1 / accuracy below the manifest's."
    )
    reference: str | None = Field(
        None, description="Name of the manifest quality record to compare with (default: by file name)."
    )
    min_roc_auc: float | None = Field(None, ge=0, le=1)
    min_macro_f1: float | None = Field(None, ge=0, le=1)


class Cost(_Strict):
    replica_hourly_usd: float = Field(gt=0, le=100_000, description="Price of one replica for one hour.")


class Requirements(_Strict):
    metric: str = Field(pattern=NAME_PATTERN, description="The metric's name, as served.")
    use_case: Literal["guardrail", "observability"]
    load: Load
    latency_ms: Latency
    max_error_ratio: float = Field(
        0.001, ge=0, le=1, description="Failed requests (any non-200, timeouts) over all sent, per stage."
    )
    min_achieved_ratio: float = Field(
        0.95, gt=0, le=1, description="Achieved QPS must reach this share of the stage's target."
    )
    stages: Stages = Field(default_factory=Stages)
    request: RequestShape = Field(default_factory=RequestShape)
    capacity: CapacitySearch = Field(default_factory=CapacitySearch)
    quality: Quality = Field(default_factory=Quality)
    cost: Cost | None = None
    constraints: str = Field("", description="Anything else (hardware, memory, residency), recorded.")
    seed: int = Field(0, description="Seed of payload choice and arrival times.")

    @property
    def traffic_class(self) -> str:
        return self.request.traffic_class or self.use_case


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(file)"


def parse_requirements(raw: object, source: str = "requirements") -> Requirements:
    if not isinstance(raw, dict):
        raise RequirementsError(f"{source}: a requirements file must be a YAML mapping")
    try:
        return Requirements.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{_location(err['loc'])}: {err['msg']}" for err in exc.errors())
        raise RequirementsError(f"{source}: invalid requirements: {problems}") from None


def load_requirements(path: Path) -> Requirements:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RequirementsError(f"{path}: no such requirements file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RequirementsError(f"{path}: cannot read requirements: {exc}") from None
    return parse_requirements(raw, str(path))
