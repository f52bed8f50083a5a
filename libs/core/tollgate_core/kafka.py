"""Kafka clients with the platform's delivery rules, and the exactly-once stream stage.

* Producers: ``acks=all`` with idempotence on (``producer_config``).
* ``TransactionalStage``: consume a batch, transform it, then produce every output record *and* the consumed
  offsets in one Kafka transaction. A crash at any point either commits both or neither, so a restarted stage
  neither loses an input nor publishes an output twice (to ``read_committed`` readers). Poison messages are
  outputs too: the handler turns them into DLQ records, committed in the same transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry, Counter, Gauge

from tollgate_core.kafka_auth import kafka_security
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
DLQ_ATTEMPT = "tollgate-dlq-attempt"  # 1 for a first failure; a redriven record that fails again counts on
DLQ_HEADER_PREFIX = "tollgate-dlq-"
DLQ_REASON_MAX_CHARS = 2000  # the error text in a dead letter's header is bounded

# Kafka's default broker ``message.max.bytes`` (1 MiB + 12 bytes of batch framing), the producer's default
# ``max_request_size`` too: the size every output is checked against when the topic sets nothing smaller.
DEFAULT_MAX_MESSAGE_BYTES = 1_048_576
# What a record costs beyond its key, value and headers inside a one-record batch (batch header 61 bytes,
# record framing and varints): kept generous so a record that passes the check is never refused.
RECORD_OVERHEAD_BYTES = 512


class TransientError(Exception):
    """A failure that may go away by itself (a dependency down, a timeout): retried, never dead-lettered."""


class OutputTooLarge(ValueError):
    """An output record larger than its topic accepts: the input that produced it is dead-lettered."""


# Test-only fault injection. A record carrying this header makes a stage raise ``InjectedFault`` in place of
# its handler, so that poison tests reach the "handler raised" path of consumers that no real input makes
# fail. Off unless TOLLGATE_FAULT_INJECTION=1; refused (the consumer does not start) when TOLLGATE_ENV is
# production.
FAULT_HEADER = "tollgate-test-fault"
FAULT_INJECTION_ENV = "TOLLGATE_FAULT_INJECTION"


class InjectedFault(RuntimeError):
    """Raised for a record with the fault header while fault injection is on: not transient, so poison."""


def fault_injection_enabled(env: dict[str, str] | None = None) -> bool:
    """Whether TOLLGATE_FAULT_INJECTION turns the test-only fault hook on; raises in production."""
    env = dict(os.environ) if env is None else env
    if env.get(FAULT_INJECTION_ENV, "").strip().lower() not in {"1", "true", "yes"}:
        return False
    if env.get("TOLLGATE_ENV", "development").strip().lower() == "production":
        raise RuntimeError(f"{FAULT_INJECTION_ENV} is a test hook and cannot be enabled in production")
    return True


def raise_injected_faults(records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
    """``InjectedFault`` if any of ``records`` carries the fault header (call only when the hook is on)."""
    for rec in records:
        if any(name == FAULT_HEADER for name, _ in rec.headers or ()):
            raise InjectedFault(f"fault injected by a test at {rec.topic}[{rec.partition}]@{rec.offset}")


def _transient_types() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [TransientError, TimeoutError, ConnectionError, OSError, KafkaError]
    try:  # the database's "not reachable / try again" family; asyncpg is optional for Kafka-only services
        import asyncpg

        found += [
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            asyncpg.TooManyConnectionsError,
            asyncpg.CannotConnectNowError,
            asyncpg.SerializationError,
            asyncpg.DeadlockDetectedError,
            asyncpg.QueryCanceledError,  # statement timeout
            asyncpg.AdminShutdownError,
            # The database's set-up, not the record: a missing table or right would dead-letter every record.
            asyncpg.InsufficientPrivilegeError,
            asyncpg.UndefinedTableError,
            asyncpg.UndefinedColumnError,
            asyncpg.ReadOnlySQLTransactionError,
        ]
    except ImportError:  # pragma: no cover - asyncpg is installed with tollgate-core
        pass
    return tuple(found)


TRANSIENT_ERRORS = _transient_types()


def is_transient(exc: BaseException) -> bool:
    """The poison policy's one classification: ``True`` for failures of the infrastructure (database or broker
    unreachable, timeouts, :class:`TransientError`) that a retry may cure; ``False`` for failures of the
    record itself (bad JSON, a missing field, a value of the wrong type, an output too large, any other
    exception a handler raises), which are dead-lettered.

    Kafka errors that are the record's fault are not transient: a message too large for its topic, or an
    invalid record."""
    if isinstance(exc, OutputTooLarge):
        return False
    if isinstance(exc, KafkaError) and type(exc).__name__ in {
        "MessageSizeTooLargeError",
        "RecordTooLargeError",
        "RecordListTooLargeError",
        "CorruptRecordException",
        "InvalidTimestampError",
    }:
        return False
    return isinstance(exc, TRANSIENT_ERRORS)


@dataclass(frozen=True)
class RetryPolicy:
    """How a consumer retries what is transient: exponential backoff from ``backoff_s`` up to
    ``max_backoff_s``, for ever (a transient failure never dead-letters). ``classify`` may widen or narrow
    :func:`is_transient` for one consumer; it receives the exception and returns whether it is transient."""

    backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    classify: Callable[[BaseException], bool] = is_transient

    def is_transient(self, exc: BaseException) -> bool:
        return self.classify(exc)


def producer_config(bootstrap: str, client_id: str, **overrides: Any) -> dict[str, Any]:
    """The platform's producer settings: every write acknowledged by all in-sync replicas, idempotent,
    authenticated as the principal in the environment (``tollgate_core.kafka_auth``)."""
    config: dict[str, Any] = {
        **kafka_security(),
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


def _prior_attempt(headers: Sequence[tuple[str, bytes]]) -> int:
    for name, value in headers:
        if name == DLQ_ATTEMPT:
            try:
                return max(0, int(value))
            except ValueError:
                return 0
    return 0


def dead_letter(
    record: ConsumerRecord[bytes, bytes], dlq_topic: str, service: str, error: BaseException | str
) -> OutRecord:
    """The original message, unchanged, bound for the DLQ with headers that say where it came from and why.

    A record that was dead-lettered before (and redriven) keeps its own headers but not the old dead-letter
    ones; its ``tollgate-dlq-attempt`` counts on from the previous one."""
    kind = type(error).__name__ if isinstance(error, BaseException) else "Rejected"
    reason = str(error)[:DLQ_REASON_MAX_CHARS] or kind
    original = list(record.headers or ())
    attempt = _prior_attempt(original) + 1
    headers = [(k, v) for k, v in original if not k.startswith(DLQ_HEADER_PREFIX)]
    headers += [
        (DLQ_SOURCE_TOPIC, record.topic.encode()),
        (DLQ_SOURCE_PARTITION, str(record.partition).encode()),
        (DLQ_SOURCE_OFFSET, str(record.offset).encode()),
        (DLQ_ERROR_TYPE, kind.encode()),
        (DLQ_ERROR, reason.encode("utf-8", "replace")),
        (DLQ_SERVICE, service.encode()),
        (DLQ_FAILED_AT, str(int(time.time() * 1000)).encode()),
        (DLQ_ATTEMPT, str(attempt).encode()),
    ]
    return OutRecord(dlq_topic, record.value or b"", record.key, headers)


def record_size(rec: OutRecord) -> int:
    """Bytes ``rec`` takes in a batch of its own, rounded up (see ``RECORD_OVERHEAD_BYTES``)."""
    size = len(rec.value) + len(rec.key or b"") + RECORD_OVERHEAD_BYTES
    for name, value in rec.headers:
        size += len(name) + len(value) + 10
    return size


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
        **kafka_security(),
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
        self.sent_topics: list[str] = []

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
        """Queue ``records``; one future per batch sent (``sent_topics`` says each one's topic)."""
        builders: dict[tuple[str, int], Any] = {}
        futures: list[asyncio.Future[Any]] = []
        self.sent_topics = []
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
                self.sent_topics.append(rec.topic)
                builder = builders[slot] = self._producer.create_batch()
                if (
                    builder.append(key=rec.key, value=rec.value, timestamp=now_ms, headers=rec.headers)
                    is None
                ):
                    raise KafkaError(f"record of {len(rec.value)} bytes does not fit in a batch")
        for (topic, partition), builder in builders.items():
            if builder.record_count():
                futures.append(await self._producer.send_batch(builder, topic, partition=partition))
                self.sent_topics.append(topic)
        return futures


StageHandler = Callable[[list[ConsumerRecord[bytes, bytes]]], Awaitable[Sequence[OutRecord]]]
# A sink handler writes a batch durably; it may return the records it refused, each with why, and the
# runtime dead-letters them (acknowledged) before the batch's offsets commit.
Refused = Sequence[tuple[ConsumerRecord[bytes, bytes], BaseException | str]]
SinkHandler = Callable[[list[ConsumerRecord[bytes, bytes]]], Awaitable[Refused | None]]
Record: TypeAlias = ConsumerRecord[bytes, bytes]


@dataclass
class StageStats:
    consumed: int = 0
    produced: int = 0
    batches: int = 0
    aborted: int = 0
    dead_lettered: int = 0
    failed_writes: int = 0  # transactions (or dead-letter writes) that failed and were retried
    producer_rebuilds: int = 0
    last_batch_at: float = 0.0


class _ConsumerMetrics:
    """Counters every consumer of the runtime reports on its service's ``/metrics`` (label ``consumer``)."""

    _by_registry: ClassVar[dict[int, _ConsumerMetrics]] = {}

    def __init__(self, registry: CollectorRegistry) -> None:
        self.failed_writes = Counter(
            "tollgate_consumer_failed_writes",
            "Writes (output transactions, dead letters) that failed; their batch was retried",
            ["consumer"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            "tollgate_consumer_dead_lettered",
            "Records isolated as poison and sent to the service's DLQ",
            ["consumer"],
            registry=registry,
        )
        self.retried_batches = Counter(
            "tollgate_consumer_retried_batches",
            "Batches retried after a transient failure",
            ["consumer"],
            registry=registry,
        )
        self.lag = Gauge(
            "tollgate_consumer_lag",
            "Records behind the end of each assigned partition (highwater minus position), the figure "
            "KEDA scales on",
            ["consumer", "topic", "partition"],
            registry=registry,
        )
        self.writes_failing = Gauge(
            "tollgate_consumer_writes_failing",
            "1 while the consumer's last write failed and no write has succeeded since",
            ["consumer"],
            registry=registry,
        )

    @classmethod
    def for_registry(cls, registry: CollectorRegistry) -> _ConsumerMetrics:
        found = cls._by_registry.get(id(registry))
        if found is None or found._registry is not registry:
            found = cls._by_registry[id(registry)] = cls(registry)
            found._registry = registry
        return found

    _registry: CollectorRegistry


Batch = dict[TopicPartition, list[Record]]


class _RevokeGuard(ConsumerRebalanceListener):  # type: ignore[misc]
    """A stage's rebalances: on revocation, let the transactions in flight finish and throw away work not yet
    committed, so offsets are never committed for a partition this replica no longer owns; on assignment,
    open the new partitions' producers (fencing their previous owners) before seeking to the committed
    offsets. Both are logged at INFO with the partitions."""

    def __init__(self, stage: TransactionalStage) -> None:
        self._stage = stage

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._stage._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._stage._on_assigned(set(assigned))


class _LogRebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """A sink's rebalances, logged at INFO with the partitions (what moved, and when)."""

    def __init__(self, name: str) -> None:
        self._name = name

    async def on_partitions_revoked(self, revoked: Any) -> None:
        log.info("%s: rebalance: partitions revoked %s", self._name, _tps(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("%s: rebalance: partitions assigned %s", self._name, _tps(assigned))


def _records_and_offsets(batch: Batch) -> tuple[list[Record], dict[TopicPartition, int]]:
    """A fetched batch's records in one list, and the offsets to commit once they are done."""
    records = [rec for recs in batch.values() for rec in recs]
    return records, {tp: recs[-1].offset + 1 for tp, recs in batch.items()}


def _bounded_dead_letter(
    record: Record, dlq_topic: str, service: str, error: BaseException | str, limit: int
) -> OutRecord:
    """``dead_letter``, and when even the original message does not fit the DLQ topic, a bounded JSON
    summary in its place (the headers still name the source topic, partition and offset to find it)."""
    out = dead_letter(record, dlq_topic, service, error)
    if record_size(out) > limit:
        summary = {
            "summary": "original message too large for the dead-letter topic; read it at its source",
            "source_topic": record.topic,
            "source_partition": record.partition,
            "source_offset": record.offset,
            "original_bytes": len(record.value or b""),
            "error": str(error)[:DLQ_REASON_MAX_CHARS],
        }
        out.value = orjson.dumps(summary)
        out.headers = [(k, v) for k, v in out.headers if k.startswith(DLQ_HEADER_PREFIX)]
    return out


class _BatchLoop:
    """What every consumer of the runtime shares: counters, the poison policy (isolate, dead-letter what is
    not transient, retry what is), backoff, and the stop signal."""

    _consumer: AIOKafkaConsumer

    def __init__(
        self,
        *,
        name: str,
        service: str,
        dlq_topic: str | None,
        max_records: int,
        retry: RetryPolicy,
        registry: CollectorRegistry | None,
        max_message_bytes: Callable[[str], int] | None,
    ) -> None:
        self.name = name
        self.service = service
        self.dlq_topic = dlq_topic
        self.stats = StageStats()
        self.started = False
        self.writes_failing = False
        self._max_records = max_records
        self._retry = retry
        self._stopping = asyncio.Event()
        self._metrics = _ConsumerMetrics.for_registry(registry) if registry is not None else None
        self._declared_limit = max_message_bytes or (lambda topic: DEFAULT_MAX_MESSAGE_BYTES)
        self._limits: dict[str, int] = {}  # limits learnt from the broker's refusals
        self._lag_at = 0.0
        self._lag_keys: set[tuple[str, str, str]] = set()
        self._inject_faults = fault_injection_enabled()

    async def _observe_lag(self) -> None:
        """Set the lag gauge of every assigned partition from the fetcher's highwater (no request to the
        broker), at most once a second; partitions no longer assigned leave the gauge."""
        if self._metrics is None or time.monotonic() - self._lag_at < 1.0:
            return
        self._lag_at = time.monotonic()
        consumer = self._consumer
        seen: set[tuple[str, str, str]] = set()
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            try:
                position = await consumer.position(tp)
            except KafkaError:  # a partition being reset or revoked: measured next time
                continue
            key = (self.name, tp.topic, str(tp.partition))
            self._metrics.lag.labels(*key).set(max(0, high - position))
            seen.add(key)
        for key in self._lag_keys - seen:
            with contextlib.suppress(KeyError):
                self._metrics.lag.remove(*key)
        self._lag_keys = seen

    def _limit_for(self, topic: str) -> int:
        """Largest record ``topic`` takes: what it declares, or less if the broker refused less."""
        return self._limits.get(topic) or self._declared_limit(topic)

    @property
    def healthy(self) -> bool:
        """Running, and its writes are going through (``/readyz`` reports this)."""
        return self.started and not self.writes_failing

    async def _sleep(self, seconds: float) -> None:
        await wait_event(self._stopping, seconds)

    def _count(self, consumed: int, produced: int = 0) -> None:
        self.stats.consumed += consumed
        self.stats.produced += produced
        self.stats.batches += 1
        self.stats.last_batch_at = time.time()

    def _write_failed(self) -> None:
        self.stats.failed_writes += 1
        self.writes_failing = True
        if self._metrics is not None:
            self._metrics.failed_writes.labels(self.name).inc()
            self._metrics.writes_failing.labels(self.name).set(1)

    def _write_succeeded(self) -> None:
        if self.writes_failing:
            self.writes_failing = False
            if self._metrics is not None:
                self._metrics.writes_failing.labels(self.name).set(0)

    def _dead_lettered(self, n: int) -> None:
        self.stats.dead_lettered += n
        if self._metrics is not None and n:
            self._metrics.dead_lettered.labels(self.name).inc(n)

    async def _recover(self, backoff: float) -> float:
        """After a failed batch (called while handling its exception): count and log it, rewind to the
        committed offsets, wait ``backoff`` (or until stopped); returns the next, doubled backoff."""
        self.stats.aborted += 1
        if self._metrics is not None:
            self._metrics.retried_batches.labels(self.name).inc()
        log.warning("%s: batch failed, rewinding to the committed offsets", self.name, exc_info=True)
        try:
            await rewind_to_committed(self._consumer)
        except Exception:  # the broker is away: the next fetch fails too and backs off again
            log.warning("%s: could not rewind yet", self.name, exc_info=True)
        await self._sleep(backoff)
        return min(backoff * 2, self._retry.max_backoff_s)

    def _dead_letter(self, record: Record, error: BaseException | str) -> OutRecord:
        if self.dlq_topic is None:  # a consumer without a DLQ cannot isolate: the batch stays and is retried
            raise error if isinstance(error, BaseException) else ValueError(error)
        log.error(
            "%s: %s[%d]@%d dead-lettered: %s: %s",
            self.name,
            record.topic,
            record.partition,
            record.offset,
            type(error).__name__ if isinstance(error, BaseException) else "Rejected",
            str(error)[:300],
        )
        return _bounded_dead_letter(
            record, self.dlq_topic, self.service, error, self._limit_for(self.dlq_topic)
        )

    async def _isolate(
        self, records: list[Record], call: Callable[[list[Record]], Awaitable[list[OutRecord]]]
    ) -> tuple[list[OutRecord], int]:
        """Run ``call`` on ``records``; when it raises something not transient, split the batch in halves
        until the records that fail alone are found, dead-letter those and keep the outputs of the rest.
        A transient failure propagates (the whole batch is retried). Returns the outputs (dead letters
        included) and the number of records dead-lettered. ``call`` may run more than once on a record,
        so handlers must tolerate a record seen again (they must anyway: batches are redelivered)."""
        try:
            return await call(records), 0
        except Exception as exc:
            if self._retry.is_transient(exc) or self.dlq_topic is None:
                raise
            if len(records) == 1:
                return [self._dead_letter(records[0], exc)], 1
        mid = len(records) // 2
        left, dead_left = await self._isolate(records[:mid], call)
        right, dead_right = await self._isolate(records[mid:], call)
        return left + right, dead_left + dead_right


@dataclass
class _PartitionProducer:
    """The transactional producer of one input partition, and its writer."""

    producer: Any
    writer: PartitionedWriter


class TransactionalStage(_BatchLoop):
    """consume → transform → produce + commit offsets, atomically, in batches.

    Delivery: exactly-once into downstream ``read_committed`` consumers, also when a replica is expelled from
    its group while it still holds a transaction (a "zombie": stalled past its session timeout, its partitions
    given to another replica, then resuming).

    Fencing (the pre-KIP-447 model of Kafka Streams' EOS v1): one transactional producer per *input
    partition*, with the transactional id ``<transactional_id>.<group>-<topic>-<partition>``, the same in
    every replica. A replica opens a partition's producer when the partition is assigned to it, and only
    then reads the partition's committed offset and seeks there; opening (InitProducerId) bumps the id's epoch,
    which aborts the previous owner's open transaction (or waits for one being committed to finish) and fences
    that producer, so a zombie can commit nothing for the partition any more. A batch's records are grouped
    by input partition; each group's outputs and offset go in that partition's transaction, and the
    partitions' transactions commit concurrently. (aiokafka 0.14 sends ``TxnOffsetCommit`` v0, without the
    group generation, so the broker cannot refuse a zombie's offsets by generation; fencing by transactional
    id is what remains. Checking the generation before committing would leave a race between the check and
    the commit.)

    The invariant that makes this exactly-once whatever the group does: for each input partition, a
    producer is initialised, then the committed offset is read, then records from there are processed and
    committed by that producer; any failure drops the producer, and the partition starts over with a new one
    (a new epoch) from the offset committed by then. Of two replicas that both believe they own a partition,
    only the one whose producer was initialised last can commit, and it read the committed offset after the
    other's last commit.

    Every write is proven: each produce future of a transaction is awaited before the offsets are added
    and the transaction committed; any failure aborts it and the batch is retried from the committed
    offsets, with a new producer (a new epoch, fresh sequence numbers), so no partition stays wedged after
    an ``OutOfOrderSequenceNumber``, a fencing or an aborted transaction.

    Poison: a record whose handling raises a non-transient error, or whose output is larger than its topic
    accepts, is isolated and dead-lettered inside the same transaction; the rest of the batch goes on.

    Throughput: the handler for batch *k+1* (parsing, database work) runs while the transactions of batch *k*
    commit. If one of them fails, batch *k+1*'s outputs are discarded and the consumer rewinds to the
    committed offsets; handlers must therefore tolerate seeing a batch again (ingest's claims do). The handler
    is called once per input partition of a batch (so that each output belongs to one partition's
    transaction), and those calls run concurrently: a handler must not keep per-call state across its awaits.
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
        dlq_topic: str | None = None,
        max_records: int = 5000,
        fetch_max_wait_ms: int = 50,
        retry: RetryPolicy | None = None,
        registry: CollectorRegistry | None = None,
        max_message_bytes: Callable[[str], int] | None = None,
        consumer_factory: Callable[..., Any] | None = None,
        producer_factory: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(
            name=name,
            service=name,
            dlq_topic=dlq_topic,
            max_records=max_records,
            retry=retry or RetryPolicy(),
            registry=registry,
            max_message_bytes=max_message_bytes,
        )
        self._handler = handler
        self._source_topics = list(source_topics)
        self._group_id = group_id
        self._in_flight: asyncio.Task[None] | None = None
        self._discard_next = False
        self._looping = asyncio.Event()
        self._loop_done = asyncio.Event()
        # Offsets are committed inside the output transactions only.
        self._consumer = (consumer_factory or read_committed_consumer)(
            bootstrap,
            group_id,
            client_id,
            fetch_max_wait_ms=fetch_max_wait_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
        )
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._transactional_prefix = transactional_id
        self._producer_factory = producer_factory or AIOKafkaProducer
        self._producers: dict[TopicPartition, _PartitionProducer] = {}
        self._producers_lock = asyncio.Lock()
        # A rebalance in progress (revoked, not yet assigned) and how many there were: a batch fetched before
        # or during one is discarded, never committed.
        self._rebalancing = False
        self._generation = 0

    def partition_transactional_id(self, tp: TopicPartition) -> str:
        """The transactional id of ``tp``'s producer, the same in every replica of the stage."""
        return f"{self._transactional_prefix}.{self._group_id}-{tp.topic}-{tp.partition}"

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.subscribe(self._source_topics, listener=_RevokeGuard(self))
        self.started = True

    async def _open(self, tp: TopicPartition) -> None:
        """Start ``tp``'s producer: InitProducerId fences every other producer with its transactional id."""
        config = producer_config(
            self._bootstrap,
            self._client_id,
            transactional_id=self.partition_transactional_id(tp),
            transaction_timeout_ms=30000,
        )
        producer = self._producer_factory(**config)
        try:
            await producer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 10)
            raise
        self._producers[tp] = _PartitionProducer(producer, PartitionedWriter(producer))

    async def _close(self, tp: TopicPartition) -> None:
        slot = self._producers.pop(tp, None)
        if slot is not None:
            await self._stop_quietly(slot.producer)

    async def _stop_quietly(self, producer: Any) -> None:
        try:
            await asyncio.wait_for(producer.stop(), 10)
        except Exception:
            log.warning("%s: a producer did not stop cleanly", self.name, exc_info=True)

    async def _open_and_seek(self, assigned: set[TopicPartition] | None) -> bool:
        """Open, concurrently, the producer of every assigned partition that has none (closing those of
        partitions no longer assigned), and only then seek every assigned partition to its committed offset.
        Under one lock, so that a recovery and a rebalance never interleave their seeks: whichever seeks last
        did so after every producer was opened. True when every assigned partition has its producer."""
        async with self._producers_lock:
            owned = set(self._consumer.assignment()) if assigned is None else assigned
            for tp in [tp for tp in self._producers if tp not in owned]:
                await self._close(tp)
            missing = sorted(tp for tp in owned if tp not in self._producers)
            results = await asyncio.gather(*(self._open(tp) for tp in missing), return_exceptions=True)
            await rewind_to_committed(self._consumer)
        failed = [(tp, r) for tp, r in zip(missing, results, strict=True) if isinstance(r, BaseException)]
        for tp, exc in failed:
            log.warning("%s: producer for %s[%d] not started yet: %s", self.name, tp.topic, tp.partition, exc)
        return not failed

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._rebalancing = True
        self._generation += 1
        log.info("%s: rebalance: partitions revoked %s", self.name, _tps(revoked))
        try:
            await self._settle(discard_next=True)
        except Exception:  # the failed transaction was aborted; the loop rewinds (discard_next is set)
            log.warning("%s: transaction in flight failed during a rebalance", self.name)

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Open the producers of the new assignment *before* reading its committed offsets (see the class
        documentation), then seek every assigned partition to its committed offset."""
        started = time.monotonic()
        try:
            await self._open_and_seek(set(assigned))
        except Exception:  # the loop's first commit of such a partition fails, and recovery starts over
            log.warning("%s: could not prepare the new assignment", self.name, exc_info=True)
        finally:
            self._generation += 1
            self._rebalancing = False
        log.info(
            "%s: rebalance: partitions assigned %s (producers ready in %.2f s)",
            self.name,
            _tps(assigned),
            time.monotonic() - started,
        )

    async def stop(self) -> None:
        self._stopping.set()
        # Let the loop finish the batch it is on (it sees _stopping and stops) before the clients close.
        if self._looping.is_set() and not await wait_event(self._loop_done, 15):
            log.warning("%s: the loop did not stop within 15 s; closing anyway", self.name)
        try:
            await self._settle(discard_next=True)
        except Exception:  # the failed transaction was aborted; its inputs are redelivered after restart
            log.warning("%s: last transaction failed during shutdown", self.name)
        self.started = False
        await self._consumer.stop()
        async with self._producers_lock:
            for tp in list(self._producers):
                await self._close(tp)

    async def _settle(self, discard_next: bool) -> None:
        """Wait for the transactions in flight; optionally drop the batch being prepared meanwhile."""
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

    async def _outputs_of(self, records: list[Record]) -> list[OutRecord]:
        """The handler's outputs for ``records``, each checked against its topic's size limit."""
        if self._inject_faults:
            raise_injected_faults(records)
        outputs = list(await self._handler(records))
        for out in outputs:
            limit = self._limit_for(out.topic)
            size = record_size(out)
            if size > limit:
                raise OutputTooLarge(
                    f"output for {out.topic} would be {size} bytes, more than the topic's {limit}"
                )
        return outputs

    async def _loop(self) -> None:
        backoff = self._retry.backoff_s
        while not self._stopping.is_set():
            try:
                batch = await self._consumer.getmany(timeout_ms=200, max_records=self._max_records)
                # Noted before anything else awaits: whether this batch was fetched under the assignment
                # (and so after the seeks) that will be current when it commits.
                generation, rebalancing = self._generation, self._rebalancing
                await self._observe_lag()
            except KafkaError as exc:
                log.warning("%s: fetch failed: %s", self.name, exc)
                await self._sleep(backoff)
                continue
            try:
                if not batch:
                    await self._settle(discard_next=False)
                    continue
                if rebalancing:  # the assignment is changing: give the records back, the new owner seeks
                    self._seek_back(batch)
                    continue
                self._discard_next = False
                # One handler call per input partition (each output must belong to one partition's
                # transaction), run concurrently so that a handler's I/O (ingest's claims) overlaps.
                handled = await asyncio.gather(
                    *(self._isolate(list(recs), self._outputs_of) for recs in batch.values())
                )
                groups = [
                    _PartitionWork(tp, len(recs), outputs, recs[-1].offset + 1, dead)
                    for (tp, recs), (outputs, dead) in zip(batch.items(), handled, strict=True)
                ]
                await self._settle(discard_next=False)  # batch k must be committed before k+1 starts its own
                if self._rebalancing or generation != self._generation:
                    continue  # a rebalance came in between: it sought every assigned partition itself
                if self._discard_next or self._stopping.is_set():
                    self._seek_back(batch)
                    continue
                self._in_flight = asyncio.create_task(self._commit(groups))
                backoff = self._retry.backoff_s
            except Exception:
                with contextlib.suppress(Exception):  # its failure is the one being recovered from, or moot
                    await self._settle(discard_next=True)
                backoff = await self._recover(backoff)

    def _seek_back(self, batch: Batch) -> None:
        """Return each partition of ``batch`` to the batch's first offset (where it was fetched from)."""
        assigned = self._consumer.assignment()
        for tp, recs in batch.items():
            if recs and tp in assigned:
                self._consumer.seek(tp, recs[0].offset)

    async def _recover(self, backoff: float) -> float:
        """After a failed batch: count and log it, wait ``backoff`` (or until stopped), open a new producer
        for every assigned partition whose producer failed, and only then rewind to the committed offsets;
        returns the next, doubled backoff. Waiting first gives a replica that was fenced because it lost its
        partitions the time to learn it from the group before it opens (and so fences) anything again."""
        self.stats.aborted += 1
        if self._metrics is not None:
            self._metrics.retried_batches.labels(self.name).inc()
        log.warning("%s: batch failed, rewinding to the committed offsets", self.name, exc_info=True)
        await self._sleep(backoff)
        try:
            await self._open_and_seek(None)
        except Exception:  # the broker is away: the next fetch or commit fails too and backs off again
            log.warning("%s: could not rewind yet", self.name, exc_info=True)
        return min(backoff * 2, self._retry.max_backoff_s)

    def _lower_limits(
        self, writer: PartitionedWriter, outputs: Sequence[OutRecord], results: list[Any]
    ) -> None:
        """The broker refused a batch as too large although it passed the size check: believe the broker.
        Every topic with a refused batch gets a limit below the largest record sent to it, so the retried
        batch isolates that record (dead-lettered as too large) instead of failing again and again."""
        refused = {
            topic
            for topic, r in zip(writer.sent_topics, results, strict=False)
            if r is not None and isinstance(r, BaseException)
        }
        for topic in refused:
            largest = max((record_size(o) for o in outputs if o.topic == topic), default=0)
            if largest:
                self._limits[topic] = min(self._limit_for(topic), largest - 1)
                log.error(
                    "%s: %s refused a record of %d bytes; its limit is now taken as %d",
                    self.name,
                    topic,
                    largest,
                    self._limits[topic],
                )

    async def _commit(self, groups: list[_PartitionWork]) -> None:
        """Commit each partition's outputs and offset in that partition's transaction, concurrently; raises
        the first failure once every transaction has ended (the others may have committed)."""
        results = await asyncio.gather(
            *(self._commit_partition(work) for work in groups), return_exceptions=True
        )
        consumed = produced = dead = 0
        failed: BaseException | None = None
        for work, result in zip(groups, results, strict=True):
            if isinstance(result, BaseException):
                failed = failed or result
            else:
                consumed, produced, dead = (
                    consumed + work.consumed,
                    produced + len(work.outputs),
                    dead + work.dead,
                )
        if consumed:
            self._dead_lettered(dead)
            self._count(consumed, produced)
        if failed is not None:
            raise failed
        self._write_succeeded()

    async def _commit_partition(self, work: _PartitionWork) -> None:
        tp = work.tp
        slot = self._producers.get(tp)
        if slot is None:
            raise TransientError(f"{self.name}: no producer for {tp.topic}[{tp.partition}] yet")
        producer = slot.producer
        try:
            await producer.begin_transaction()
            futures = await slot.writer.write(work.outputs)
            # Proven writes: every batch of this transaction acknowledged before its offsets are added.
            results = await asyncio.gather(*futures, return_exceptions=True)
            failed = next((r for r in results if isinstance(r, BaseException)), None)
            if failed is not None:
                if not is_transient(failed):  # the broker refused a record: its topic's limit is lower
                    self._lower_limits(slot.writer, work.outputs, results)
                raise failed
            await producer.send_offsets_to_transaction({tp: work.offset}, self._group_id)
            await producer.commit_transaction()
        except BaseException as exc:
            self._write_failed()
            if isinstance(exc, ProducerFenced):
                log.warning(
                    "%s: the producer of %s[%d] was fenced: another replica opened it (this one lost the "
                    "partition, e.g. expelled from the group); its transaction is aborted",
                    self.name,
                    tp.topic,
                    tp.partition,
                )
            # A failed producer is never used again: a new one (a new epoch) is opened before the partition
            # is read again from its committed offset.
            if self._producers.get(tp) is slot:
                del self._producers[tp]
            self.stats.producer_rebuilds += 1
            await self._stop_quietly(producer)
            raise


@dataclass(slots=True)
class _PartitionWork:
    """One input partition's share of a batch: its outputs (dead letters included) and the offset to commit."""

    tp: TopicPartition
    consumed: int
    outputs: list[OutRecord]
    offset: int
    dead: int


def _tps(tps: Any) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps)) or "none"


class BatchSink(_BatchLoop):
    """consume → write durably → commit offsets, in batches (at-least-once into an idempotent sink).

    For consumers whose output is a database, not Kafka: the handler must be idempotent by ``event_id``
    (e.g. ``INSERT ... ON CONFLICT DO NOTHING``), because a crash after the write and before the commit
    redelivers the batch. Offsets are committed only after the handler returned and every dead letter of
    the batch was acknowledged by the broker.

    Poison (with ``dlq_topic``): a record whose handling raises a non-transient error is isolated and
    dead-lettered; the rest of its batch is written. Transient errors retry the whole batch with backoff.
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
        dlq_topic: str | None = None,
        service: str | None = None,
        max_records: int = 2000,
        retry: RetryPolicy | None = None,
        registry: CollectorRegistry | None = None,
        max_message_bytes: Callable[[str], int] | None = None,
        consumer_factory: Callable[..., Any] | None = None,
        producer_factory: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(
            name=name,
            service=service or name,
            dlq_topic=dlq_topic,
            max_records=max_records,
            retry=retry or RetryPolicy(),
            registry=registry,
            max_message_bytes=max_message_bytes,
        )
        self._handler = handler
        self._topics = list(topics)
        self._consumer = (consumer_factory or read_committed_consumer)(
            bootstrap, group_id, client_id, fetch_max_wait_ms=100
        )
        self._producer_factory = producer_factory or AIOKafkaProducer
        self._producer_config = producer_config(bootstrap, f"{client_id}-dlq")
        self._producer: Any = None
        self._producer_started = False

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.subscribe(self._topics, listener=_LogRebalance(self.name))
        self.started = True

    async def stop(self) -> None:
        self._stopping.set()
        self.started = False
        await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    def assignment(self) -> set[TopicPartition]:
        """The partitions this replica's consumer holds now (empty before the group assigned any)."""
        return set(self._consumer.assignment()) if self.started else set()

    async def _written(self, records: list[Record]) -> list[OutRecord]:
        if self._inject_faults:
            raise_injected_faults(records)
        refused = await self._handler(records)
        return [self._dead_letter(rec, why) for rec, why in refused or ()]

    async def _send_dead_letters(self, dead: list[OutRecord]) -> None:
        """Every dead letter acknowledged (``acks=all``) before the batch's offsets are committed."""
        try:
            if self._producer is None or not self._producer_started:
                if self._producer is None:
                    self._producer = self._producer_factory(**self._producer_config)
                await self._producer.start()
                self._producer_started = True
            futures = [
                await self._producer.send(r.topic, r.value, key=r.key, headers=r.headers) for r in dead
            ]
            results = await asyncio.gather(*futures, return_exceptions=True)
            failed = next((r for r in results if isinstance(r, BaseException)), None)
            if failed is not None:
                raise failed
        except BaseException:
            self._write_failed()
            old, self._producer, self._producer_started = self._producer, None, False
            if old is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(old.stop(), 10)
            self.stats.producer_rebuilds += 1
            raise

    async def run(self) -> None:
        backoff = self._retry.backoff_s
        while not self._stopping.is_set():
            try:
                batch = await self._consumer.getmany(timeout_ms=300, max_records=self._max_records)
                await self._observe_lag()
                if not batch:
                    continue
                records, offsets = _records_and_offsets(batch)
                dead, _ = await self._isolate(records, self._written)
                if dead:
                    await self._send_dead_letters(dead)
                await self._consumer.commit(offsets)
                self._write_succeeded()
                self._dead_lettered(len(dead))
                self._count(len(records), len(dead))
                backoff = self._retry.backoff_s
            except Exception:
                if self._stopping.is_set():
                    return
                backoff = await self._recover(backoff)
