"""Payloads of the scoring topics: ``scoring.requests``, ``scoring.results`` and ``inference.log``.

Clients that speak Kafka send one instance per ``scoring.requests`` event and get one ``scoring.results``
event back, keyed like the request (the entity id), carrying the request's ``event_id`` as ``request_id``.
Every inference the scorer makes, over HTTP, the Open Inference Protocol or Kafka, as champion, canary or
shadow, is one ``inference.log`` event, with personal data hashed, masked or dropped as the dataset contract
says; the monitor and the audit trail read it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tollgate_core.events import Envelope


class Route(StrEnum):
    """Which version answered and why; recorded with every inference."""

    CHAMPION = "champion"  # the production version
    CANARY = "canary"  # the staging version, for a sticky share of entities
    SHADOW = "shadow"  # the staging version as well, logged and never returned
    DIRECT = "direct"  # a version the client named explicitly (OIP ``/versions/{v}``)


class Channel(StrEnum):
    HTTP = "http"
    OIP = "oip"
    KAFKA = "kafka"


Prediction = bool | int | float | str

FieldRule = Literal[
    "required", "type", "minimum", "maximum", "category", "nullable", "unknown_field", "label_field"
]


class FieldError(BaseModel):
    """One broken rule of the dataset contract in one instance."""

    model_config = ConfigDict(extra="forbid")

    field: str
    rule: FieldRule
    message: str
    value: Any = None
    instance: int | None = Field(None, ge=0, description="Position of the instance in a batch request.")


class ScoringError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: Literal["invalid_instance", "invalid_request", "unknown_model", "no_version", "unavailable"]
    message: str
    violations: list[FieldError] = Field(default_factory=list)


class ScoringRequestPayload(BaseModel):
    """One instance to score with the version(s) of ``model`` that serve now."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Model name, e.g. credit-default-risk.")
    instance: dict[str, Any] = Field(
        description="Feature name to value, as the model's dataset contract types them; may also carry the "
        "contract's entity id (for sticky canary routing) and attributes (logged, PII protected)."
    )
    explain: bool = Field(
        False,
        description="Return the decision's explanation in the result (every feature's attribution, as the "
        "HTTP API's explain: true answers it).",
    )


class FeatureAttribution(BaseModel):
    """One feature's share of a decision: its value in the request and its contribution to the output."""

    model_config = ConfigDict(extra="forbid")

    feature: str
    value: float | str | None = Field(
        description="The instance's value as the model read it (null: missing)."
    )
    contribution: float = Field(description="Its share of value - baseline.")


class DecisionExplanation(BaseModel):
    """Every feature's attribution of one decision (the HTTP API's ``explanation``)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["linear", "sampled_shapley"] = Field(
        description="linear: exact coefficient x (x - training mean) on the model's preprocessed input, "
        "summed per feature; sampled_shapley: Shapley values against the training reference point, by "
        "permutation sampling with a fixed budget and seed."
    )
    output: Literal["log_odds", "margin", "probability", "prediction"] = Field(
        description="What value and baseline measure."
    )
    baseline: float = Field(description="The output at the training reference.")
    value: float = Field(description="The output for this instance; contributions sum to value - baseline.")
    attributions: list[FeatureAttribution] = Field(description="One per feature, in the model's input order.")


class ScoringResultPayload(BaseModel):
    """The answer to one scoring request: its outputs, or why there are none."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(description="event_id of the scoring request.")
    model: str
    status: Literal["ok", "error"]
    version: str | None = Field(None, description="Version that answered.")
    route: Route | None = None
    entity_id: str | None = None
    prediction: Prediction | None = Field(
        None, description="Class label (classification) or value (regression)."
    )
    score: float | None = Field(
        None,
        description="Probability of the positive class (binary) or of the predicted class (multi-class).",
    )
    probabilities: dict[str, float] | None = Field(
        None, description="Class label (as JSON text) to probability."
    )
    error: ScoringError | None = None
    threshold: float | None = Field(
        None,
        description="Binary classifiers: the positive-class probability from which the prediction is "
        "positive (the version's decision threshold, or 0.5).",
    )
    explanation: DecisionExplanation | None = Field(
        None, description="When the request asked (explain) and the version can be explained."
    )
    explanation_error: str | None = Field(
        None, description="When the request asked but this version cannot be explained: why."
    )


class InferenceOutputs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prediction: Prediction
    score: float | None = None
    probabilities: dict[str, float] | None = None
    threshold: float | None = Field(
        None, description="Binary classifiers: the decision threshold the prediction was made with."
    )


class ReasonCode(BaseModel):
    """One feature's contribution to a decision (its value is in the inference's inputs, PII protected)."""

    model_config = ConfigDict(extra="forbid")

    feature: str
    contribution: float


class InferenceExplanation(BaseModel):
    """The top reason codes of one decision, as the model's catalog entry asks (``explanations.top_k``)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["linear", "sampled_shapley"] = Field(
        description="linear: exact coefficient x (x - training mean); sampled_shapley: Shapley values "
        "against the training reference point, by permutation sampling."
    )
    output: Literal["log_odds", "margin", "probability", "prediction"] = Field(
        description="What value and baseline are: the contributions sum to value - baseline."
    )
    baseline: float = Field(description="The output at the training reference.")
    value: float = Field(description="The output for this instance.")
    reasons: list[ReasonCode] = Field(description="The largest contributions by magnitude, largest first.")


class InferenceLogPayload(BaseModel):
    """One inference: what went in (PII protected), what came out, which version and route, how long."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(description="Shared by the champion/canary inference and the shadow one.")
    model: str
    version: str
    route: Route
    channel: Channel
    contract: str = Field(description="Dataset contract schema id the inputs follow.")
    entity_id: str | None = Field(
        None, description="Entity id, hashed/masked when the contract marks it PII."
    )
    inputs: dict[str, Any] = Field(description="The instance as received, PII hashed, masked or dropped.")
    outputs: InferenceOutputs
    latency_ms: float = Field(ge=0, description="Scoring time of the request inside the scorer.")
    trace_id: str | None = Field(None, pattern=r"^[0-9a-f]{32}$", description="W3C trace id, when traced.")
    explanation: InferenceExplanation | None = Field(
        None, description="Reason codes, when the model's catalog entry asks for them (explanations)."
    )


class ScoringRequestEvent(Envelope[ScoringRequestPayload]):
    """``scoring.requests.v1``."""


class ScoringResultEvent(Envelope[ScoringResultPayload]):
    """``scoring.results.v1``."""


class InferenceLogEvent(Envelope[InferenceLogPayload]):
    """``inference.log.v1``."""
