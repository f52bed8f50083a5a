"""Event models: the envelope every message carries, and the payloads of the data topics.

These pydantic models are the single source of the topics' JSON Schemas (``make generate`` writes them to
``schemas/topics/<topic>/v<N>.schema.json``; CI fails when the committed copy drifts).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

P = TypeVar("P")

SCHEMA_ID_PATTERN = r"^[a-z][a-z0-9.-]*\.v[1-9][0-9]*$"


def utcnow() -> datetime:
    return datetime.now(UTC)


def now_iso() -> str:
    """Current UTC time as ISO 8601 with a ``Z`` suffix, the form every timestamp takes on the wire."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Envelope(BaseModel, Generic[P]):
    """What every message on every topic carries around its payload."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", serialize_by_alias=True)

    event_id: uuid.UUID = Field(description="Idempotency key: redelivered copies share it.")
    event_type: str = Field(min_length=1, max_length=128, description="What happened, e.g. observation.")
    schema_: str = Field(
        alias="schema",
        pattern=SCHEMA_ID_PATTERN,
        description="Name and version of the payload's schema, e.g. credit-default.v1 or models.lifecycle.v1.",
    )
    occurred_at: AwareDatetime = Field(description="When it happened at the producer (UTC offset required).")
    producer: str = Field(min_length=1, max_length=128, description="Who produced it.")
    payload: P


class DataEvent(Envelope[dict[str, Any]]):
    """A record of a data set as producers send it (``events.raw``); ``schema`` names its dataset contract."""


class IngestedEvent(DataEvent):
    """A raw event accepted by ingest: envelope checked, timestamps normalised to UTC, first of its event_id."""

    ingested_at: AwareDatetime = Field(description="When ingest accepted it.")


class Violation(BaseModel):
    """One failed rule of a dataset contract."""

    model_config = ConfigDict(extra="forbid")

    field: str
    rule: Literal["required", "type", "minimum", "maximum", "category", "nullable", "unknown_field"]
    message: str
    value: Any = None


class QualityFlag(BaseModel):
    """A value the contract allows but the training distribution makes suspicious."""

    model_config = ConfigDict(extra="forbid")

    field: str
    check: Literal["outside_training_range", "unseen_category"]
    value: Any
    expected: str = Field(description="What training data looked like, e.g. '[0.0, 2654.3]'.")


class ValidatedEvent(IngestedEvent):
    """An ingested event that satisfies its dataset contract."""

    validated_at: AwareDatetime
    entity_id: str = Field(description="Value of the contract's entity-id field (the message key).")
    labeled: bool = Field(description="Whether the label field is present and not null.")
    quality_flags: list[QualityFlag] = Field(default_factory=list)


class RejectedEvent(IngestedEvent):
    """An ingested event that breaks its dataset contract, with every failed rule."""

    rejected_at: AwareDatetime
    violations: list[Violation] = Field(
        min_length=1, description="The failed rules, at most the validator's limit (100 by default)."
    )
    violations_omitted: int = Field(
        0, ge=0, description="How many more rules failed than are listed (the record's size is bounded)."
    )


def dumps(model: BaseModel) -> bytes:
    """Serialise a model to compact JSON bytes (by alias, so the envelope says ``schema``)."""
    return orjson.dumps(model.model_dump(mode="json", by_alias=True))
