"""Transactional outbox: a service records the events it must publish in the same PostgreSQL transaction as
the state change behind them, and a relay publishes them to Kafka afterwards (at least once; consumers
dedupe by ``event_id``). A crash between "state saved" and "event published" therefore loses nothing.

Each service has its own table, created by one of its migrations exactly as ``outbox_ddl(table)`` states it
(migrations are fixed SQL files, so they carry a copy of it).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from tollgate_core.db import Conn
from tollgate_core.waiting import wait_event

log = logging.getLogger(__name__)
_TABLE = re.compile(r"^[a-z_][a-z0-9_]*$")


def _checked(table: str) -> str:
    """The table name, refused unless it is a plain identifier (it is spliced into SQL)."""
    if not _TABLE.match(table):
        raise ValueError(f"bad outbox table name {table!r}")
    return table


def outbox_ddl(table: str) -> str:
    table = _checked(table)
    return f"""
CREATE TABLE {table} (
    seq          bigserial   PRIMARY KEY,
    topic        text        NOT NULL,
    key          bytea,
    value        bytea       NOT NULL,
    headers      jsonb       NOT NULL DEFAULT '[]',
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX {table}_pending ON {table} (seq) WHERE published_at IS NULL;
"""


class Outbox:
    def __init__(self, pool: asyncpg.Pool, table: str) -> None:
        self._pool = pool
        self._table = _checked(table)
        self._wake = asyncio.Event()

    async def add(
        self,
        conn: Conn,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Record an event inside the caller's transaction (``conn`` must be in it)."""
        encoded = orjson.dumps([[k, v.decode("latin-1")] for k, v in headers or []]).decode()
        await conn.execute(
            f"INSERT INTO {self._table} (topic, key, value, headers) VALUES ($1, $2, $3, $4::jsonb)",
            topic,
            key,
            value,
            encoded,
        )

    def notify(self) -> None:
        """Wake the relay now instead of at its next poll."""
        self._wake.set()

    async def publish_pending(self, producer: AIOKafkaProducer, limit: int = 500) -> int:
        """Publish the oldest pending events in order and mark them; returns how many."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows: list[Any] = await conn.fetch(
                f"SELECT seq, topic, key, value, headers FROM {self._table} WHERE published_at IS NULL "
                f"ORDER BY seq LIMIT {int(limit)} FOR UPDATE SKIP LOCKED"
            )
            if not rows:
                return 0
            futures = []
            for row in rows:
                headers = [(k, v.encode("latin-1")) for k, v in orjson.loads(row["headers"])]
                futures.append(
                    await producer.send(row["topic"], row["value"], key=row["key"], headers=headers)
                )
            await asyncio.gather(*futures)
            await conn.execute(
                f"UPDATE {self._table} SET published_at = now() WHERE seq = ANY($1::bigint[])",
                [r["seq"] for r in rows],
            )
            return len(rows)

    async def relay(self, producer: AIOKafkaProducer, poll_s: float = 0.5) -> None:
        """Publish forever; Kafka or database errors back off and retry (nothing is marked unless acked)."""
        backoff = poll_s
        while True:
            try:
                while await self.publish_pending(producer):
                    pass
                backoff = poll_s
            except Exception as exc:  # retried: the events stay pending until Kafka acknowledged them
                log.warning("outbox %s: publish failed, retrying: %s", self._table, exc)
                backoff = min(backoff * 2, 10.0)
            self._wake.clear()
            await wait_event(self._wake, backoff)
