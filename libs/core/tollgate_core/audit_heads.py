"""Payload of ``audit.checkpoints``: the audit-log's signed tree heads, published outside its database.

Each checkpoint of an audit stream signs the RFC 6962 root of the whole stream so far (``tree_root`` over
``tree_size`` rows), the root of its own range of rows (``merkle_root``, what a receipt's audit path leads
to) and the previous head (``prev_root``, ``prev_statement``), and carries the consistency proof from the
previous head. Anyone holding these events and the signer's public key can check that the trail only ever
grew, and a verifier compares the database with them: rows or checkpoints deleted, a truncated tail and
rewritten history show. The topic keeps every head forever (``retention.ms = -1``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tollgate_core.events import Envelope

HASH = r"^[0-9a-f]{64}$"


class TreeHeadPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["tollgate-audit-checkpoint/2"] = Field(description="What was signed, and how.")
    stream: str = Field(min_length=1, max_length=128, description="The audit stream (one hash chain).")
    first_seq: int = Field(ge=1, description="First row this checkpoint seals.")
    last_seq: int = Field(ge=1, description="Last row it seals; the tree size.")
    merkle_root: str = Field(pattern=HASH, description="RFC 6962 root over the rows first_seq..last_seq.")
    head_hash: str = Field(pattern=HASH, description="Row hash of the row last_seq (the chain's head).")
    tree_size: int = Field(ge=1, description="Rows in the stream's tree: last_seq.")
    tree_root: str = Field(pattern=HASH, description="RFC 6962 root over the rows 1..last_seq.")
    prev_root: str = Field(pattern=HASH, description="Tree root of the previous head (sha256('') first).")
    prev_statement: str = Field(pattern=HASH, description="sha256 of the previous head's signed statement.")
    created_at_us: int = Field(description="When it was signed, microseconds since the epoch.")
    key_id: str = Field(min_length=1, max_length=64, description="The signing key (sha256 of it, 16 hex).")
    signature: str = Field(pattern=r"^[0-9a-f]{128}$", description="Ed25519 over the canonical statement.")
    consistency: list[str] = Field(
        default_factory=list, max_length=128, description="RFC 6962 consistency proof from the previous head."
    )


class TreeHeadEvent(Envelope[TreeHeadPayload]):
    """``audit.checkpoints.v1``."""
