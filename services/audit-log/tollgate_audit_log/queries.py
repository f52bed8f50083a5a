"""Compliance queries over the audit trail: filters, keyset pagination, streaming export, single rows.

Results are ordered by ``(occurred_at, stream, seq)``, a total order served by one index; the page cursor
is the last row's key, so page *n* costs the same as page 1 and rows appended meanwhile never shift a page.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from tollgate_audit_log.canonical import from_micros, micros

ROW_COLUMNS = (
    "stream, seq, event_id::text AS event_id, topic, kafka_partition, kafka_offset, event_type, occurred_at, "
    "recorded_at, request_id, entity_id, model, version, trace_id, envelope, row_hash"
)


# A connection of its own or one borrowed from a pool.
Conn = asyncpg.Connection | PoolConnectionProxy


class BadCursor(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class PageKey:
    occurred_at: datetime
    stream: str
    seq: int

    def encode(self) -> str:
        raw = orjson.dumps([micros(self.occurred_at), self.stream, self.seq])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> PageKey:
        try:
            us, stream, seq = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            if not isinstance(us, int) or not isinstance(stream, str) or not isinstance(seq, int):
                raise ValueError("wrong types")
            return cls(from_micros(us), stream, seq)
        except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError) as exc:
            raise BadCursor(f"invalid cursor: {exc}") from None


@dataclass(frozen=True)
class EventFilter:
    request_id: str | None = None
    entity_id: str | None = None
    model: str | None = None
    version: str | None = None
    event_type: str | None = None
    stream: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    streams: tuple[str, ...] = field(default=())  # restrict to these streams (empty: all)

    def where(self, after: PageKey | None = None) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []

        def add(sql: str, value: Any) -> None:
            args.append(value)
            clauses.append(sql.replace("?", f"${len(args)}"))

        for column in ("request_id", "entity_id", "model", "version", "event_type", "stream"):
            value = getattr(self, column)
            if value is not None:
                add(f"{column} = ?", value)
        if self.streams:
            add("stream = ANY(?::text[])", list(self.streams))
        if self.since is not None:
            add("occurred_at >= ?", self.since)
        if self.until is not None:
            add("occurred_at < ?", self.until)
        if after is not None:
            args += [after.occurred_at, after.stream, after.seq]
            n = len(args)
            clauses.append(f"(occurred_at, stream, seq) > (${n - 2}, ${n - 1}, ${n})")
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def row_to_item(row: asyncpg.Record) -> dict[str, Any]:
    """One audit row as the API shows it: where it sits in its chain, its index, and the envelope."""
    return {
        "stream": row["stream"],
        "seq": row["seq"],
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "occurred_at": row["occurred_at"],
        "recorded_at": row["recorded_at"],
        "source": {"topic": row["topic"], "partition": row["kafka_partition"], "offset": row["kafka_offset"]},
        "request_id": row["request_id"],
        "entity_id": row["entity_id"],
        "model": row["model"],
        "version": row["version"],
        "trace_id": row["trace_id"],
        "row_hash": bytes(row["row_hash"]).hex(),
        "event": orjson.loads(row["envelope"]),
    }


async def page(
    conn: Conn, flt: EventFilter, after: PageKey | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    where, args = flt.where(after)
    rows = await conn.fetch(
        f"SELECT {ROW_COLUMNS} FROM audit_events{where} ORDER BY occurred_at, stream, seq LIMIT {int(limit) + 1}",
        *args,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    next_key = None
    if more and rows:
        last = rows[-1]
        next_key = PageKey(last["occurred_at"], last["stream"], last["seq"]).encode()
    return [row_to_item(r) for r in rows], next_key


async def stream_items(conn: Conn, flt: EventFilter, *, chunk: int = 2000) -> AsyncIterator[dict[str, Any]]:
    """Every matching row in order, through a server-side cursor (constant memory for any export size)."""
    where, args = flt.where()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        cursor = await conn.cursor(
            f"SELECT {ROW_COLUMNS} FROM audit_events{where} ORDER BY occurred_at, stream, seq",
            *args,
        )
        while rows := await cursor.fetch(chunk):
            for row in rows:
                yield row_to_item(row)


async def get_event(conn: Conn, event_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"SELECT {ROW_COLUMNS} FROM audit_events WHERE event_id = $1::uuid", event_id)
    return None if row is None else row_to_item(row)


async def find(
    conn: Conn, sql_where: str, *args: Any, order: str = "occurred_at, stream, seq"
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT {ROW_COLUMNS} FROM audit_events WHERE {sql_where} ORDER BY {order}", *args
    )
    return [row_to_item(r) for r in rows]
