"""Payload of ``models.submissions``: every attempt to submit a model built outside the platform, refused or
accepted, with who made it.

The trainer records one event per attempt at ``POST /v1/models/{model}/submissions`` through its
transactional outbox, before it answers, and the audit-log records the topic (stream ``submissions``).
``principal`` and ``roles`` are those of the authenticated API key, never a field of the request; a body
refused before it was parsed (over the size limit) still names them. Files are named by their sha256 and
size, never carried.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tollgate_core.events import Envelope

MAX_PROBLEMS = 100  # reasons kept per attempt; the answer itself says how many there were
MAX_PROBLEM_CHARS = 2000


class SubmissionProblem(BaseModel):
    """One reason an attempt was refused, as the answer gave it."""

    model_config = ConfigDict(extra="forbid")

    field: str | None = Field(
        None, max_length=64, description="The form field it concerns (onnx, sklearn, notes, parameters ...)."
    )
    message: str = Field(max_length=MAX_PROBLEM_CHARS)


class SubmittedFile(BaseModel):
    """An uploaded file as the trainer read it: its digest and size, never its bytes."""

    model_config = ConfigDict(extra="forbid")

    field: Literal["onnx", "sklearn"]
    sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="Of the whole file; null when it was refused before it was read whole (over the limit).",
    )
    size_bytes: int = Field(ge=0, description="Bytes read (the limit + 1 when it was over the limit).")


class SubmissionAttemptPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(max_length=256, description="The model named in the path.")
    outcome: Literal["accepted", "refused"]
    status: int = Field(ge=100, le=599, description="The HTTP status the attempt was answered with.")
    principal: str = Field(min_length=1, max_length=256, description="The authenticated principal.")
    roles: list[str] = Field(description="The principal's roles.")
    reasons: list[SubmissionProblem] = Field(
        default_factory=list, max_length=MAX_PROBLEMS, description="Refused: every problem named."
    )
    files: list[SubmittedFile] = Field(
        default_factory=list,
        description="The files the trainer read (none when the attempt was refused before it read them).",
    )
    body_bytes: int | None = Field(
        None, ge=0, description="Size of the request body: as declared, else as received."
    )
    received_at: datetime = Field(description="When the attempt arrived.")
    submission_id: str | None = Field(None, description="Accepted: the submission's id.")
    version: str | None = Field(None, description="Accepted: the candidate version it became.")


class SubmissionAttemptEvent(Envelope[SubmissionAttemptPayload]):
    """``models.submissions.v1``."""
