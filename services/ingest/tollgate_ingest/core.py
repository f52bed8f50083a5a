"""Ingest's domain: turn raw message bytes into an ingested event, or say precisely why not.

No Kafka, HTTP or database here. The fast path parses with orjson and checks the envelope by hand (a pydantic
model per event would cost more than the rest of the stage); tests hold its output to the ``IngestedEvent``
model, so the two cannot drift apart.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from tollgate_core.contracts import ContractRegistry
from tollgate_core.events import SCHEMA_ID_PATTERN

REQUIRED = ("event_id", "event_type", "schema", "occurred_at", "producer", "payload")
ALLOWED = frozenset((*REQUIRED, "ingested_at"))
_REQUIRED_SET = frozenset(REQUIRED)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
_SCHEMA_ID = re.compile(SCHEMA_ID_PATTERN)
MAX_TEXT = 128


class Malformed(ValueError):
    """The message cannot become an event; the text says exactly why (it goes into the DLQ headers)."""


@dataclass(slots=True)
class Ingested:
    event_id: str  # canonical lower-case hyphenated UUID
    key: bytes | None
    document: dict[str, Any]

    def encode(self) -> bytes:
        return orjson.dumps(self.document)


def _timestamp(value: Any, field: str) -> str:
    if isinstance(value, bool):
        raise Malformed(f"{field} must be an ISO 8601 timestamp with a UTC offset or epoch milliseconds")
    if isinstance(value, int | float):
        # Epoch milliseconds (producers in other languages commonly send these).
        try:
            moment = datetime.fromtimestamp(value / 1000.0, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise Malformed(f"{field} {value!r} is out of range") from None
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise Malformed(f"{field} {value[:64]!r} is not an ISO 8601 timestamp") from None
        if value[-1:] == "Z" and moment.tzinfo is not None:
            return value  # already UTC in the canonical form
        if moment.tzinfo is None:
            raise Malformed(f"{field} {value[:64]!r} has no UTC offset; it would be ambiguous")
    else:
        raise Malformed(f"{field} must be an ISO 8601 timestamp with a UTC offset or epoch milliseconds")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _text(doc: dict[str, Any], field: str) -> str:
    value = doc[field]
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise Malformed(f"{field} must be a non-empty string of at most {MAX_TEXT} characters")
    return value


class Normaliser:
    """Checks and normalises raw events against the envelope and the known dataset contracts."""

    def __init__(self, contracts: ContractRegistry) -> None:
        self._contracts = contracts
        self._entity_field = {c.schema_id: c.entity_id.name for c in contracts}

    def refresh(self) -> None:
        """Take in contracts registered live since (new versions, or changed ones)."""
        self._entity_field = {c.schema_id: c.entity_id.name for c in self._contracts}

    def normalise(self, raw: bytes | None, key: bytes | None, ingested_at: str) -> Ingested:
        if not raw:
            raise Malformed("empty message")
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise Malformed(f"not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise Malformed(f"an event is a JSON object, got {type(doc).__name__}")
        return self.normalise_document(doc, key, ingested_at)

    def normalise_document(self, doc: dict[str, Any], key: bytes | None, ingested_at: str) -> Ingested:
        fields = doc.keys()
        if not fields >= _REQUIRED_SET:
            missing = [f for f in REQUIRED if f not in doc]
            raise Malformed(f"missing envelope field(s): {', '.join(missing)}")
        if not fields <= ALLOWED:
            raise Malformed(f"unknown envelope field(s): {', '.join(sorted(set(fields) - ALLOWED)[:10])}")
        raw_id = doc["event_id"]
        if not isinstance(raw_id, str) or not _UUID.match(raw_id):
            raise Malformed(f"event_id {str(raw_id)[:64]!r} is not a UUID")
        event_id = raw_id.lower() if len(raw_id) == 36 else str(uuid.UUID(raw_id))
        schema_id = doc["schema"]
        entity_field = self._entity_field.get(schema_id) if isinstance(schema_id, str) else None
        if entity_field is None:
            schema_id = _text(doc, "schema")
            if not _SCHEMA_ID.match(schema_id):
                raise Malformed(f"schema {schema_id!r} must look like <name>.v<N>")
            raise Malformed(f"unknown schema {schema_id!r}: no dataset contract has that name and version")
        payload = doc["payload"]
        if not isinstance(payload, dict):
            raise Malformed("payload must be a JSON object")
        entity = payload.get(entity_field)
        out = {
            "event_id": event_id,
            "event_type": _text(doc, "event_type"),
            "schema": schema_id,
            "occurred_at": _timestamp(doc["occurred_at"], "occurred_at"),
            "producer": _text(doc, "producer"),
            "payload": payload,
            "ingested_at": ingested_at,
        }
        if entity is not None and not isinstance(entity, dict | list):
            key = str(entity).encode()
        return Ingested(event_id, key, out)
