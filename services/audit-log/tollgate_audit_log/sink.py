"""One stream's pipeline: take the stream's lock, then consume its topic into the chain.

Scale-out. Each stream is one chain with one writer, so a stream is the unit of parallelism: every replica
runs a worker per stream, each worker first waits for its stream's advisory lock, and only the holder
joins the stream's consumer group (``<ns>.audit-log.<stream>``) and consumes. With two replicas, each
stream has an active writer on one and a standby on the other; the standby takes over within moments of
the active one's database session ending (crash, stop, network), resuming from the committed offsets and
the chain head in the table. Several replicas therefore spread *streams*, not partitions of one stream:
a stream's throughput is one writer's (COPY keeps that well above the scorer's rate).

Delivery: consume → append (one transaction) → commit offsets; a crash in between redelivers the batch and
the append skips event ids already recorded. Messages that can never be recorded go to ``dlq.audit-log``
with the source topic, partition, offset and reason, before the offsets are committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tollgate_audit_log import SERVICE
from tollgate_audit_log.batch import record_batch
from tollgate_audit_log.chain import (
    ChainDamaged,
    ChainMoved,
    ChainTampered,
    ChainWriter,
    Checkpoint,
    LockLost,
    statement_of,
)
from tollgate_audit_log.consumers import stream_consumer
from tollgate_audit_log.publish import Publisher
from tollgate_audit_log.signing import Signer
from tollgate_audit_log.streams import EntryBuilder
from tollgate_audit_log.tamper import (
    Damage,
    ack_entry,
    ack_event_id,
    acknowledgements,
    damage_alert,
    damage_entry,
    open_damage,
    record_damage,
)
from tollgate_core.kafka import (
    DLQ_ERROR,
    BatchSink,
    OutRecord,
    TransientError,
    dead_letter,
)
from tollgate_core.runtime import build_sink
from tollgate_core.telemetry import header_value, record_consumed_span

log = logging.getLogger(__name__)

Connect = Callable[[], Awaitable[asyncpg.Connection]]


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.rows = Counter(
            "tollgate_audit_rows", "Rows appended to the audit trail", ["stream"], registry=registry
        )
        self.duplicates = Counter(
            "tollgate_audit_duplicates", "Redelivered events skipped", ["stream"], registry=registry
        )
        self.dead_letters = Counter(
            "tollgate_audit_dead_letters", "Messages sent to the DLQ", ["stream"], registry=registry
        )
        self.head = Gauge(
            "tollgate_audit_head_seq", "Last seq of each chain written here", ["stream"], registry=registry
        )
        self.checkpoints = Counter(
            "tollgate_audit_checkpoints", "Signed checkpoints", ["stream"], registry=registry
        )
        self.damage = Counter(
            "tollgate_audit_tampering",
            "Chain movements the writer did not make (the stream is damaged until acknowledged)",
            ["stream"],
            registry=registry,
        )
        self.damaged = Gauge(
            "tollgate_audit_chain_damaged",
            "1 while the stream is damaged (tampering or a failed chain check) and not acknowledged",
            ["stream"],
            registry=registry,
        )
        self.batch_s = Histogram(
            "tollgate_audit_batch_seconds",
            "Time to record one consumed batch (parse, hash, insert)",
            ["stream"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )


class StreamWorker:
    def __init__(
        self,
        *,
        builder: EntryBuilder,
        topic: str,
        group_id: str,
        dlq_topic: str,
        bootstrap: str,
        client_id: str,
        connect: Connect,
        signer: Signer,
        producer: AIOKafkaProducer,
        metrics: Metrics,
        batch_max_records: int = 5000,
        checkpoint_rows: int = 10_000,
        checkpoint_max_rows: int = 100_000,
        tracer: trace.Tracer | None = None,
        alerts_topic: str | None = None,
        publisher: Publisher | None = None,
    ) -> None:
        self.stream = builder.spec.name
        self._tracer = tracer or trace.get_tracer("tollgate.audit_log")
        self.builder = builder
        self.topic = topic
        self.group_id = group_id
        self.dlq_topic = dlq_topic
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._connect = connect
        self._signer = signer
        self._producer = producer
        self._metrics = metrics
        self._batch_max_records = batch_max_records
        self.checkpoint_rows = checkpoint_rows
        self.checkpoint_max_rows = checkpoint_max_rows
        self.writer: ChainWriter | None = None
        self.sink: BatchSink | None = None
        self.checkpointed_seq = 0
        self.last_checkpoint_at = time.monotonic()
        self.damaged: str | None = None
        metrics.damaged.labels(self.stream).set_function(lambda: 1.0 if self.damaged else 0.0)
        self.alerts_topic = alerts_topic
        self.publisher = publisher
        self._unpublished: list[Checkpoint] = []
        self.unsealed_since: float | None = None  # when the oldest row no checkpoint covers was appended
        self._pending_alerts: list[Damage] = []
        self._acks_recorded = 0
        self.state = "starting"
        self._lost = asyncio.Event()
        self._stopping = False

    async def run(self) -> None:
        """Forever: take the lock (standby while another replica holds it), consume until the lock is lost."""
        backoff = 0.5
        while not self._stopping:
            conn: asyncpg.Connection | None = None
            try:
                conn = await self._connect()
                self.state = "standby"
                writer = await self.take_over(conn)
                self._metrics.head.labels(self.stream).set(writer.head_seq)
                self.state = "active"
                log.info("stream %s: writer active at seq %d", self.stream, writer.head_seq)
                await self._consume()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, KafkaError) as exc:
                log.warning(
                    "stream %s: %s: %s; retrying in %.1f s", self.stream, type(exc).__name__, exc, backoff
                )
            finally:
                self.state = "stopped" if self.state == "active" else self.state
                self.writer = None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            if self._stopping:
                break
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
        self.state = "stopped"

    async def take_over(self, conn: asyncpg.Connection) -> ChainWriter:
        """Take the stream's lock on ``conn`` (waiting while another replica holds it) and resume from the
        table; tampering found on the way (a broken tail, a stored checkpoint that is not the signed one,
        a database behind its published heads) is recorded, and the writer goes on after the rows found."""
        witness = self.publisher.witness if self.publisher is not None else None
        writer = ChainWriter(conn, self.stream, journal=witness)
        try:
            await writer.acquire()
        except ChainTampered as exc:  # found when taking over: the last checkpoint or the rows after it
            await self._tampered(writer, exc)
        try:
            await self._compare_with_witness(writer)
        except ChainTampered as exc:  # the database is behind (or beside) what was published
            await self._tampered(writer, exc)
        self.checkpointed_seq = writer.sealed_seq
        self.writer = writer
        return writer

    async def stop(self) -> None:
        """Leave the consumer group cleanly (a standby elsewhere takes over at once) and stop the loop."""
        self._stopping = True
        self._lost.set()
        if self.sink is not None:
            await self.sink.stop()

    async def _consume(self) -> None:
        self._lost.clear()
        if self._stopping:
            return
        spec = stream_consumer(
            self.builder.spec,
            topic=self.topic,
            group=self.group_id,
            dlq=self.dlq_topic,
            max_records=self._batch_max_records,
        )
        sink = build_sink(spec.bind(self.handle), bootstrap=self._bootstrap, client_id=self._client_id)
        await sink.start()
        self.sink = sink
        running = asyncio.create_task(sink.run(), name=f"audit-sink-{self.stream}")
        lost = asyncio.create_task(self._lost.wait(), name=f"audit-lock-{self.stream}")
        try:
            await asyncio.wait({running, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await sink.stop()
            lost.cancel()
            for task in (running, lost):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self.sink = None
        if not self._stopping:
            log.warning("stream %s: writer lock lost; waiting to take it again", self.stream)

    async def handle(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Append one consumed batch; called by BatchSink, which commits the offsets after it returns."""
        writer = self.writer
        if writer is None:
            self._lost.set()
            raise LockLost(f"stream {self.stream}: no writer")
        started = time.perf_counter()
        started_ns = time.time_ns()
        try:
            try:
                outcome = await record_batch(writer, self.builder, records)
            except ChainTampered as exc:
                await self._tampered(writer, exc)
                outcome = await record_batch(writer, self.builder, records)  # the parts stored are skipped
        except (LockLost, ChainMoved):
            self._lost.set()
            raise
        self._metrics.batch_s.labels(self.stream).observe(time.perf_counter() - started)
        if outcome.rejected:
            await self._dead_letter(
                [dead_letter(rec, self.dlq_topic, SERVICE, why) for rec, why in outcome.rejected]
            )
        self._trace_recorded(records, outcome.rejected, started_ns)
        self._metrics.rows.labels(self.stream).inc(outcome.inserted)
        self._metrics.duplicates.labels(self.stream).inc(outcome.duplicates)
        self._metrics.head.labels(self.stream).set(writer.head_seq)
        if outcome.inserted and self.unsealed_since is None:
            self.unsealed_since = time.monotonic()
        if writer.head_seq - self.checkpointed_seq >= self.checkpoint_rows:
            try:
                await self.checkpoint()
            except Exception as exc:  # the batch is recorded; signing failed, which no record caused
                raise TransientError(f"stream {self.stream}: checkpoint failed: {exc!r}") from exc

    def _trace_recorded(
        self, records: list[ConsumerRecord[bytes, bytes]], rejected: list[Any], started_ns: int
    ) -> None:
        """One span per recorded message of a sampled trace, from the batch's start to its commit."""
        refused = {id(rec) for rec, _ in rejected}
        attributes: dict[str, str | int] = {"tollgate.audit.stream": self.stream}
        for rec in records:
            if rec.headers and id(rec) not in refused:
                record_consumed_span(self._tracer, "audit record", rec.headers, started_ns, attributes)

    async def _dead_letter(self, dead: list[OutRecord]) -> None:
        futures = [await self._producer.send(d.topic, d.value, key=d.key, headers=d.headers) for d in dead]
        await asyncio.gather(*futures)
        self._metrics.dead_letters.labels(self.stream).inc(len(dead))
        for d in dead:
            reason = (header_value(d.headers, DLQ_ERROR) or b"").decode(errors="replace")
            log.error("stream %s: message sent to %s: %s", self.stream, d.topic, reason)

    async def _tampered(self, writer: ChainWriter, exc: ChainTampered) -> None:
        """The chain moved in a way this writer did not move it: record the damage (table, the stream
        itself, monitor.alerts) and go on appending after the rows found; nothing is signed until an auditor
        acknowledges."""
        log.error("stream %s: TAMPERING (%s): %s", self.stream, exc.kind, exc.detail)
        async with writer.mutex:
            damage = await record_damage(writer.conn, exc)
            await writer.adopt_table_head()
        self.damaged = f"{exc.kind}: {exc.detail}"
        self._metrics.damage.labels(self.stream).inc()
        await writer.append([damage_entry(damage, exc)])
        self._pending_alerts.append(damage)
        await self._send_alerts()

    async def _send_alerts(self) -> None:
        if self.alerts_topic is None:
            self._pending_alerts.clear()
            return
        while self._pending_alerts:
            damage = self._pending_alerts[0]
            alert = damage_alert(damage)
            try:
                await (
                    await self._producer.send(
                        self.alerts_topic, alert.model_dump_json().encode(), key=alert.payload.model.encode()
                    )
                )
            except KafkaError as exc:  # retried at the next checkpoint round; the damage is on record
                log.warning("stream %s: tampering alert not sent yet: %s", self.stream, exc)
                return
            self._pending_alerts.pop(0)

    async def damage_state(self, writer: ChainWriter) -> list[Damage]:
        """Open damage of the stream; acknowledgements not yet in the trail are appended to it first."""
        async with writer.mutex:
            open_ = await open_damage(writer.conn, self.stream)
            acks = await acknowledgements(writer.conn, self.stream)
            present: set[str] = set()
            if len(acks) > self._acks_recorded:
                present = {
                    r[0]
                    for r in await writer.conn.fetch(
                        "SELECT event_id::text FROM audit_events WHERE event_id = ANY($1::uuid[])",
                        [ack_event_id(self.stream, a.id) for a in acks],
                    )
                }
        if len(acks) > self._acks_recorded:
            missing = [
                ack_entry(self.stream, a) for a in acks if ack_event_id(self.stream, a.id) not in present
            ]
            if missing:
                await writer.append(missing)
            self._acks_recorded = len(acks)
        return open_

    async def checkpoint(self) -> list[Checkpoint]:
        """Seal everything written since the last checkpoint (in pieces of at most checkpoint_max_rows),
        unless the stream is damaged and not acknowledged."""
        writer = self.writer
        made: list[Checkpoint] = []
        if writer is None:
            return made
        try:
            await self._send_alerts()
            damage = await self.damage_state(writer)
            if damage:
                self.damaged = "; ".join(f"{d.kind}: {d.detail}" for d in damage) + " (not acknowledged)"
                self.last_checkpoint_at = time.monotonic()
                return made
            self.damaged = None
            while writer.head_seq > self.checkpointed_seq:
                cp = await writer.checkpoint(self._signer, max_rows=self.checkpoint_max_rows)
                if cp is None:
                    break
                made.append(cp)
                self._unpublished.append(cp)
                self.checkpointed_seq = cp.statement.last_seq
                self._metrics.checkpoints.labels(self.stream).inc()
                log.info(
                    "stream %s: checkpoint %d seals seq %d..%d",
                    self.stream,
                    cp.id,
                    cp.statement.first_seq,
                    cp.statement.last_seq,
                )
        except ChainTampered as exc:
            await self._tampered(writer, exc)
        except ChainDamaged as exc:
            self.damaged = str(exc)
            log.error("%s", exc)
        except LockLost:
            self._lost.set()
            raise
        self.last_checkpoint_at = time.monotonic()
        if writer.head_seq <= self.checkpointed_seq:
            self.unsealed_since = None
        await self._publish()
        return made

    async def _publish(self) -> None:
        """Publish signed heads in order; one that fails stays pending for the next round."""
        if self.publisher is None:
            self._unpublished.clear()
            return
        while self._unpublished:
            cp = self._unpublished[0]
            try:
                await self.publisher.publish(cp)
            except (OSError, KafkaError) as exc:
                log.warning("stream %s: tree head not published yet: %s", self.stream, exc)
                return
            self._unpublished.pop(0)
            writer = self.writer
            if (
                writer is not None
                and writer.journal is not None
                and writer.locked
                and not writer.conn.is_closed()
            ):
                # Only once the head is published: a verifier that read the journal without these lines
                # finds the head in the witness directory instead. Under the writer's lock: an append
                # notes its head in the same file.
                async with writer.mutex:
                    writer.journal.sealed(self.stream, cp.statement.last_seq, cp.statement.head_hash)

    async def _compare_with_witness(self, writer: ChainWriter) -> None:
        """At takeover: the last head in the witness directory must be the database's last checkpoint, or an
        earlier one (heads signed but not published yet are published now). A published head the database
        no longer has means rows and checkpoints were removed: tampering."""
        witness = self.publisher.witness if self.publisher is not None else None
        if witness is None:
            return
        heads = await asyncio.to_thread(witness.heads, self.stream)
        ours = writer.last_statement
        if not heads:
            published_to = 0
        else:
            last = heads[-1].statement
            published_to = last.last_seq
            if ours is None or ours.last_seq < last.last_seq:
                raise ChainTampered(
                    self.stream,
                    "published_head_missing",
                    (last.last_seq, last.tree_root or b""),
                    (ours.last_seq if ours else 0, (ours.tree_root or b"") if ours else b""),
                    f"the witness holds a signed head at seq {last.last_seq}, the database's last checkpoint "
                    f"ends at seq {ours.last_seq if ours else 0}",
                )
            mine = [
                cp
                for cp in await checkpoints_after(writer, last.last_seq - 1)
                if cp.statement.last_seq == last.last_seq
            ]
            if not mine or mine[0].statement.digest() != last.digest():
                raise ChainTampered(
                    self.stream,
                    "published_head_differs",
                    (last.last_seq, last.tree_root or b""),
                    (last.last_seq, (mine[0].statement.tree_root or b"") if mine else b""),
                    f"the database's checkpoint ending at seq {last.last_seq} is not the published one",
                )
        self._unpublished = await checkpoints_after(writer, published_to)
        await self._publish()

    def checkpoint_due(self, interval_s: float, tick_s: float = 0.0) -> bool:
        """Due when ``checkpoint_rows`` rows wait, or when the oldest unsealed row would be older than
        ``interval_s`` by the next tick: so no row stays unsigned longer than the interval."""
        writer = self.writer
        if writer is None or not writer.locked or writer.head_seq <= self.checkpointed_seq:
            self.unsealed_since = None
            return False
        now = time.monotonic()
        if self.unsealed_since is None:
            self.unsealed_since = now
        return (
            writer.head_seq - self.checkpointed_seq >= self.checkpoint_rows
            or now - self.unsealed_since + tick_s >= interval_s
        )


async def checkpoints_after(writer: ChainWriter, seq: int) -> list[Checkpoint]:
    """The stream's tree-head checkpoints ending after ``seq``, in order, as stored."""
    async with writer.mutex:
        rows = await writer.conn.fetch(
            "SELECT * FROM audit_checkpoints WHERE stream = $1 AND last_seq > $2 AND tree_root IS NOT NULL "
            "ORDER BY last_seq",
            writer.stream,
            seq,
        )
    return [
        Checkpoint(
            int(r["id"]),
            statement_of(r),
            bytes(r["signature"]),
            tuple(bytes(r["consistency"])[i : i + 32] for i in range(0, len(r["consistency"] or b""), 32)),
        )
        for r in rows
    ]
