"""The metric spec: what a metric judges and how its inputs become the model's text pair.

The spec is written by a metric's owner as YAML, validated here, and copied into every
artifact's manifest, so the server and the offline toolkit read the same rules.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"


class InputField(StrEnum):
    """The fields a client may send with an item."""

    INPUT = "input"
    OUTPUT = "output"
    CONTEXT = "context"


class LongInputMode(StrEnum):
    """What to do when an item's tokens exceed the metric's max tokens.

    The policy cuts the second segment of the text pair (the context) and never the first
    (the response and query); a metric with one segment cuts that one.
    """

    TRUNCATE_HEAD = "truncate_head"  # drop the start of the cut segment, keep its end
    TRUNCATE_TAIL = "truncate_tail"  # drop the end of the cut segment, keep its start
    WINDOW = "window"  # score overlapping windows of the cut segment and aggregate
    REJECT = "reject"  # refuse the item


class WindowAggregation(StrEnum):
    """How window scores become the item's score (scores are of the positive label)."""

    MAX = "max"  # good if some window is good (Luna: supported by some part of the context)
    MIN = "min"  # good only if every window is good (e.g. toxicity anywhere is bad)
    MEAN = "mean"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LongInputPolicy(_Strict):
    mode: LongInputMode = Field(LongInputMode.WINDOW, description="Policy for long inputs.")
    window_overlap_tokens: int = Field(
        64, ge=0, le=1024, description="Tokens two neighbouring windows share."
    )
    max_windows: int = Field(
        8, ge=1, le=64, description="Windows at most; context beyond them is cut and counted."
    )
    aggregation: WindowAggregation = Field(
        WindowAggregation.MAX, description="How window scores combine into one."
    )


class ClaimPolicy(_Strict):
    """Score the response claim by claim: each sentence against every window, the weakest decides.

    A faithful summary spreads its claims over a long document, so no single window supports it
    whole; scored sentence by sentence, each claim finds its own best window. The item's score
    is its weakest claim's, since one unsupported claim makes the response unfaithful.
    """

    field: InputField = Field(InputField.OUTPUT, description="The field split into claims (sentences).")
    max_claims: int = Field(
        8, ge=1, le=32, description="Claims at most; the last one holds the rest of the response."
    )
    min_claim_words: int = Field(
        3, ge=1, le=64, description="A shorter sentence joins its neighbour (e.g. 'Yes.', 'Dr.')."
    )


class TextPair(_Strict):
    """Which item fields form the model's first and second segment, joined by a newline."""

    first: list[InputField] = Field(min_length=1, description="Never cut: response, query.")
    second: list[InputField] = Field(
        default_factory=list, description="Cut by the long-input policy: the context."
    )

    @model_validator(mode="after")
    def _disjoint(self) -> TextPair:
        both = set(self.first) & set(self.second)
        if both:
            raise ValueError(f"fields {sorted(both)} appear in both segments")
        if len(set(self.first)) != len(self.first) or len(set(self.second)) != len(self.second):
            raise ValueError("a field is listed twice in one segment")
        return self


class ParityBounds(_Strict):
    """What an exported artifact must keep of its reference model to be published."""

    min_decision_agreement: float = Field(0.99, gt=0, le=1)
    max_f1_drop: float = Field(0.01, ge=0, le=1)
    max_batch_score_delta: float = Field(
        0.005, ge=0, le=1, description="Largest score change alone vs inside mixed batches."
    )


class MetricSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="Metric name, used in URLs.")
    version: str = Field(pattern=VERSION_PATTERN, description="Version, a folder name.")
    description: str = Field(min_length=1, description="What the metric judges.")
    labels: list[str] = Field(min_length=2, description="Class names in model output order.")
    positive_label: str = Field(description="The 'good' label whose probability is the score.")
    activation: Literal["softmax", "sigmoid"] = "softmax"
    threshold: float = Field(0.5, gt=0, lt=1, description="score >= threshold passes.")
    required_fields: list[InputField] = Field(min_length=1)
    text_pair: TextPair
    max_tokens: int = Field(512, ge=16, le=8192, description="Model window incl. specials.")
    long_input: LongInputPolicy = Field(default_factory=LongInputPolicy)
    claims: ClaimPolicy | None = Field(
        None, description="Score the response sentence by sentence; absent: the response whole."
    )
    use_case: Literal["guardrail", "observability"] = "observability"
    constraints: str = ""
    parity: ParityBounds = Field(default_factory=ParityBounds)

    @model_validator(mode="after")
    def _consistent(self) -> MetricSpec:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        if self.positive_label not in self.labels:
            raise ValueError(f"positive_label {self.positive_label!r} is not one of {self.labels}")
        used = set(self.text_pair.first) | set(self.text_pair.second)
        missing = set(self.required_fields) - used
        if missing:
            raise ValueError(f"required fields {sorted(missing)} are not in text_pair")
        if self.claims is not None and self.claims.field not in self.text_pair.first:
            raise ValueError(
                f"claims.field {self.claims.field.value!r} must be in text_pair.first (never cut)"
            )
        return self

    @property
    def positive_index(self) -> int:
        return self.labels.index(self.positive_label)

    @property
    def fields(self) -> list[InputField]:
        return [*self.text_pair.first, *self.text_pair.second]


class SpecError(ValueError):
    """A spec file that cannot be read or does not validate; the message names the file."""


def load_spec(path: Path) -> MetricSpec:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SpecError(f"{path}: cannot read metric spec: {exc}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a metric spec must be a YAML mapping")
    try:
        return MetricSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(spec)'}: {err['msg']}" for err in exc.errors()
        )
        raise SpecError(f"{path}: invalid metric spec: {problems}") from None
