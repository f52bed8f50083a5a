"""Payload of ``operations``: what an operator did to the running platform (today: DLQ redrives).

The audit-log records this topic like any other audited stream, so an operator's action has the same
hash-chained, signed record as a model promotion. ``actor`` is the authenticated principal of the request
that did it, never a field the caller chose.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tollgate_core.events import Envelope

MAX_RECORDS = 10_000


class RedrivenRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dlq_partition: int = Field(ge=0)
    dlq_offset: int = Field(ge=0)
    source_topic: str = Field(description="Topic the record was sent back to (where it first failed).")
    source_partition: int | None = Field(None, description="Partition it failed on, when the DLQ said.")
    source_offset: int | None = Field(None, description="Offset it failed at, when the DLQ said.")
    attempt: int = Field(ge=2, description="The attempt the redriven copy is: 2 after the first failure.")
    error_type: str | None = Field(None, description="Why it was dead-lettered (the error class).")


class OperationPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str = Field(pattern="^dlq[.]redrive$", description="What was done: dlq.redrive.")
    actor: str = Field(min_length=1, max_length=256, description="The authenticated principal.")
    actor_role: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=1000, description="Why, as the operator gave it.")
    service: str = Field(description="Whose DLQ.")
    dlq_topic: str
    records: list[RedrivenRecord] = Field(max_length=MAX_RECORDS)


class OperationEvent(Envelope[OperationPayload]):
    """``operations.v1``."""
