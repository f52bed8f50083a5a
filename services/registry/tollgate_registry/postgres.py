"""The registry's PostgreSQL repository (asyncpg): versions, transitions, candidate event claims, outbox.

A model transaction is one PostgreSQL transaction that first takes a transaction-level advisory lock keyed
by the model name, so transitions of one model run one at a time across API calls, the candidate consumer,
the canary loop and any number of registry replicas; other models are not blocked. Lifecycle events go to
the ``registry_outbox`` table inside the same transaction and the outbox relay publishes them afterwards,
keyed by model name so that one model's events stay in order.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from tollgate_core.events import dumps
from tollgate_core.lifecycle import (
    ApprovalRecord,
    Artifact,
    CandidatePayload,
    GateResult,
    LifecycleEvent,
    Stage,
    Transition,
)
from tollgate_core.outbox import Outbox
from tollgate_registry.ports import NewVersion, TransitionRecord, VersionDetail, VersionRecord
from tollgate_registry.state import Change, VersionState

OUTBOX_TABLE = "registry_outbox"
LOCK_NAMESPACE = "tollgate-registry:"

_RECORD_COLUMNS = """model, version, seq, stage, task, contract, artifact, metrics, gates_passed,
    production_rank, rolled_back, canary_until, registered_at, stage_changed_at"""
_MODEL_VERSIONS = f"SELECT {_RECORD_COLUMNS} FROM registry_versions WHERE model = $1 ORDER BY seq"

# The same update rule as tollgate_registry.state.advance, in SQL.
_UPDATE_STAGE = """
UPDATE registry_versions SET
    stage = $3,
    stage_changed_at = $4,
    production_rank = COALESCE($5, production_rank),
    rolled_back = CASE WHEN $6 THEN true WHEN $3 = 'production' THEN false ELSE rolled_back END,
    canary_until = CASE WHEN $3 = 'staging' THEN $7::timestamptz ELSE NULL END
WHERE model = $1 AND version = $2
"""

_INSERT_TRANSITION = """
INSERT INTO registry_transitions
    (model, version, transition, from_stage, to_stage, actor, reason, at, event_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""

# Rows that leave production or staging are updated before rows that enter them, so the unique indexes
# (one production, one staging per model) hold after every statement; events keep the planned order.
_ENTERING = (Stage.PRODUCTION, Stage.STAGING)


def _record(row: Any) -> VersionRecord:
    return VersionRecord(
        model=row["model"],
        state=VersionState(
            version=row["version"],
            stage=Stage(row["stage"]),
            seq=row["seq"],
            production_rank=row["production_rank"],
            rolled_back=row["rolled_back"],
            canary_until=row["canary_until"],
        ),
        task=row["task"],
        contract=row["contract"],
        artifact=Artifact.model_validate_json(row["artifact"]),
        metrics=orjson.loads(row["metrics"]),
        gates_passed=row["gates_passed"],
        registered_at=row["registered_at"],
        stage_changed_at=row["stage_changed_at"],
    )


def _transition(row: Any) -> TransitionRecord:
    return TransitionRecord(
        id=row["id"],
        model=row["model"],
        version=row["version"],
        transition=Transition(row["transition"]),
        from_stage=Stage(row["from_stage"]) if row["from_stage"] else None,
        to_stage=Stage(row["to_stage"]),
        actor=row["actor"],
        reason=row["reason"],
        at=row["at"],
        event_id=row["event_id"],
    )


class PostgresModelTransaction:
    def __init__(self, conn: Any, model: str, outbox: Outbox, topic: str) -> None:
        self.conn = conn
        self.model = model
        self.outbox = outbox
        self.topic = topic
        self.published = 0

    async def claim_event(self, event_id: uuid.UUID, version: str) -> bool:
        status = await self.conn.execute(
            "INSERT INTO registry_candidate_events (event_id, model, version) VALUES ($1, $2, $3) "
            "ON CONFLICT (event_id) DO NOTHING",
            event_id,
            self.model,
            version,
        )
        return bool(status == "INSERT 0 1")

    async def versions(self) -> list[VersionRecord]:
        rows = await self.conn.fetch(_MODEL_VERSIONS, self.model)
        return [_record(r) for r in rows]

    async def insert_version(self, new: NewVersion, at: datetime) -> None:
        c = new.candidate
        await self.conn.execute(
            """INSERT INTO registry_versions (model, version, stage, task, contract, artifact, metrics,
                   candidate, gates, gates_passed, candidate_event, registered_at, stage_changed_at)
               VALUES ($1, $2, 'candidate', $3, $4, $5::jsonb, $6::jsonb, $7::jsonb, $8::jsonb, $9, $10,
                   $11, $11)""",
            c.model,
            c.version,
            c.task,
            c.lineage.contract,
            c.artifact.model_dump_json(),
            orjson.dumps(c.metrics).decode(),
            c.model_dump_json(),
            orjson.dumps([g.model_dump(mode="json") for g in new.gates]).decode(),
            new.gates_passed,
            new.event_id,
            at,
        )

    async def apply(self, changes: Sequence[tuple[Change, LifecycleEvent]], at: datetime) -> None:
        for change, _ in sorted(changes, key=lambda item: item[0].to_stage in _ENTERING):
            await self.conn.execute(
                _UPDATE_STAGE,
                self.model,
                change.version,
                change.to_stage.value,
                at,
                change.production_rank,
                change.rolled_back,
                change.canary_until,
            )
        for change, event in changes:
            await self.conn.execute(
                _INSERT_TRANSITION,
                self.model,
                change.version,
                change.transition.value,
                change.from_stage.value if change.from_stage else None,
                change.to_stage.value,
                change.actor,
                change.reason,
                at,
                event.event_id,
            )
            await self.outbox.add(self.conn, self.topic, dumps(event), key=self.model.encode())
            self.published += 1

    async def approvals(self, version: str) -> list[ApprovalRecord]:
        return [_approval(r) for r in await self.conn.fetch(_APPROVALS, self.model, version)]

    async def add_approval(self, version: str, approval: ApprovalRecord) -> None:
        await self.conn.execute(
            "INSERT INTO registry_approvals (model, version, principal, reason, report_digest, at) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            self.model,
            version,
            approval.by,
            approval.reason,
            approval.report_digest,
            approval.at,
        )


_APPROVALS = (
    "SELECT principal, reason, report_digest, at FROM registry_approvals "
    "WHERE model = $1 AND version = $2 ORDER BY at, principal"
)


def _approval(row: Any) -> ApprovalRecord:
    return ApprovalRecord(
        by=row["principal"], at=row["at"], reason=row["reason"], report_digest=row["report_digest"]
    )


class PostgresRepository:
    def __init__(self, pool: asyncpg.Pool, outbox: Outbox, lifecycle_topic: str) -> None:
        self.pool = pool
        self.outbox = outbox
        self.lifecycle_topic = lifecycle_topic

    @asynccontextmanager
    async def model_transaction(self, model: str) -> AsyncIterator[PostgresModelTransaction]:
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", LOCK_NAMESPACE + model
                )
                tx = PostgresModelTransaction(conn, model, self.outbox, self.lifecycle_topic)
                yield tx
            if tx.published:
                self.outbox.notify()  # committed: publish now rather than at the relay's next poll

    async def model_names(self) -> list[str]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch("SELECT DISTINCT model FROM registry_versions ORDER BY model")
        return [r["model"] for r in rows]

    async def versions(self, model: str) -> list[VersionRecord]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(_MODEL_VERSIONS, model)
        return [_record(r) for r in rows]

    async def version_detail(self, model: str, version: str) -> VersionDetail | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT {_RECORD_COLUMNS}, candidate, gates, candidate_event FROM registry_versions "
                "WHERE model = $1 AND version = $2",
                model,
                version,
            )
            if row is None:
                return None
            transitions = await conn.fetch(
                "SELECT * FROM registry_transitions WHERE model = $1 AND version = $2 ORDER BY id",
                model,
                version,
            )
            approvals = await conn.fetch(_APPROVALS, model, version)
        return VersionDetail(
            record=_record(row),
            candidate=CandidatePayload.model_validate_json(row["candidate"]),
            gates=[GateResult.model_validate(g) for g in orjson.loads(row["gates"])],
            candidate_event_id=row["candidate_event"],
            transitions=[_transition(t) for t in transitions],
            approvals=[_approval(a) for a in approvals],
        )

    async def due_canaries(self, now: datetime) -> list[tuple[str, str]]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT model, version FROM registry_versions WHERE stage = 'staging' "
                "AND canary_until IS NOT NULL AND canary_until <= $1 ORDER BY canary_until",
                now,
            )
        return [(r["model"], r["version"]) for r in rows]
