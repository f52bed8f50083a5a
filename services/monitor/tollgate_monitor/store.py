"""The monitor's PostgreSQL repository: versions, partition checkpoints, window reports, the label join,
alert state and history, the retraining debounce and the outbox.

Everything a batch changes is written in one transaction: the checkpoint (compare-and-set on the partition's
last offset), the predictions waiting for labels, the window reports, the alert events and the debounced
training requests (both into the outbox). Kafka offsets are committed only after it, so a crash anywhere
replays the batch, and the replay skips what the checkpoint already holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import numpy as np
import orjson
from asyncpg.pool import PoolConnectionProxy

from tollgate_core.alerts import AlertEvent
from tollgate_core.events import dumps
from tollgate_core.lifecycle import CandidatePayload, LifecyclePayload
from tollgate_core.outbox import Outbox
from tollgate_monitor.ports import (
    BatchWrite,
    LabelRow,
    Retrain,
    StaleCheckpoint,
    VersionInfo,
)

OUTBOX_TABLE = "monitor_outbox"


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


class MonitorStore:
    """:class:`tollgate_monitor.ports.MonitorStorage` in PostgreSQL, plus the dashboard's reads and the outbox."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.outbox = Outbox(pool, OUTBOX_TABLE)

    # ------------------------------------------------------------------------------------------ versions

    async def upsert_candidate(self, p: CandidatePayload) -> None:
        importance = p.evaluation.feature_importance if p.evaluation is not None else None
        async with self.pool.acquire() as conn:
            await conn.execute(
                """INSERT INTO monitor_versions (model, version, contract, task, reference, metrics, trained_at,
                                                importance)
                   VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7, $8::jsonb)
                   ON CONFLICT (model, version) DO UPDATE SET contract = EXCLUDED.contract, task = EXCLUDED.task,
                       reference = EXCLUDED.reference, metrics = EXCLUDED.metrics, trained_at = EXCLUDED.trained_at,
                       importance = EXCLUDED.importance, updated_at = now()""",
                p.model,
                p.version,
                p.reference.contract,
                p.task,
                p.reference.model_dump_json(),
                _json(p.metrics),
                p.trained_at,
                importance.model_dump_json() if importance is not None else None,
            )

    async def upsert_lifecycle(self, p: LifecyclePayload, at: datetime) -> None:
        """Record a version's stage; an older event than the stored one (redelivery) changes nothing."""
        async with self.pool.acquire() as conn:
            await conn.execute(
                """INSERT INTO monitor_versions (model, version, contract, task, stage, stage_changed_at, canary_weight)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)
                   ON CONFLICT (model, version) DO UPDATE SET stage = EXCLUDED.stage,
                       stage_changed_at = EXCLUDED.stage_changed_at, canary_weight = EXCLUDED.canary_weight,
                       contract = coalesce(monitor_versions.contract, EXCLUDED.contract),
                       task = coalesce(monitor_versions.task, EXCLUDED.task), updated_at = now()
                   WHERE monitor_versions.stage_changed_at IS NULL
                      OR monitor_versions.stage_changed_at <= EXCLUDED.stage_changed_at""",
                p.model,
                p.version,
                p.contract,
                p.task,
                p.to_stage.value,
                at,
                p.canary_weight,
            )

    async def version(self, model: str, version: str) -> VersionInfo | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM monitor_versions WHERE model = $1 AND version = $2", model, version
            )
        return None if row is None else _version(row)

    async def stages(self) -> dict[tuple[str, str], str]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch("SELECT model, version, stage FROM monitor_versions")
        return {(r["model"], r["version"]): r["stage"] for r in rows}

    async def versions(self, model: str | None = None) -> list[dict[str, Any]]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT model, version, contract, task, metrics, trained_at, stage, stage_changed_at, canary_weight,
                          reference IS NOT NULL AS has_reference, importance
                   FROM monitor_versions WHERE $1::text IS NULL OR model = $1
                   ORDER BY model, length(version), version""",
                model,
            )
        return [
            {
                **dict(r),
                "metrics": orjson.loads(r["metrics"]) if r["metrics"] else {},
                "importance": orjson.loads(r["importance"]) if r["importance"] else None,
            }
            for r in rows
        ]

    async def production_versions(self) -> list[dict[str, Any]]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT v.model, v.version, v.trained_at, v.stage_changed_at,
                          (SELECT max(labeled_at) FROM monitor_predictions p
                           WHERE p.model = v.model AND p.version = v.version AND p.labeled_at IS NOT NULL) AS last_label
                   FROM monitor_versions v WHERE v.stage = 'production'"""
            )
        return [dict(r) for r in rows]

    # ---------------------------------------------------------------------------------------- checkpoints

    async def load_partition(self, topic: str, partition: int) -> dict[str, Any] | None:
        async with self.pool.acquire() as conn:
            raw = await conn.fetchval(
                "SELECT state FROM monitor_partitions WHERE topic = $1 AND partition = $2", topic, partition
            )
        return None if raw is None else dict(orjson.loads(raw))

    async def commit_batch(self, batch: BatchWrite) -> int:
        """Write one partition's batch atomically; returns the training requests queued (after debounce).

        Raises :class:`StaleCheckpoint` when the stored checkpoint is not the one ``batch.state`` started from.
        """
        queued = 0
        async with self.pool.acquire() as conn, conn.transaction():
            new_offset = int(batch.state["last_offset"])
            if batch.expected_offset < 0:
                status = await conn.execute(
                    """INSERT INTO monitor_partitions (topic, partition, last_offset, state)
                       VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT DO NOTHING""",
                    batch.topic,
                    batch.partition,
                    new_offset,
                    _json(batch.state),
                )
            else:
                status = await conn.execute(
                    """UPDATE monitor_partitions SET last_offset = $3, state = $4::jsonb, updated_at = now()
                       WHERE topic = $1 AND partition = $2 AND last_offset = $5""",
                    batch.topic,
                    batch.partition,
                    new_offset,
                    _json(batch.state),
                    batch.expected_offset,
                )
            if not status.endswith(" 1"):
                raise StaleCheckpoint(
                    f"{batch.topic}[{batch.partition}] checkpoint moved past offset {batch.expected_offset}"
                )
            if batch.predictions:
                await conn.execute(
                    """INSERT INTO monitor_predictions
                           (request_id, model, version, contract, entity_id, score, predicted, occurred_at)
                       SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                            $6::float8[], $7::text[], $8::timestamptz[])
                       ON CONFLICT DO NOTHING""",
                    [p.request_id for p in batch.predictions],
                    [p.model for p in batch.predictions],
                    [p.version for p in batch.predictions],
                    [p.contract for p in batch.predictions],
                    [p.entity_id for p in batch.predictions],
                    [p.score for p in batch.predictions],
                    [p.predicted for p in batch.predictions],
                    [p.occurred_at for p in batch.predictions],
                )
            for w in batch.windows:
                await conn.execute(
                    """INSERT INTO monitor_windows (model, version, window_start, window_end, rows, report)
                       VALUES ($1, $2, to_timestamp($3), to_timestamp($4), $5, $6::jsonb)
                       ON CONFLICT (model, version, window_end) DO UPDATE SET report = EXCLUDED.report,
                           rows = EXCLUDED.rows, window_start = EXCLUDED.window_start""",
                    w["model"],
                    w["version"],
                    w["start"],
                    w["end"],
                    w["rows"],
                    _json(w),
                )
            for alert in batch.alerts:
                await self._record_alert(conn, alert, batch.alerts_topic)
            for retrain in batch.retrains:
                if await self._debounced(conn, retrain):
                    await self.outbox.add(
                        conn,
                        batch.requests_topic,
                        dumps(retrain.event),
                        key=retrain.event.payload.model.encode(),
                    )
                    queued += 1
        if batch.alerts or queued:
            self.outbox.notify()
        return queued

    async def _record_alert(self, conn: PoolConnectionProxy[Any], alert: AlertEvent, topic: str) -> bool:
        p = alert.payload
        status = await conn.execute(
            """INSERT INTO monitor_alerts (event_id, alert_id, model, version, kind, state, severity, stage, summary,
                                           window_start, window_end, payload)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb) ON CONFLICT DO NOTHING""",
            alert.event_id,
            p.alert_id,
            p.model,
            p.version,
            p.kind.value,
            p.state.value,
            p.severity,
            p.stage,
            p.summary,
            p.window_start,
            p.window_end,
            p.model_dump_json(),
        )
        if not status.endswith(" 1"):
            return False  # already recorded (and published) by an earlier attempt
        await conn.execute(
            """INSERT INTO monitor_alert_state (model, version, kind, state, alert_id) VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (model, version, kind) DO UPDATE SET state = EXCLUDED.state, alert_id = EXCLUDED.alert_id,
                   changed_at = now()""",
            p.model,
            p.version,
            p.kind.value,
            p.state.value,
            p.alert_id,
        )
        await self.outbox.add(conn, topic, dumps(alert), key=p.model.encode())
        return True

    async def _debounced(self, conn: PoolConnectionProxy[Any], retrain: Retrain) -> bool:
        """Claim the model's retraining slot unless a request went out within the cooldown."""
        row = await conn.fetchrow(
            """INSERT INTO monitor_retrain (model, last_requested_at, alert_id) VALUES ($1, now(), $2)
               ON CONFLICT (model) DO UPDATE SET last_requested_at = now(), alert_id = EXCLUDED.alert_id
               WHERE monitor_retrain.last_requested_at <= now() - make_interval(secs => $3)
               RETURNING model""",
            retrain.event.payload.model,
            retrain.event.payload.alert_id,
            retrain.cooldown_s,
        )
        return row is not None

    async def set_alert(self, alert: AlertEvent, topic: str, expected_state: str) -> bool:
        """Change a series' alert state only if it is still ``expected_state`` (several replicas may check
        staleness at once; one wins) and queue the event. Returns whether this call made the change."""
        p = alert.payload
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO monitor_alert_state (model, version, kind, state) VALUES ($1, $2, $3, 'cleared')
                   ON CONFLICT DO NOTHING""",
                p.model,
                p.version,
                p.kind.value,
            )
            row = await conn.fetchrow(
                """SELECT state, alert_id FROM monitor_alert_state WHERE model = $1 AND version = $2 AND kind = $3
                   FOR UPDATE""",
                p.model,
                p.version,
                p.kind.value,
            )
            assert row is not None
            if row["state"] != expected_state:
                return False
            recorded = await self._record_alert(conn, alert, topic)
        if recorded:
            self.outbox.notify()
        return recorded

    async def alert_state(self, model: str, version: str, kind: str) -> tuple[str, str | None]:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT state, alert_id FROM monitor_alert_state WHERE model = $1 AND version = $2 AND kind = $3",
                model,
                version,
                kind,
            )
        return ("cleared", None) if row is None else (row["state"], row["alert_id"])

    # ------------------------------------------------------------------------------------------- labels

    async def join_labels(self, rows: Sequence[LabelRow]) -> int:
        """Attach labels to the predictions still waiting for them (by request id when the label names one,
        else by entity id); idempotent, since labeled predictions are not matched again."""
        if not rows:
            return 0
        async with self.pool.acquire() as conn:
            result = await conn.fetch(
                """WITH labels AS (
                       SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[],
                                            $6::timestamptz[])
                           AS l(contract, entity_id, request_id, label, truth, labeled_at))
                   UPDATE monitor_predictions p SET label = l.label, truth = l.truth, labeled_at = l.labeled_at
                   FROM labels l
                   WHERE p.label IS NULL AND p.contract = l.contract
                     AND ((l.request_id IS NOT NULL AND p.request_id = l.request_id)
                          OR (l.request_id IS NULL AND p.entity_id = l.entity_id))
                   RETURNING 1""",
                [r.contract for r in rows],
                [r.entity_id for r in rows],
                [r.request_id for r in rows],
                [r.label for r in rows],
                [r.truth for r in rows],
                [r.labeled_at for r in rows],
            )
        return len(result)

    async def labeled(
        self, model: str, version: str, start: float, end: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and truths (NaN when absent) of the version's predictions labeled within ``[start, end)``."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT score, truth FROM monitor_predictions
                   WHERE model = $1 AND version = $2 AND labeled_at >= to_timestamp($3) AND labeled_at < to_timestamp($4)""",
                model,
                version,
                start,
                end,
            )
        scores = np.array([np.nan if r["score"] is None else r["score"] for r in rows], dtype=np.float64)
        truth = np.array([np.nan if r["truth"] is None else r["truth"] for r in rows], dtype=np.float64)
        return scores, truth

    async def expire_predictions(self, ttl_s: float) -> int:
        async with self.pool.acquire() as conn:
            status = await conn.execute(
                "DELETE FROM monitor_predictions WHERE occurred_at < now() - make_interval(secs => $1)", ttl_s
            )
        return int(status.split()[-1])

    # ---------------------------------------------------------------------------------------- dashboard

    async def windows(self, model: str, version: str | None, limit: int) -> list[dict[str, Any]]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT report FROM (
                       SELECT report, window_end FROM monitor_windows
                       WHERE model = $1 AND ($2::text IS NULL OR version = $2)
                       ORDER BY window_end DESC LIMIT $3) newest ORDER BY window_end""",
                model,
                version,
                limit,
            )
        return [orjson.loads(r["report"]) for r in rows]

    async def alerts(self, model: str | None, limit: int) -> list[dict[str, Any]]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT event_id, alert_id, model, version, kind, state, severity, stage, summary, window_start,
                          window_end, created_at
                   FROM monitor_alerts WHERE $1::text IS NULL OR model = $1 ORDER BY created_at DESC, window_end DESC
                   LIMIT $2""",
                model,
                limit,
            )
        return [{**dict(r), "event_id": str(r["event_id"])} for r in rows]

    async def active_alerts(self, model: str | None = None) -> list[dict[str, Any]]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT s.model, s.version, s.kind, s.alert_id, s.changed_at, a.summary, a.severity
                   FROM monitor_alert_state s
                   LEFT JOIN LATERAL (SELECT summary, severity FROM monitor_alerts a WHERE a.alert_id = s.alert_id
                                      AND a.state = 'raised' LIMIT 1) a ON true
                   WHERE s.state = 'raised' AND ($1::text IS NULL OR s.model = $1)
                   ORDER BY s.changed_at DESC""",
                model,
            )
        return [dict(r) for r in rows]

    async def label_counts(self, model: str) -> dict[str, dict[str, int]]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT version, count(*) AS predictions, count(labeled_at) AS labeled
                   FROM monitor_predictions WHERE model = $1 GROUP BY version""",
                model,
            )
        return {r["version"]: {"predictions": r["predictions"], "labeled": r["labeled"]} for r in rows}


def _version(row: asyncpg.Record) -> VersionInfo:
    return VersionInfo(
        model=row["model"],
        version=row["version"],
        contract=row["contract"],
        task=row["task"],
        reference=orjson.loads(row["reference"]) if row["reference"] else None,
        metrics=orjson.loads(row["metrics"]) if row["metrics"] else {},
        stage=row["stage"],
    )
