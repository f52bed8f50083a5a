"""The services' dead-letter queues, read and redriven: what ``tollgate dlq`` and the operator API use.

A DLQ (``dlq.<service>``) is append-only, so "handled" is a cursor: the committed offsets of the consumer
group ``<namespace>.dlq-redrive.<service>``, which only a redrive moves. Records at or past the cursor are
*pending*; a service's DLQ depth is the number of pending records and its oldest age the age of the
oldest pending one.

Reading the depth is bounded: when the pending span (end offsets minus the cursor, over every partition) is
at most ``DEPTH_EXACT_MAX_OFFSETS``, the pending records are counted exactly (transaction markers and
aborted records are not records); beyond it nothing is read and the depth is the span itself, an upper
bound (it counts the markers the stages' transactions leave), reported with ``exact`` false. The oldest age
comes from the first pending record of each partition only (one record read per partition).

A redrive sends records back to the topic they failed on, unchanged (key, value, the original headers)
except for the ``tollgate-dlq-*`` headers, which are dropped, and ``tollgate-dlq-attempt``, set to the
attempt the copy is (2 after the first failure, and so on). One Kafka transaction holds the redriven
records, the ``operations`` event that records who redrove what and why (the audit-log copies that topic
into its trail), and the cursor's move: all three happen, or none. The transactional id is one per
service's DLQ, so two redrives of one DLQ never interleave (the later fences the earlier, which fails).
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tollgate_core.events import dumps
from tollgate_core.kafka import (
    DLQ_ATTEMPT,
    DLQ_ERROR,
    DLQ_ERROR_TYPE,
    DLQ_FAILED_AT,
    DLQ_HEADER_PREFIX,
    DLQ_SERVICE,
    DLQ_SOURCE_OFFSET,
    DLQ_SOURCE_PARTITION,
    DLQ_SOURCE_TOPIC,
    producer_config,
)
from tollgate_core.kafka_auth import kafka_security
from tollgate_core.operations import MAX_RECORDS, OperationEvent, OperationPayload, RedrivenRecord
from tollgate_core.topics import SERVICES, Topics, current_schema_id

READ_TIMEOUT_S = 30.0
# Largest pending span (offsets, all partitions of one DLQ) counted record by record; beyond it the depth is
# the span (end offset minus cursor), without reading.
DEPTH_EXACT_MAX_OFFSETS = 10_000


class DlqError(Exception):
    """A request the DLQ cannot answer (unknown service, no such record): a 4xx, not a crash. ``location``
    and ``name`` say which parameter of the request is at fault (``("path", "service")`` etc.)."""

    def __init__(self, message: str, location: str = "path", name: str = "service") -> None:
        super().__init__(message)
        self.location = location
        self.name = name


class UnknownRecord(DlqError):
    pass


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "replace")


def _int(raw: str | None) -> int | None:
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return None


@dataclass(slots=True)
class DeadLetter:
    """One record of a DLQ, with what its headers say."""

    service: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        """The last value of a header (a record that failed twice may carry a name twice)."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return _text(found)

    @property
    def source_topic(self) -> str | None:
        return self.header(DLQ_SOURCE_TOPIC)

    @property
    def attempt(self) -> int:
        """The attempt that failed and sent this record here (1 when the header is absent)."""
        return max(1, _int(self.header(DLQ_ATTEMPT)) or 1)

    @property
    def failed_at_ms(self) -> int:
        return _int(self.header(DLQ_FAILED_AT)) or self.timestamp_ms

    def describe(self, with_value: bool) -> dict[str, Any]:
        """JSON-ready: headers decoded; the value as text (or base64 when it is not UTF-8), or only its
        size and sha256 for a reader who may not see payloads."""
        out: dict[str, Any] = {
            "service": self.service,
            "partition": self.partition,
            "offset": self.offset,
            "source_topic": self.source_topic,
            "source_partition": _int(self.header(DLQ_SOURCE_PARTITION)),
            "source_offset": _int(self.header(DLQ_SOURCE_OFFSET)),
            "error_type": self.header(DLQ_ERROR_TYPE),
            "error": self.header(DLQ_ERROR),
            "failed_by": self.header(DLQ_SERVICE),
            "failed_at": datetime.fromtimestamp(self.failed_at_ms / 1000, UTC).isoformat(),
            "attempt": self.attempt,
            "key": _text(self.key),
            "value_bytes": len(self.value),
            "value_sha256": hashlib.sha256(self.value).hexdigest(),
        }
        if with_value:
            try:
                out["value"] = self.value.decode("utf-8")
            except UnicodeDecodeError:
                out["value_base64"] = base64.b64encode(self.value).decode()
            out["headers"] = [[k, _text(v)] for k, v in self.headers]
        return out

    def redriven(self) -> tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]:
        """(topic, key, value, headers) of the copy sent back to the source topic."""
        topic = self.source_topic
        if not topic:
            raise DlqError(
                f"dlq.{self.service} {self.partition}/{self.offset} names no source topic: it cannot be redriven",
                "body",
                "offset",
            )
        headers = [(k, v) for k, v in self.headers if not k.startswith(DLQ_HEADER_PREFIX)]
        headers.append((DLQ_ATTEMPT, str(self.attempt + 1).encode()))
        return topic, self.key, self.value, headers


@dataclass(frozen=True, slots=True)
class Depth:
    service: str
    pending: int
    oldest_failed_at_ms: int | None
    cursor: dict[int, int]  # partition -> first pending offset
    end: dict[int, int]  # partition -> end offset
    exact: bool = True  # False: ``pending`` is the offset span, an upper bound (nothing was read)

    def oldest_age_s(self, now_ms: int | None = None) -> float | None:
        if self.oldest_failed_at_ms is None:
            return None
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return max(0.0, (now - self.oldest_failed_at_ms) / 1000)


@dataclass(frozen=True, slots=True)
class Redrive:
    event_id: str
    records: list[DeadLetter]
    cursor: dict[int, int]


class DeadLetterQueues:
    """Reads and redrives the DLQs of one topic namespace."""

    def __init__(self, bootstrap: str, namespace: str, client_id: str = "tollgate-dlq") -> None:
        self.bootstrap = bootstrap
        self.namespace = namespace
        self.topics = Topics(namespace)
        self.client_id = client_id

    @staticmethod
    def services() -> tuple[str, ...]:
        return SERVICES

    def _check(self, service: str) -> str:
        if service not in SERVICES:
            raise UnknownRecord(f"no service {service!r}; services: {', '.join(SERVICES)}")
        return self.topics.dlq(service)

    def cursor_group(self, service: str) -> str:
        return f"{self.namespace}.dlq-redrive.{service}"

    def _consumer(self, service: str) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            **kafka_security(),
            client_id=self.client_id,
            group_id=self.cursor_group(service),  # only to read the cursor: never joins, never commits
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )

    async def _partitions(self, consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
        cluster = await consumer._client.fetch_all_metadata()
        parts = cluster.partitions_for_topic(topic)
        if not parts:
            raise DlqError(f"topic {topic} does not exist")
        return [TopicPartition(topic, p) for p in sorted(parts)]

    async def _cursor(
        self, consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition]
    ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        begin = await consumer.beginning_offsets(list(tps))
        end = await consumer.end_offsets(list(tps))
        cursor = {}
        for tp in tps:
            committed = await consumer.committed(tp)
            cursor[tp] = max(committed or 0, begin[tp])
        return cursor, end

    async def _read(
        self,
        consumer: AIOKafkaConsumer,
        service: str,
        ranges: dict[TopicPartition, tuple[int, int]],
        limit: int | None,
    ) -> list[DeadLetter]:
        """Records in [start, end) per partition (in partition, offset order), at most ``limit``."""
        out: list[DeadLetter] = []
        deadline = time.monotonic() + READ_TIMEOUT_S
        for tp, (start, end) in sorted(ranges.items(), key=lambda item: item[0].partition):
            if start >= end:
                continue
            consumer.assign([tp])
            consumer.seek(tp, start)
            while await consumer.position(tp) < end:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading {tp.topic}/{tp.partition} took over {READ_TIMEOUT_S} s")
                batch = await consumer.getmany(tp, timeout_ms=500, max_records=1000)
                for rec in batch.get(tp, []):
                    if rec.offset >= end:
                        break
                    out.append(
                        DeadLetter(
                            service,
                            rec.partition,
                            rec.offset,
                            rec.timestamp,
                            rec.key,
                            rec.value or b"",
                            list(rec.headers or ()),
                        )
                    )
                    if limit is not None and len(out) >= limit:
                        return out
        return out

    async def depth(self, service: str, exact_max_offsets: int = DEPTH_EXACT_MAX_OFFSETS) -> Depth:
        """Pending records and the oldest one's failure time, reading at most ``exact_max_offsets`` offsets
        (else the offset span, ``exact`` false) plus the first pending record of each partition."""
        topic = self._check(service)
        consumer = self._consumer(service)
        await consumer.start()
        try:
            tps = await self._partitions(consumer, topic)
            cursor, end = await self._cursor(consumer, tps)
            span = sum(max(0, end[tp] - cursor[tp]) for tp in tps)
            exact = span <= exact_max_offsets
            oldest: int | None = None
            if exact:
                records = await self._read(consumer, service, {tp: (cursor[tp], end[tp]) for tp in tps}, None)
                pending = len(records)
                oldest = min((r.failed_at_ms for r in records), default=None)
            else:
                pending = span
                for tp in tps:
                    first = await self._read(consumer, service, {tp: (cursor[tp], end[tp])}, 1)
                    if first and (oldest is None or first[0].failed_at_ms < oldest):
                        oldest = first[0].failed_at_ms
        finally:
            await consumer.stop()
        return Depth(
            service,
            pending,
            oldest,
            {tp.partition: cursor[tp] for tp in tps},
            {tp.partition: end[tp] for tp in tps},
            exact,
        )

    async def pending(
        self, service: str, *, limit: int = 100, partition: int | None = None, everything: bool = False
    ) -> list[DeadLetter]:
        """Pending records (every retained one with ``everything``), oldest offsets first."""
        topic = self._check(service)
        consumer = self._consumer(service)
        await consumer.start()
        try:
            tps = [
                tp
                for tp in await self._partitions(consumer, topic)
                if partition is None or tp.partition == partition
            ]
            if not tps:
                raise UnknownRecord(f"{topic} has no partition {partition}")
            cursor, end = await self._cursor(consumer, tps)
            if everything:
                begin = await consumer.beginning_offsets(tps)
                cursor = {tp: begin[tp] for tp in tps}
            return await self._read(consumer, service, {tp: (cursor[tp], end[tp]) for tp in tps}, limit)
        finally:
            await consumer.stop()

    async def get(self, service: str, partition: int, offset: int) -> DeadLetter:
        topic = self._check(service)
        consumer = self._consumer(service)
        await consumer.start()
        try:
            tps = {tp.partition: tp for tp in await self._partitions(consumer, topic)}
            tp = tps.get(partition)
            if tp is None:
                raise UnknownRecord(f"{topic} has no partition {partition}")
            begin = (await consumer.beginning_offsets([tp]))[tp]
            end = (await consumer.end_offsets([tp]))[tp]
            if not begin <= offset < end:
                raise UnknownRecord(f"{topic} partition {partition} holds offsets {begin}..{end - 1}")
            found = await self._read(consumer, service, {tp: (offset, offset + 1)}, 1)
        finally:
            await consumer.stop()
        if not found or found[0].offset != offset:
            raise UnknownRecord(f"{topic} {partition}/{offset} is not a record (a transaction marker)")
        return found[0]

    async def redrive(
        self,
        service: str,
        *,
        actor: str,
        actor_role: str,
        reason: str,
        partition: int | None = None,
        offset: int | None = None,
        limit: int = 1000,
    ) -> Redrive:
        """Send pending records (or the one at ``partition``/``offset``) back to their source topics,
        record the operation, and move the cursor past what was redriven from it: one transaction."""
        topic = self._check(service)
        limit = max(1, min(limit, MAX_RECORDS))
        if offset is not None:
            if partition is None:
                raise DlqError("an offset needs its partition", "body", "partition")
            records = [await self.get(service, partition, offset)]
            # The cursor moves only when this is the partition's first pending record.
            first = await self.pending(service, limit=1, partition=partition)
            moved = {partition: offset + 1} if first and first[0].offset == offset else {}
        else:
            # A prefix of each partition's pending records: the cursor moves past the last of each.
            records = await self.pending(service, limit=limit, partition=partition)
            moved = {}
            for r in records:
                moved[r.partition] = max(moved.get(r.partition, 0), r.offset + 1)
        copies = [r.redriven() for r in records]  # refuses a record without a source before sending any
        event = OperationEvent(
            event_id=uuid.uuid4(),
            event_type="dlq_redrive",
            schema_=current_schema_id("operations"),
            occurred_at=datetime.now(UTC),
            producer=self.client_id,
            payload=OperationPayload(
                action="dlq.redrive",
                actor=actor,
                actor_role=actor_role,
                reason=reason,
                service=service,
                dlq_topic=topic,
                records=[
                    RedrivenRecord(
                        dlq_partition=r.partition,
                        dlq_offset=r.offset,
                        source_topic=copy[0],
                        source_partition=_int(r.header(DLQ_SOURCE_PARTITION)),
                        source_offset=_int(r.header(DLQ_SOURCE_OFFSET)),
                        attempt=r.attempt + 1,
                        error_type=r.header(DLQ_ERROR_TYPE),
                    )
                    for r, copy in zip(records, copies, strict=True)
                ],
            ),
        )
        if records:
            await self._commit(
                service, copies, event, {TopicPartition(topic, p): o for p, o in moved.items()}
            )
        return Redrive(str(event.event_id), records, moved)

    async def _commit(
        self,
        service: str,
        copies: Iterable[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]],
        event: OperationEvent,
        cursor: dict[TopicPartition, int],
    ) -> None:
        producer = AIOKafkaProducer(
            **producer_config(
                self.bootstrap,
                self.client_id,
                transactional_id=f"{self.namespace}.dlq-redrive.{service}",
                transaction_timeout_ms=60_000,
            )
        )
        await producer.start()
        try:
            async with producer.transaction():
                futures = [
                    await producer.send(topic, value, key=key, headers=headers)
                    for topic, key, value, headers in copies
                ]
                futures.append(
                    await producer.send(self.topics.name("operations"), dumps(event), key=service.encode())
                )
                for future in futures:  # every write acknowledged before the transaction may commit
                    await future
                if cursor:
                    await producer.send_offsets_to_transaction(cursor, self.cursor_group(service))
        finally:
            await producer.stop()
