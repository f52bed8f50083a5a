"""Where the validator keeps the training reference in force per dataset contract, so a restart judges
with the same statistical expectations: an interface (:class:`ReferenceStore`), its PostgreSQL table and an
in-memory version for unit tests; and the use case that keeps the newest candidate's reference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from tollgate_core.reference import ReferenceProfile
from tollgate_validator.stage import References


@dataclass(frozen=True)
class KeptReference:
    """A reference and the candidate it came from."""

    reference: ReferenceProfile
    model: str
    version: str
    source_event: str


class ReferenceStore(Protocol):
    async def save(self, kept: KeptReference) -> None:
        """Keep ``kept`` as its contract's reference (replacing the one kept before)."""

    async def load_all(self) -> list[ReferenceProfile]:
        """The reference kept per contract."""


class PostgresReferenceStore:
    """:class:`ReferenceStore` in the ``validator_references`` table."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def save(self, kept: KeptReference) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(
                """INSERT INTO validator_references (contract, model, version, reference, source_event)
                   VALUES ($1, $2, $3, $4::jsonb, $5)
                   ON CONFLICT (contract) DO UPDATE SET model = EXCLUDED.model, version = EXCLUDED.version,
                       reference = EXCLUDED.reference, source_event = EXCLUDED.source_event, updated_at = now()""",
                kept.reference.contract,
                kept.model,
                kept.version,
                kept.reference.model_dump_json(),
                kept.source_event,
            )

    async def load_all(self) -> list[ReferenceProfile]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch("SELECT reference FROM validator_references")
        return [ReferenceProfile.model_validate_json(row["reference"]) for row in rows]


class InMemoryReferenceStore:
    """:class:`ReferenceStore` in a dictionary."""

    def __init__(self) -> None:
        self.by_contract: dict[str, KeptReference] = {}

    async def save(self, kept: KeptReference) -> None:
        self.by_contract[kept.reference.contract] = kept

    async def load_all(self) -> list[ReferenceProfile]:
        return [kept.reference for kept in self.by_contract.values()]


async def keep_candidate_reference(
    event: dict[str, Any], references: References, store: ReferenceStore
) -> None:
    """A model candidate arrived: its training reference becomes its contract's expectations, here and in
    ``store``."""
    payload = event["payload"]
    reference = ReferenceProfile.model_validate(payload["reference"])
    references.set(reference.contract, reference)
    await store.save(
        KeptReference(reference, str(payload["model"]), str(payload["version"]), event["event_id"])
    )


async def load_references(references: References, store: ReferenceStore) -> None:
    """Every kept reference back in force (at start)."""
    for reference in await store.load_all():
        references.set(reference.contract, reference)
