"""The trainer's PostgreSQL repository: labeled rows with their Kafka positions, runs, requests, outbox."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from tollgate_core.lifecycle import OffsetRange
from tollgate_core.outbox import Outbox

OUTBOX_TABLE = "trainer_outbox"


@dataclass(frozen=True)
class StoredRow:
    event_id: str
    contract: str
    topic: str
    partition: int
    offset: int
    occurred_at: datetime
    payload: bytes  # JSON of the record


@dataclass
class TrainingData:
    records: list[dict[str, Any]]
    offsets: list[OffsetRange]
    last_seq: int
    superseded: int = 0  # rows left out because a newer label of the same entity and event time arrived


@dataclass(frozen=True)
class LabelKey:
    """What makes two labeled rows the same observation: the entity id and, when the contract has one, the
    event time. Of rows with the same key only the newest arrival (highest ``seq``) is trained on, so a
    label sent again (a correction, or a producer's retry under a new event id) replaces the earlier one
    instead of adding a row that could sit on both sides of the time-ordered holdout."""

    entity: str
    event_time: str | None = None

    def of(self, record: dict[str, Any]) -> tuple[str, str]:
        time = record.get(self.event_time) if self.event_time is not None else None
        return (orjson.dumps(record.get(self.entity)).decode(), "" if time is None else str(time))


def newest_per_key(
    rows: Sequence[tuple[int, dict[str, Any]]], key: LabelKey | None
) -> tuple[list[dict[str, Any]], int]:
    """Keep, per key, the record with the highest seq; the order of the kept records is unchanged."""
    if key is None:
        return [record for _, record in rows], 0
    newest: dict[tuple[str, str], int] = {}
    for seq, record in rows:
        k = key.of(record)
        if seq > newest.get(k, -1):
            newest[k] = seq
    kept = [record for seq, record in rows if newest[key.of(record)] == seq]
    return kept, len(rows) - len(kept)


def offset_ranges(positions: Sequence[tuple[str, int, int]]) -> list[OffsetRange]:
    """Smallest and largest offset per topic partition of the rows a run used."""
    spans: dict[tuple[str, int], list[int]] = {}
    for topic, partition, offset in positions:
        span = spans.setdefault((topic, partition), [offset, offset])
        span[0] = min(span[0], offset)
        span[1] = max(span[1], offset)
    return [
        OffsetRange(topic=t, partition=p, first_offset=lo, last_offset=hi)
        for (t, p), (lo, hi) in sorted(spans.items())
    ]


class TrainerRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.outbox = Outbox(pool, OUTBOX_TABLE)

    async def add_rows(self, rows: Sequence[StoredRow]) -> int:
        """Idempotent by event_id: redelivered events add nothing."""
        if not rows:
            return 0
        async with self.pool.acquire() as conn:
            result = await conn.fetch(
                """INSERT INTO trainer_rows (event_id, contract, topic, partition, "offset", occurred_at, payload)
                   SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::integer[], $5::bigint[],
                                        $6::timestamptz[], $7::jsonb[])
                   ON CONFLICT (event_id) DO NOTHING RETURNING 1""",
                [r.event_id for r in rows],
                [r.contract for r in rows],
                [r.topic for r in rows],
                [r.partition for r in rows],
                [r.offset for r in rows],
                [r.occurred_at for r in rows],
                [r.payload.decode() for r in rows],
            )
        return len(result)

    async def add_request(self, event_id: str, model: str, reason: str, requested_by: str) -> bool:
        async with self.pool.acquire() as conn:
            status = await conn.execute(
                """INSERT INTO trainer_requests (event_id, model, reason, requested_by) VALUES ($1, $2, $3, $4)
                   ON CONFLICT (event_id) DO NOTHING""",
                event_id,
                model,
                reason,
                requested_by,
            )
        return status.endswith(" 1")

    async def requesters(self, request_ids: list[str]) -> list[str]:
        """The principals who made these training requests, each once, in the order they asked."""
        if not request_ids:
            return []
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT requested_by, min(received_at) AS first FROM trainer_requests
                   WHERE event_id = ANY($1::uuid[]) GROUP BY requested_by ORDER BY first""",
                request_ids,
            )
        return [str(r["requested_by"]) for r in rows]

    async def pending_requests(self, model: str) -> list[str]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT event_id FROM trainer_requests WHERE model = $1 AND run_id IS NULL ORDER BY received_at",
                model,
            )
        return [str(r[0]) for r in rows]

    async def rows_since(self, contract: str, seq: int) -> int:
        async with self.pool.acquire() as conn:
            value = await conn.fetchval(
                "SELECT count(*) FROM trainer_rows WHERE contract = $1 AND seq > $2", contract, seq
            )
        return int(value)

    async def last_run(self, model: str) -> asyncpg.Record | None:
        async with self.pool.acquire() as conn:
            row: asyncpg.Record | None = await conn.fetchrow(
                "SELECT * FROM trainer_runs WHERE model = $1 AND status <> 'failed' ORDER BY version DESC LIMIT 1",
                model,
            )
        return row

    async def load_newest(self, contract: str, max_rows: int, key: LabelKey | None = None) -> TrainingData:
        """The newest ``max_rows`` rows (arrival order), returned in event-time order for the holdout split;
        of rows with the same ``key`` only the newest arrival."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT * FROM (
                       SELECT seq, topic, partition, "offset", occurred_at, payload FROM trainer_rows
                       WHERE contract = $1 ORDER BY seq DESC LIMIT $2) newest
                   ORDER BY occurred_at, topic, partition, "offset" """,
                contract,
                max_rows,
            )
        return self._data(rows, key)

    async def load_lineage(
        self, contract: str, offsets: Sequence[OffsetRange], key: LabelKey | None = None
    ) -> TrainingData:
        """Exactly the rows a lineage names (contract + offset ranges), in the same order as the run saw them,
        with the same rule for labels sent again."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT r.seq, r.topic, r.partition, r."offset", r.occurred_at, r.payload
                   FROM trainer_rows r
                   JOIN unnest($2::text[], $3::integer[], $4::bigint[], $5::bigint[]) AS s(topic, partition, lo, hi)
                     ON r.topic = s.topic AND r.partition = s.partition AND r."offset" BETWEEN s.lo AND s.hi
                   WHERE r.contract = $1
                   ORDER BY r.occurred_at, r.topic, r.partition, r."offset" """,
                contract,
                [o.topic for o in offsets],
                [o.partition for o in offsets],
                [o.first_offset for o in offsets],
                [o.last_offset for o in offsets],
            )
        return self._data(rows, key)

    @staticmethod
    def _data(rows: Sequence[asyncpg.Record], key: LabelKey | None) -> TrainingData:
        records, superseded = newest_per_key([(r["seq"], orjson.loads(r["payload"])) for r in rows], key)
        return TrainingData(
            records=records,
            offsets=offset_ranges([(r["topic"], r["partition"], r["offset"]) for r in rows]),
            last_seq=max((r["seq"] for r in rows), default=0),
            superseded=superseded,
        )

    @contextlib.asynccontextmanager
    async def training_lease(self, model: str) -> AsyncIterator[bool]:
        """Hold ``model``'s training lease (a PostgreSQL session advisory lock) if no other replica holds it:
        yields True while held, False at once when another replica has it. Dropped when the block ends, or by
        PostgreSQL when the holder's connection dies (a killed replica holds nothing)."""
        async with self.pool.acquire() as conn:
            held = bool(
                await conn.fetchval(
                    "SELECT pg_try_advisory_lock(hashtext('trainer-run'), hashtext($1))", model
                )
            )
            try:
                yield held
            finally:
                if held:
                    await conn.execute(
                        "SELECT pg_advisory_unlock(hashtext('trainer-run'), hashtext($1))", model
                    )

    async def start_run(self, model: str, trigger: str, last_seq: int) -> tuple[uuid.UUID, int]:
        """Reserve the next version number of ``model`` for a new run."""
        run_id = uuid.uuid4()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('trainer-version:' || $1))", model)
            version = int(
                await conn.fetchval(
                    "SELECT coalesce(max(version), 0) + 1 FROM trainer_runs WHERE model = $1", model
                )
            )
            await conn.execute(
                "INSERT INTO trainer_runs (run_id, model, version, trigger, status, last_seq) "
                "VALUES ($1, $2, $3, $4, 'running', $5)",
                run_id,
                model,
                version,
                trigger,
                last_seq,
            )
        return run_id, version

    async def finish_run(
        self,
        run_id: uuid.UUID,
        *,
        status: str,
        row_count: int | None = None,
        metrics: dict[str, float] | None = None,
        lineage: dict[str, Any] | None = None,
        error: str | None = None,
        candidate: tuple[str, bytes, bytes] | None = None,
        request_ids: Sequence[str] = (),
        candidate_event_id: str | None = None,
        experiment: dict[str, Any] | None = None,
    ) -> None:
        """Record the outcome (with the run's experiment: every trial of its champion selection); the
        candidate event goes into the outbox in the same transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """UPDATE trainer_runs SET status = $2, finished_at = now(), row_count = $3, metrics = $4::jsonb,
                       lineage = $5::jsonb, error = $6, candidate_event_id = $7, experiment = $8::jsonb
                   WHERE run_id = $1""",
                run_id,
                status,
                row_count,
                orjson.dumps(metrics).decode() if metrics is not None else None,
                orjson.dumps(lineage).decode() if lineage is not None else None,
                error,
                candidate_event_id,
                orjson.dumps(experiment).decode() if experiment is not None else None,
            )
            if request_ids:
                await conn.execute(
                    "UPDATE trainer_requests SET run_id = $1 WHERE event_id = ANY($2::uuid[])",
                    run_id,
                    list(request_ids),
                )
            if candidate is not None:
                topic, key, value = candidate
                await self.outbox.add(conn, topic, value, key=key)
        self.outbox.notify()

    async def add_to_outbox(self, topic: str, key: bytes, value: bytes) -> None:
        """One event into the outbox, committed when this returns (the relay publishes it)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await self.outbox.add(conn, topic, value, key=key)
        self.outbox.notify()

    async def runs(self, model: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT run_id, model, version, trigger, status, started_at, finished_at, row_count, metrics, error, "
                "experiment FROM trainer_runs WHERE $1::text IS NULL OR model = $1 ORDER BY started_at DESC LIMIT $2",
                model,
                limit,
            )
        return [
            {
                **dict(r),
                "run_id": str(r["run_id"]),
                "metrics": orjson.loads(r["metrics"]) if r["metrics"] else None,
                "experiment": orjson.loads(r["experiment"]) if r["experiment"] else None,
            }
            for r in rows
        ]
