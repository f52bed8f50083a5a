"""Kafka clients with the platform's delivery rules, and the exactly-once stream stage.

* Producers: ``acks=all`` with idempotence on (``producer_config``).
* ``TransactionalStage``: consume a batch, transform it, then produce every output record *and* the consumed
  offsets in one Kafka transaction. A crash at any point either commits both or neither, so a restarted stage
  neither loses an input nor publishes an output twice (to ``read_committed`` readers). Poison messages are
  outputs too: the handler turns them into DLQ records, committed in the same transaction.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced
from aiokafka.structs import ConsumerRecord

from tollgate_core.settings import ServiceSettings
from tollgate_core.waiting import wait_event

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]

# Header names on dead-letter records.
DLQ_SOURCE_TOPIC = "tollgate-dlq-source-topic"
DLQ_SOURCE_PARTITION = "tollgate-dlq-source-partition"
DLQ_SOURCE_OFFSET = "tollgate-dlq-source-offset"
DLQ_ERROR_TYPE = "tollgate-dlq-error-type"
DLQ_ERROR = "tollgate-dlq-error"
DLQ_SERVICE = "tollgate-dlq-service"
DLQ_FAILED_AT = "tollgate-dlq-failed-at"


def producer_config(bootstrap: str, client_id: str, **overrides: Any) -> dict[str, Any]:
    """The platform's producer settings: every write acknowledged by all in-sync replicas, idempotent."""
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "compression_type": None,
    }
    config.update(overrides)
    return config


@dataclass(slots=True)
class OutRecord:
    topic: str
    value: bytes
    key: bytes | None = None
    headers: Headers = field(default_factory=list)


def dead_letter(
    record: ConsumerRecord[bytes, bytes], dlq_topic: str, service: str, error: BaseException | str
) -> OutRecord:
    """The original message, unchanged, bound for the DLQ with headers that say where it came from and why."""
    kind = type(error).__name__ if isinstance(error, BaseException) else "Rejected"
    reason = str(error)[:2000] or kind
    headers = list(record.headers or ())
    headers += [
        (DLQ_SOURCE_TOPIC, record.topic.encode()),
        (DLQ_SOURCE_PARTITION, str(record.partition).encode()),
        (DLQ_SOURCE_OFFSET, str(record.offset).encode()),
        (DLQ_ERROR_TYPE, kind.encode()),
        (DLQ_ERROR, reason.encode("utf-8", "replace")),
        (DLQ_SERVICE, service.encode()),
        (DLQ_FAILED_AT, str(int(time.time() * 1000)).encode()),
    ]
    return OutRecord(dlq_topic, record.value or b"", record.key, headers)


def _murmur2(data: bytes) -> int:
    """Kafka's default key hash (murmur2, seed 0x9747B28C), as the Java client computes it."""
    m = 0x5BD1E995
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    end = length & ~3
    for (k,) in struct.iter_unpack("<I", data[:end]):
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = length & 3
    if tail == 3:
        h ^= data[end + 2] << 16
    if tail >= 2:
        h ^= data[end + 1] << 8
    if tail >= 1:
        h ^= data[end]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


murmur2 = functools.lru_cache(maxsize=1 << 17)(_murmur2)  # entity keys recur: hash each once


async def rewind_to_committed(consumer: AIOKafkaConsumer) -> None:
    """Seek every assigned partition back to its committed offset (the start when none is committed)."""
    for tp in consumer.assignment():
        committed = await consumer.committed(tp)
        if committed is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, committed)


def read_committed_consumer(
    bootstrap: str, group_id: str, client_id: str, **overrides: Any
) -> AIOKafkaConsumer:
    """A group consumer that never auto-commits and reads only committed transactional data."""
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "group_id": group_id,
        "client_id": client_id,
        "enable_auto_commit": False,  # offsets are committed only after the work is durable
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
    }
    config.update(overrides)
    return AIOKafkaConsumer(**config)


class PartitionedWriter:
    """Appends records straight into per-partition batches (cheaper than one future per ``send``).

    Partitions are chosen with Kafka's default murmur2 key hash, so keys land where any other client
    would put them and one entity's events stay in order.
    """

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._partitions: dict[str, list[int]] = {}

    async def _partitions_for(self, topic: str) -> list[int]:
        parts = self._partitions.get(topic)
        if parts is None:
            await self._producer.client._wait_on_metadata(topic)
            parts = sorted(self._producer.client.cluster.partitions_for_topic(topic) or ())
            if not parts:
                raise KafkaError(f"topic {topic} has no partitions")
            self._partitions[topic] = parts
        return parts

    async def write(self, records: Sequence[OutRecord]) -> list[asyncio.Future[Any]]:
        builders: dict[tuple[str, int], Any] = {}
        futures: list[asyncio.Future[Any]] = []
        now_ms = int(time.time() * 1000)
        known = self._partitions
        for rec in records:
            parts = known.get(rec.topic) or await self._partitions_for(rec.topic)
            if rec.key is None:
                partition = parts[random.randrange(len(parts))]
            else:
                partition = parts[(murmur2(rec.key) & 0x7FFFFFFF) % len(parts)]
            slot = (rec.topic, partition)
            builder = builders.get(slot)
            if builder is None:
                builder = builders[slot] = self._producer.create_batch()
            if builder.append(key=rec.key, value=rec.value, timestamp=now_ms, headers=rec.headers) is None:
                futures.append(await self._producer.send_batch(builder, rec.topic, partition=partition))
                builder = builders[slot] = self._producer.create_batch()
                if (
                    builder.append(key=rec.key, value=rec.value, timestamp=now_ms, headers=rec.headers)
                    is None
                ):
                    raise KafkaError(f"record of {len(rec.value)} bytes does not fit in a batch")
        for (topic, partition), builder in builders.items():
            if builder.record_count():
                futures.append(await self._producer.send_batch(builder, topic, partition=partition))
        return futures


StageHandler = Callable[[list[ConsumerRecord[bytes, bytes]]], Awaitable[Sequence[OutRecord]]]


@dataclass
class StageStats:
    consumed: int = 0
    produced: int = 0
    batches: int = 0
    aborted: int = 0
    last_batch_at: float = 0.0


class _RevokeGuard(ConsumerRebalanceListener):  # type: ignore[misc]
    """On a rebalance: let the transaction in flight finish and throw away work not yet committed, so offsets
    are never committed for a partition this replica no longer owns."""

    def __init__(self, stage: TransactionalStage) -> None:
        self._stage = stage

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._stage._settle(discard_next=True)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None


Batch = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


def _records_and_offsets(
    batch: Batch,
) -> tuple[list[ConsumerRecord[bytes, bytes]], dict[TopicPartition, int]]:
    """A fetched batch's records in one list, and the offsets to commit once they are done."""
    records = [rec for recs in batch.values() for rec in recs]
    return records, {tp: recs[-1].offset + 1 for tp, recs in batch.items()}


class _BatchLoop:
    """What a batch consumer loop keeps: its name, counters, handler, retry backoff and stop signal, and
    what it does after a batch (count it) or a failure (rewind, back off)."""

    _consumer: AIOKafkaConsumer

    def __init__(
        self, name: str, handler: Any, max_records: int, retry_backoff_s: float, max_backoff_s: float
    ) -> None:
        self.name = name
        self.stats = StageStats()
        self.healthy = False
        self._handler = handler
        self._max_records = max_records
        self._retry_backoff_s = retry_backoff_s
        self._max_backoff_s = max_backoff_s
        self._stopping = asyncio.Event()

    async def _sleep(self, seconds: float) -> None:
        await wait_event(self._stopping, seconds)

    def _count(self, consumed: int, produced: int = 0) -> None:
        self.stats.consumed += consumed
        self.stats.produced += produced
        self.stats.batches += 1
        self.stats.last_batch_at = time.time()

    async def _recover(self, backoff: float) -> float:
        """After a failed batch (called while handling its exception): count and log it, rewind to the
        committed offsets, wait ``backoff`` (or until stopped); returns the next, doubled backoff."""
        self.stats.aborted += 1
        log.exception("%s: batch failed, rewinding to the committed offsets", self.name)
        await rewind_to_committed(self._consumer)
        await self._sleep(backoff)
        return min(backoff * 2, self._max_backoff_s)


class TransactionalStage(_BatchLoop):
    """consume → transform → produce + commit offsets, atomically, in batches.

    Delivery: exactly-once into downstream ``read_committed`` consumers. ``transactional_id`` must be stable
    per replica (``<service>-<instance_id>``) so a restarted replica fences its predecessor's open transaction.

    Throughput: the handler for batch *k+1* (parsing, database work) runs while the transaction of batch *k*
    commits. If that commit fails, batch *k+1*'s outputs are discarded with it and the consumer rewinds to the
    committed offsets; handlers must therefore tolerate seeing a batch again (ingest's claims do).
    """

    def __init__(
        self,
        *,
        name: str,
        bootstrap: str,
        source_topics: Sequence[str],
        group_id: str,
        transactional_id: str,
        handler: StageHandler,
        client_id: str,
        max_records: int = 5000,
        fetch_max_wait_ms: int = 50,
        retry_backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
    ) -> None:
        super().__init__(name, handler, max_records, retry_backoff_s, max_backoff_s)
        self._source_topics = list(source_topics)
        self._group_id = group_id
        self._in_flight: asyncio.Task[None] | None = None
        self._discard_next = False
        self._looping = asyncio.Event()
        self._loop_done = asyncio.Event()
        # Offsets are committed inside the output transaction only.
        self._consumer = read_committed_consumer(
            bootstrap,
            group_id,
            client_id,
            fetch_max_wait_ms=fetch_max_wait_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
        )
        self._producer = AIOKafkaProducer(
            **producer_config(
                bootstrap, client_id, transactional_id=transactional_id, transaction_timeout_ms=30000
            )
        )
        self._writer = PartitionedWriter(self._producer)

    @classmethod
    def from_spec(
        cls, spec: StageSpec, settings: ServiceSettings, handler: StageHandler, max_records: int = 5000
    ) -> TransactionalStage:
        """The stage a service declares in its ``asyncapi.stage_spec``, with the replica's stable
        transactional id ``<namespace>.<service>-<instance_id>``."""
        return cls(
            name=spec.service,
            bootstrap=settings.kafka_bootstrap,
            source_topics=list(spec.sources),
            group_id=spec.group_id,
            transactional_id=f"{settings.topic_namespace}.{spec.service}-{settings.instance_id}",
            client_id=settings.client_id(spec.service),
            handler=handler,
            max_records=max_records,
        )

    async def start(self) -> None:
        await self._producer.start()
        await self._consumer.start()
        self._consumer.subscribe(self._source_topics, listener=_RevokeGuard(self))
        self.healthy = True

    async def stop(self) -> None:
        self._stopping.set()
        # Let the loop finish the batch it is on (it sees _stopping and stops) before the clients close.
        if self._looping.is_set() and not await wait_event(self._loop_done, 15):
            log.warning("%s: the loop did not stop within 15 s; closing anyway", self.name)
        try:
            await self._settle(discard_next=True)
        except Exception:  # the failed transaction was aborted; its inputs are redelivered after restart
            log.warning("%s: last transaction failed during shutdown", self.name)
        self.healthy = False
        await self._consumer.stop()
        await self._producer.stop()

    async def _settle(self, discard_next: bool) -> None:
        """Wait for the transaction in flight; optionally drop the batch being prepared meanwhile."""
        if discard_next:
            self._discard_next = True
        task, self._in_flight = self._in_flight, None
        if task is not None:
            await task

    async def run(self) -> None:
        """Process until ``stop()``; infrastructure errors back off and retry from the committed offsets."""
        self._looping.set()
        try:
            await self._loop()
        finally:
            self._loop_done.set()

    async def _loop(self) -> None:
        backoff = self._retry_backoff_s
        while not self._stopping.is_set():
            try:
                batch = await self._consumer.getmany(timeout_ms=200, max_records=self._max_records)
            except KafkaError as exc:
                log.warning("%s: fetch failed: %s", self.name, exc)
                await self._sleep(backoff)
                continue
            try:
                if not batch:
                    await self._settle(discard_next=False)
                    continue
                self._discard_next = False
                records, offsets = _records_and_offsets(batch)
                outputs = await self._handler(records)
                await self._settle(discard_next=False)  # batch k must be committed before k+1 starts its own
                if self._discard_next or self._stopping.is_set():
                    await rewind_to_committed(self._consumer)
                    continue
                self._in_flight = asyncio.create_task(self._commit(records, outputs, offsets))
                backoff = self._retry_backoff_s
            except ProducerFenced:
                log.error("%s: fenced by a newer replica with the same transactional id; stopping", self.name)
                self.healthy = False
                raise
            except Exception:
                self._in_flight = None
                backoff = await self._recover(backoff)

    async def _commit(
        self,
        records: list[ConsumerRecord[bytes, bytes]],
        outputs: Sequence[OutRecord],
        offsets: dict[TopicPartition, int],
    ) -> None:
        async with self._producer.transaction():
            await self._writer.write(outputs)
            await self._producer.send_offsets_to_transaction(offsets, self._group_id)
        self._count(len(records), len(outputs))


@dataclass(frozen=True)
class StageSpec:
    """What a transactional stage reads and writes: used to run it and to document it (AsyncAPI)."""

    service: str
    group_id: str
    sources: tuple[str, ...]
    outputs: tuple[tuple[str, str], ...]  # (topic, what goes there)
    description: str


def declare_stage(broker: Any, spec: StageSpec) -> None:
    """Describe a stage's channels on a faststream broker for the AsyncAPI document.

    The stage itself runs on ``TransactionalStage``; its offsets are committed inside the output transaction,
    which is what ``AckPolicy.MANUAL`` (no commit by faststream) states here.
    """
    from faststream import AckPolicy

    async def stage(body: bytes) -> None:  # documentation only: the broker holding it is never started
        raise NotImplementedError

    stage.__doc__ = spec.description
    broker.subscriber(
        *spec.sources,
        group_id=spec.group_id,
        ack_policy=AckPolicy.MANUAL,
        isolation_level="read_committed",
        description=spec.description,
    )(stage)
    for topic, what in spec.outputs:
        broker.publisher(topic, description=what)


SinkHandler = Callable[[list[ConsumerRecord[bytes, bytes]]], Awaitable[None]]


class BatchSink(_BatchLoop):
    """consume → write durably → commit offsets, in batches (at-least-once into an idempotent sink).

    For consumers whose output is a database, not Kafka: the handler must be idempotent by ``event_id``
    (e.g. ``INSERT ... ON CONFLICT DO NOTHING``), because a crash after the write and before the commit
    redelivers the batch. Offsets are committed only after the handler returned.
    """

    def __init__(
        self,
        *,
        name: str,
        bootstrap: str,
        topics: Sequence[str],
        group_id: str,
        client_id: str,
        handler: SinkHandler,
        max_records: int = 2000,
        retry_backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
    ) -> None:
        super().__init__(name, handler, max_records, retry_backoff_s, max_backoff_s)
        self._topics = list(topics)
        self._consumer = read_committed_consumer(bootstrap, group_id, client_id, fetch_max_wait_ms=100)

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.subscribe(self._topics)
        self.healthy = True

    async def stop(self) -> None:
        self._stopping.set()
        self.healthy = False
        await self._consumer.stop()

    async def run(self) -> None:
        backoff = self._retry_backoff_s
        while not self._stopping.is_set():
            try:
                batch = await self._consumer.getmany(timeout_ms=300, max_records=self._max_records)
                if not batch:
                    continue
                records, offsets = _records_and_offsets(batch)
                await self._handler(records)
                await self._consumer.commit(offsets)
                self._count(len(records))
                backoff = self._retry_backoff_s
            except Exception:
                if self._stopping.is_set():
                    return
                backoff = await self._recover(backoff)
