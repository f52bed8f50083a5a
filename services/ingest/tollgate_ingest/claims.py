"""Dedup state that survives restarts: PostgreSQL claims of event ids by the raw message that carried them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Protocol

import asyncpg

Claim = tuple[str, int, int]  # event_id (canonical UUID text), partition, offset


class ClaimStore(Protocol):
    async def claim(self, topic: str, claims: Sequence[Claim]) -> set[Claim]:
        """Return the claims that own their event id (first seen, or the same message replayed)."""
        ...


_INSERT_SQL = """
INSERT INTO ingest_event_claims (event_id, topic, partition, "offset")
SELECT event_id, $1, partition, "offset"
FROM unnest($2::uuid[], $3::integer[], $4::bigint[]) AS t(event_id, partition, "offset")
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id, partition, "offset"
"""
# Only for the (rare) ids that were claimed before: is the earlier claim this very message's?
_REPLAY_SQL = """
SELECT event_id, partition, "offset" FROM ingest_event_claims
WHERE topic = $1 AND event_id = ANY($2::uuid[])
"""


class PostgresClaimStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def claim(self, topic: str, claims: Sequence[Claim]) -> set[Claim]:
        if not claims:
            return set()
        ids, partitions, offsets = zip(*claims, strict=True)
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(_INSERT_SQL, topic, list(ids), list(partitions), list(offsets))
            won = {(str(r[0]), r[1], r[2]) for r in rows}
            if len(won) < len(claims):
                others = [c for c in claims if c not in won]
                earlier = await conn.fetch(_REPLAY_SQL, topic, [c[0] for c in others])
                won |= {(str(r[0]), r[1], r[2]) for r in earlier} & set(others)
        return won

    async def prune(self, older_than: timedelta) -> int:
        async with self._pool.acquire() as conn:
            status = await conn.execute(
                "DELETE FROM ingest_event_claims WHERE claimed_at < now() - $1::interval", older_than
            )
        return int(status.split()[-1])


class MemoryClaimStore:
    """In-memory twin for unit tests."""

    def __init__(self) -> None:
        self.owners: dict[str, tuple[str, int, int]] = {}

    async def claim(self, topic: str, claims: Sequence[Claim]) -> set[Claim]:
        won: set[Claim] = set()
        for event_id, partition, offset in claims:
            owner = self.owners.setdefault(event_id, (topic, partition, offset))
            if owner == (topic, partition, offset):
                won.add((event_id, partition, offset))
        return won
