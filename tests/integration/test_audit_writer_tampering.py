"""The writer against an owner who forges rows: on a trail of 200,000 signed rows, the owner appends a
correctly hashed row at head + 1. The stream worker must treat it as tampering, not as a lost lock: the
stream is marked damaged, the damage goes into the trail and to ``monitor.alerts`` (real Kafka), the forged
row is never signed, and signing resumes only after an auditor's acknowledgement, which the trail records."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry

from tests.audit_support import ensure_writer_role, envelope, fill, fresh_database, inference_entry
from tests.polling import eventually
from tollgate_audit_log import tamper
from tollgate_audit_log.app import prepare_database
from tollgate_audit_log.canonical import COPY_COLUMNS, chain_records
from tollgate_audit_log.publish import Publisher, WitnessDir
from tollgate_audit_log.settings import AuditLogSettings
from tollgate_audit_log.signing import Signer
from tollgate_audit_log.sink import Metrics, StreamWorker
from tollgate_audit_log.streams import STREAMS, EntryBuilder
from tollgate_audit_log.verify import verify_database
from tollgate_core.kafka import producer_config
from tollgate_core.kafka_auth import kafka_security
from tollgate_core.topics import Topics

ROWS = 200_000
STREAM = "inference"


class Msg(NamedTuple):
    value: bytes
    topic: str
    partition: int
    offset: int
    headers: Any = None


@pytest.fixture(scope="module")
async def database_url() -> AsyncIterator[str]:
    async with fresh_database("forge") as dsn:
        yield dsn


def inference_messages(first: int, count: int) -> list[Msg]:
    return [
        Msg(
            orjson.dumps(
                envelope(
                    "inference",
                    "inference.log.v1",
                    {"request_id": f"live-{i}", "model": "m", "version": "1", "inputs": {}, "outputs": {}},
                )
            ),
            "tollgate.inference.log.v1",
            0,
            i,
        )
        for i in range(first, first + count)
    ]


async def test_forged_row_at_head_plus_one_is_tampering_and_never_signed(
    database_url: str, bootstrap: str, namespace: str
) -> None:
    settings = AuditLogSettings(database_url=database_url)
    role_problem = await ensure_writer_role()
    await prepare_database(settings)
    dsn = settings.writer_dsn() if role_problem is None else database_url
    signer = Signer(Ed25519PrivateKey.generate())
    topics = Topics(namespace)
    producer = AIOKafkaProducer(**producer_config(bootstrap, "test-audit-forge"))
    await producer.start()
    conn = await asyncpg.connect(dsn)
    owner = await asyncpg.connect(database_url)
    try:
        writer = await fill(conn, STREAM, ROWS)
        await writer.register_key(signer)
        worker = StreamWorker(
            builder=EntryBuilder(next(s for s in STREAMS if s.name == STREAM)),
            topic=topics.name("inference.log"),
            group_id="unused",
            dlq_topic=topics.dlq("audit-log"),
            bootstrap=bootstrap,
            client_id="test-audit-forge",
            connect=lambda: asyncpg.connect(dsn),
            signer=signer,
            producer=producer,
            metrics=Metrics(CollectorRegistry()),
            checkpoint_max_rows=100_000,
            alerts_topic=topics.name("monitor.alerts"),
        )
        worker.writer = writer
        assert [cp.statement.last_seq for cp in await worker.checkpoint()] == [100_000, ROWS]

        # The owner forges a correctly hashed, correctly linked row at head + 1.
        forged_entry = inference_entry(ROWS + 1)
        forged, _, _ = chain_records(STREAM, [forged_entry], ROWS, writer.head_hash, datetime.now(UTC))
        await owner.copy_records_to_table("audit_events", records=forged, columns=COPY_COLUMNS)

        await worker.handle(inference_messages(0, 50))  # type: ignore[arg-type]
        assert worker.damaged is not None and "foreign_rows" in worker.damaged
        rows = await owner.fetch(
            "SELECT seq, event_id::text AS id, event_type, envelope FROM audit_events WHERE stream = $1 AND seq > $2 "
            "ORDER BY seq",
            STREAM,
            ROWS,
        )
        assert rows[0]["id"] == forged_entry.event_id  # left in place, as evidence
        assert rows[1]["event_type"] == tamper.DAMAGE_EVENT
        record = orjson.loads(rows[1]["envelope"])["payload"]
        assert (record["kind"], record["expected_seq"], record["found_seq"]) == (
            "foreign_rows",
            ROWS,
            ROWS + 1,
        )
        assert [r["event_type"] for r in rows[2:]] == ["inference"] * 50  # nothing consumed is lost

        # Nothing is signed while the damage is not acknowledged: the forged row stays unsigned.
        assert await worker.checkpoint() == []
        assert (
            await owner.fetchval("SELECT max(last_seq) FROM audit_checkpoints WHERE stream = $1", STREAM)
            == ROWS
        )
        await worker.handle(inference_messages(50, 10))  # type: ignore[arg-type]
        assert await worker.checkpoint() == []

        alert = await first_message(bootstrap, topics.name("monitor.alerts"))
        assert alert["producer"] == "audit-log" and alert["payload"]["kind"] == "audit_tampering"
        assert alert["payload"]["version"] == STREAM and alert["payload"]["severity"] == "critical"

        # An auditor acknowledges (through the API in production; the same call here): signing resumes,
        # after the acknowledgement is in the trail.
        acks = await tamper.acknowledge(owner, STREAM, "auditor-alice", "forged row investigated, ticket 42")
        assert len(acks) == 1
        made = await worker.checkpoint()
        assert made and made[0].statement.first_seq == ROWS + 1 and worker.damaged is None
        ack_row = await owner.fetchrow(
            "SELECT seq, envelope FROM audit_events WHERE stream = $1 AND event_type = $2",
            STREAM,
            tamper.ACK_EVENT,
        )
        assert orjson.loads(ack_row["envelope"])["payload"]["acknowledged_by"] == "auditor-alice"
        assert made[-1].statement.last_seq == ack_row["seq"]

        report = await verify_database(owner, streams=[STREAM], trusted={signer.key_id: signer.public_key})
        assert report.ok, report.summary()
    finally:
        await conn.close()
        await owner.close()
        await producer.stop()


async def first_message(bootstrap: str, topic: str, timeout: float = 30) -> dict[str, Any]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, **kafka_security(), auto_offset_reset="earliest"
    )
    await consumer.start()
    try:

        async def first() -> dict[str, Any] | None:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    assert record.value is not None
                    return dict(orjson.loads(record.value))
            return None

        found: dict[str, Any] = await eventually(
            first, timeout=timeout, interval=0, what=f"a message on {topic}"
        )
        return found
    finally:
        await consumer.stop()


async def test_a_corrupted_stored_checkpoint_does_not_wedge_the_writer_after_acknowledgement(
    bootstrap: str, namespace: str
) -> None:
    """The owner corrupts the stored tree (frontier) of the last checkpoint while no writer runs. Taking
    the stream over finds it (damage recorded, nothing signed); once an auditor acknowledges, the writer
    signs the rows after that checkpoint (never its seqs again: that was a unique-key conflict, retried
    forever) and the trail verifies."""
    async with fresh_database("corrupt_checkpoint") as dsn:
        settings = AuditLogSettings(database_url=dsn)
        await prepare_database(settings)
        signer = Signer(Ed25519PrivateKey.generate())
        conn = await asyncpg.connect(dsn)
        try:
            writer = await fill(conn, STREAM, 3000)
            await writer.register_key(signer)
            while await writer.checkpoint(signer, max_rows=1000) is not None:
                pass
        finally:
            await conn.close()  # the writer is gone; its lock with it
        owner = await asyncpg.connect(dsn)
        try:
            async with owner.transaction():
                await owner.execute("ALTER TABLE audit_checkpoints DISABLE TRIGGER USER")
                await owner.execute(
                    "UPDATE audit_checkpoints SET frontier = $2 WHERE stream = $1 AND last_seq = 3000",
                    STREAM,
                    bytes(32) * (3000).bit_count(),
                )
                await owner.execute("ALTER TABLE audit_checkpoints ENABLE TRIGGER USER")
        finally:
            await owner.close()

        worker = StreamWorker(
            builder=EntryBuilder(next(s for s in STREAMS if s.name == STREAM)),
            topic=Topics(namespace).name("inference.log"),
            group_id="unused",
            dlq_topic=Topics(namespace).dlq("audit-log"),
            bootstrap=bootstrap,
            client_id="test-audit-corrupt-checkpoint",
            connect=lambda: asyncpg.connect(dsn),
            signer=signer,
            producer=None,  # type: ignore[arg-type]  # no alerts topic: nothing is sent
            metrics=Metrics(CollectorRegistry()),
            checkpoint_max_rows=100_000,
        )
        conn = await asyncpg.connect(dsn)
        owner = await asyncpg.connect(dsn)
        try:
            await worker.take_over(conn)
            assert worker.damaged is not None and "checkpoint_frontier" in worker.damaged
            await worker.handle(inference_messages(10_000, 20))  # type: ignore[arg-type]
            assert await worker.checkpoint() == []  # not acknowledged: nothing signed

            await tamper.acknowledge(owner, STREAM, "auditor-alice", "stored tree corrupted, ticket 43")
            made = await worker.checkpoint()
            assert made and made[0].statement.first_seq == 3001 and worker.damaged is None
            assert worker.writer is not None and made[-1].statement.last_seq == worker.writer.head_seq
            report = await verify_database(
                owner, streams=[STREAM], trusted={signer.key_id: signer.public_key}
            )
            assert report.ok, report.summary()
        finally:
            await conn.close()
            await owner.close()


async def test_a_row_forged_at_head_plus_one_while_no_writer_runs_is_found_and_never_signed(
    bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    """The writer stops with rows not signed yet (its last few seconds); while no writer runs, the owner
    appends a correctly hashed row at head + 1. The verifier names that exact seq from the writer's journal
    of unsealed heads in the witness directory, and the next writer records the damage instead of signing
    the forged row; it signs again once an auditor acknowledges."""
    async with fresh_database("forge_offline") as dsn:
        await prepare_database(AuditLogSettings(database_url=dsn))
        signer = Signer(Ed25519PrivateKey.generate())
        trusted = {signer.key_id: signer.public_key}
        witness = WitnessDir(tmp_path / "witness")

        def worker_for() -> StreamWorker:
            return StreamWorker(
                builder=EntryBuilder(next(s for s in STREAMS if s.name == STREAM)),
                topic=Topics(namespace).name("inference.log"),
                group_id="unused",
                dlq_topic=Topics(namespace).dlq("audit-log"),
                bootstrap=bootstrap,
                client_id="test-audit-forge-offline",
                connect=lambda: asyncpg.connect(dsn),
                signer=signer,
                producer=None,  # type: ignore[arg-type]  # no alerts topic: nothing is sent
                metrics=Metrics(CollectorRegistry()),
                publisher=Publisher(witness, None, None),
            )

        first = worker_for()
        conn = await asyncpg.connect(dsn)
        try:
            await (await first.take_over(conn)).register_key(signer)
            await first.handle(inference_messages(20_000, 300))  # type: ignore[arg-type]
            assert [cp.statement.last_seq for cp in await first.checkpoint()] == [300]
            for part in range(3):  # three batches the writer wrote but did not sign before it stopped
                await first.handle(inference_messages(20_300 + 20 * part, 20))  # type: ignore[arg-type]
            assert first.writer is not None and first.writer.head_seq == 360
            head_hash = first.writer.head_hash
        finally:
            await conn.close()

        owner = await asyncpg.connect(dsn)
        try:
            forged, _, _ = chain_records(STREAM, [inference_entry(99_999)], 360, head_hash, datetime.now(UTC))
            await owner.copy_records_to_table("audit_events", records=forged, columns=COPY_COLUMNS)

            published = {STREAM: witness.heads(STREAM)}
            report = await verify_database(
                owner, streams=[STREAM], trusted=trusted, published=published, known_heads=witness.known_heads
            )
            assert not report.ok and report.first_bad is not None
            assert (report.first_bad.seq, report.first_bad.kind) == (361, "foreign_rows"), report.summary()
            without = await verify_database(owner, streams=[STREAM], trusted=trusted, published=published)
            assert without.ok  # what the journal adds: without it the forged row passes as unsealed

            second = worker_for()
            conn = await asyncpg.connect(dsn)
            try:
                await second.take_over(conn)
                assert second.damaged is not None and "foreign_rows" in second.damaged
                assert await second.checkpoint() == []  # nothing signed, the forged row least of all
                assert (
                    await owner.fetchval(
                        "SELECT max(last_seq) FROM audit_checkpoints WHERE stream = $1", STREAM
                    )
                    == 300
                )
                damage = await owner.fetchrow(
                    "SELECT envelope FROM audit_events WHERE stream = $1 AND event_type = $2",
                    STREAM,
                    tamper.DAMAGE_EVENT,
                )
                record = orjson.loads(damage["envelope"])["payload"]
                assert (record["kind"], record["expected_seq"], record["found_seq"]) == (
                    "foreign_rows",
                    360,
                    361,
                )
            finally:
                await conn.close()

            third = worker_for()  # a restart before the acknowledgement: the same damage, not a new one
            conn = await asyncpg.connect(dsn)
            try:
                await third.take_over(conn)
                assert (
                    await owner.fetchval(
                        "SELECT count(*) FROM audit_events WHERE stream = $1 AND event_type = $2",
                        STREAM,
                        tamper.DAMAGE_EVENT,
                    )
                    == 1
                )
                assert await third.checkpoint() == []
                await tamper.acknowledge(owner, STREAM, "auditor-alice", "offline forgery investigated")
                made = await third.checkpoint()
                assert made and made[0].statement.first_seq == 301 and third.damaged is None
            finally:
                await conn.close()
        finally:
            await owner.close()
