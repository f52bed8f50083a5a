"""Tampering found by the writer: what is recorded, where, and how an auditor acknowledges it.

The writer holds its stream's lock, so the chain in the table can only move the way the writer moves it.
Anything else (rows appended by someone else, the writer's rows changed or removed) is tampering, never a
lost lock to recover from: the stream is marked damaged in ``audit_stream_damage``, a row saying so goes
into the stream itself, an alert goes to ``monitor.alerts``, and no checkpoint is signed on the stream
until an auditor acknowledges every damage record of it (``POST /v1/audit/streams/{stream}/acknowledge``).
The acknowledgement goes into the stream too, naming the auditor, before signing resumes.

Nothing recorded here quotes a row's content: seqs, hashes and the kind of damage only.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from tollgate_audit_log import SERVICE
from tollgate_audit_log.canonical import Entry, canonical_json
from tollgate_audit_log.chain import ChainTampered
from tollgate_core.alerts import AlertEvent, AlertKind, AlertPayload, AlertState

DAMAGE_EVENT = "audit.chain_tampered"
ACK_EVENT = "audit.damage_acknowledged"
INTERNAL_TOPIC = "audit-log"  # the source named by rows the audit-log writes about its own chains
_NAMESPACE = uuid.UUID("9b1f4c52-7a4e-4f0b-9d0c-2f6d3a8e5b71")


@dataclass(frozen=True, slots=True)
class Damage:
    id: int
    stream: str
    detected_at: datetime
    kind: str
    expected_seq: int
    found_seq: int
    detail: str


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    id: int
    damage_id: int
    acknowledged_by: str
    reason: str
    acknowledged_at: datetime


async def record_damage(conn: asyncpg.Connection, exc: ChainTampered) -> Damage:
    row = await conn.fetchrow(
        "INSERT INTO audit_stream_damage (stream, kind, expected_seq, expected_hash, found_seq, found_hash, detail) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id, detected_at",
        exc.stream,
        exc.kind,
        exc.expected[0],
        exc.expected[1],
        exc.found[0],
        exc.found[1],
        exc.detail,
    )
    assert row is not None
    return Damage(
        int(row["id"]), exc.stream, row["detected_at"], exc.kind, exc.expected[0], exc.found[0], exc.detail
    )


async def open_damage(conn: Any, stream: str) -> list[Damage]:
    """Damage records of the stream that no auditor has acknowledged yet."""
    rows = await conn.fetch(
        "SELECT d.id, d.stream, d.detected_at, d.kind, d.expected_seq, d.found_seq, d.detail "
        "FROM audit_stream_damage d LEFT JOIN audit_damage_acks a ON a.damage_id = d.id "
        "WHERE d.stream = $1 AND a.id IS NULL ORDER BY d.id",
        stream,
    )
    return [Damage(**dict(r)) for r in rows]


async def acknowledge(conn: Any, stream: str, who: str, reason: str) -> list[Acknowledgement]:
    """Acknowledge every open damage record of the stream (as the authenticated auditor ``who``)."""
    async with conn.transaction():
        rows = await conn.fetch(
            "INSERT INTO audit_damage_acks (damage_id, acknowledged_by, reason) "
            "SELECT d.id, $2, $3 FROM audit_stream_damage d LEFT JOIN audit_damage_acks a ON a.damage_id = d.id "
            "WHERE d.stream = $1 AND a.id IS NULL ORDER BY d.id "
            "RETURNING id, damage_id, acknowledged_by, reason, acknowledged_at",
            stream,
            who,
            reason,
        )
    return [Acknowledgement(**dict(r)) for r in rows]


async def acknowledgements(conn: Any, stream: str) -> list[Acknowledgement]:
    rows = await conn.fetch(
        "SELECT a.id, a.damage_id, a.acknowledged_by, a.reason, a.acknowledged_at FROM audit_damage_acks a "
        "JOIN audit_stream_damage d ON d.id = a.damage_id WHERE d.stream = $1 ORDER BY a.id",
        stream,
    )
    return [Acknowledgement(**dict(r)) for r in rows]


def _entry(
    stream: str, event_id: str, event_type: str, at: datetime, offset: int, payload: dict[str, Any]
) -> Entry:
    envelope = canonical_json(
        {
            "event_id": event_id,
            "event_type": event_type,
            "schema": "audit.damage.v1",
            "occurred_at": at.astimezone(UTC).isoformat(),
            "producer": SERVICE,
            "payload": payload,
        }
    ).decode()
    return Entry(event_id, INTERNAL_TOPIC, -1, offset, event_type, at, None, None, None, None, None, envelope)


def damage_event_id(stream: str, damage_id: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{stream}:damage:{damage_id}"))


def ack_event_id(stream: str, ack_id: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{stream}:ack:{ack_id}"))


def damage_entry(damage: Damage, exc: ChainTampered) -> Entry:
    """The row that records the damage in the damaged stream itself."""
    return _entry(
        damage.stream,
        damage_event_id(damage.stream, damage.id),
        DAMAGE_EVENT,
        damage.detected_at,
        damage.id,
        {
            "stream": damage.stream,
            "damage_id": damage.id,
            "kind": damage.kind,
            "expected_seq": exc.expected[0],
            "expected_hash": exc.expected[1].hex(),
            "found_seq": exc.found[0],
            "found_hash": exc.found[1].hex(),
            "detail": damage.detail,
        },
    )


def ack_entry(stream: str, ack: Acknowledgement) -> Entry:
    return _entry(
        stream,
        ack_event_id(stream, ack.id),
        ACK_EVENT,
        ack.acknowledged_at,
        ack.id,
        {
            "stream": stream,
            "damage_id": ack.damage_id,
            "acknowledged_by": ack.acknowledged_by,
            "reason": ack.reason,
        },
    )


def damage_alert(damage: Damage, schema: str = "monitor.alerts.v1") -> AlertEvent:
    """The alert for ``monitor.alerts``: the audit trail's stream stands where a model version would."""
    return AlertEvent(
        event_id=uuid.uuid5(_NAMESPACE, f"{damage.stream}:alert:{damage.id}"),
        event_type="alert_raised",
        schema_=schema,
        occurred_at=damage.detected_at,
        producer=SERVICE,
        payload=AlertPayload(
            alert_id=f"audit-tampering-{damage.stream}-{damage.id}",
            model=SERVICE,
            version=damage.stream,
            stage="audit",
            kind=AlertKind.AUDIT_TAMPERING,
            state=AlertState.RAISED,
            severity="critical",
            summary=f"audit stream {damage.stream} damaged ({damage.kind}): {damage.detail}; nothing is signed "
            "on it until an auditor acknowledges",
            windows=1,
            window_start=damage.detected_at,
            window_end=damage.detected_at,
            metrics={"expected_seq": float(damage.expected_seq), "found_seq": float(damage.found_seq)},
        ),
    )
