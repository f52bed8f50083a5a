"""An in-memory Kafka with just what the consumer runtime uses (group consumer, transactional and plain
producer, per-topic size limits), for fast unit tests of ``tollgate_core.kafka``. The same tests run against
the real broker too (tests/unit/core/test_runtime.py), so this fake is held to what Kafka does."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import MessageSizeTooLargeError, ProducerFenced
from aiokafka.structs import ConsumerRecord

Stored = tuple[bytes | None, bytes, list[tuple[str, bytes]]]


@dataclass
class FakeBroker:
    partitions: dict[str, int] = field(default_factory=dict)
    max_bytes: dict[str, int] = field(default_factory=dict)
    logs: dict[TopicPartition, list[Stored]] = field(default_factory=lambda: defaultdict(list))
    committed: dict[tuple[str, TopicPartition], int] = field(default_factory=dict)
    # The newest epoch of each transactional id: starting a producer bumps it and fences the older ones.
    epochs: dict[str, int] = field(default_factory=dict)

    def create_topic(self, name: str, partitions: int = 1, max_bytes: int = 1_048_576) -> None:
        self.partitions[name] = partitions
        self.max_bytes[name] = max_bytes

    def append(self, topic: str, partition: int, rec: Stored) -> None:
        self.logs[TopicPartition(topic, partition)].append(rec)

    def records(self, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
        out = []
        for p in range(self.partitions[topic]):
            for offset, (key, value, headers) in enumerate(self.logs[TopicPartition(topic, p)]):
                out.append(_record(topic, p, offset, key, value, headers))
        return out

    def consumer(
        self, bootstrap: str, group_id: str | None, client_id: str, *, topics: Any = (), **_: Any
    ) -> FakeConsumer:
        """A group consumer (``subscribe``), or without a group one assigned every partition of ``topics``
        when it starts (what aiokafka does for a consumer built with topics and no group)."""
        return FakeConsumer(self, group_id, tuple(topics))

    def producer(self, **config: Any) -> FakeProducer:
        return FakeProducer(self, config.get("transactional_id"))


def _record(
    topic: str, partition: int, offset: int, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(value),
        headers=tuple(headers),
    )


class FakeConsumer:
    def __init__(self, broker: FakeBroker, group_id: str | None, topics: tuple[str, ...] = ()) -> None:
        self._broker = broker
        self._group = group_id
        self._topics = topics
        self._positions: dict[TopicPartition, int] = {}
        self._listener: Any = None
        self._announced = False

    async def start(self) -> None:
        for topic in self._topics:  # no group: every partition, from the start
            for p in range(self._broker.partitions.get(topic, 0)):
                self._positions[TopicPartition(topic, p)] = 0

    async def stop(self) -> None:
        return None

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        """Every partition of ``topics`` (the fake has no group: each consumer gets them all); the listener
        hears of the assignment at the first ``getmany``, as aiokafka's does after its first join."""
        self._listener = listener
        for topic in topics:
            for p in range(self._broker.partitions[topic]):
                tp = TopicPartition(topic, p)
                self._positions[tp] = self._broker.committed.get((self._group, tp), 0)

    def assignment(self) -> set[TopicPartition]:
        return set(self._positions)

    async def committed(self, tp: TopicPartition) -> int | None:
        return self._broker.committed.get((self._group, tp))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._positions[tp] = offset

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        for tp in tps or tuple(self._positions):
            self._positions[tp] = 0

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self._broker.logs[tp]) for tp in tps}

    async def position(self, tp: TopicPartition) -> int:
        return self._positions[tp]

    def highwater(self, tp: TopicPartition) -> int:
        return len(self._broker.logs[tp])

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            self._broker.committed[(self._group, tp)] = offset

    async def getmany(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        if self._listener is not None and not self._announced:
            self._announced = True
            await self._listener.on_partitions_assigned(set(self._positions))
        budget = max_records or 1 << 30
        out: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
        for tp in sorted(self._positions):
            log = self._broker.logs[tp]
            start = self._positions[tp]
            take = log[start : start + budget]
            if take:
                out[tp] = [_record(tp.topic, tp.partition, start + i, *r) for i, r in enumerate(take)]
                self._positions[tp] = start + len(take)
                budget -= len(take)
        if not out:
            await asyncio.sleep(min(timeout_ms, 20) / 1000)  # what a long poll with nothing to read does
        return out


class _Batch:
    def __init__(self) -> None:
        self.items: list[Stored] = []

    def append(self, *, key: bytes | None, value: bytes, timestamp: int, headers: Any) -> object:
        self.items.append((key, value, list(headers)))
        return object()

    def record_count(self) -> int:
        return len(self.items)


class _Cluster:
    def __init__(self, broker: FakeBroker) -> None:
        self._broker = broker

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self._broker.partitions[topic]))


class _Client:
    def __init__(self, broker: FakeBroker) -> None:
        self.cluster = _Cluster(broker)

    async def _wait_on_metadata(self, topic: str) -> None:
        return None


class FakeProducer:
    """Transactional when given a transactional id: writes and offsets appear together at commit. Starting
    a producer with a transactional id fences every producer that started with it before (its commit raises
    ``ProducerFenced`` and its transaction is dropped), as InitProducerId does."""

    def __init__(self, broker: FakeBroker, transactional_id: str | None) -> None:
        self._broker = broker
        self._txn = transactional_id
        self._epoch = 0
        self._pending: list[tuple[str, int, Stored]] = []
        self._offsets: dict[tuple[str, TopicPartition], int] = {}
        self.client = _Client(broker)

    async def start(self) -> None:
        if self._txn is not None:
            self._epoch = self._broker.epochs[self._txn] = self._broker.epochs.get(self._txn, 0) + 1

    async def stop(self) -> None:
        self._pending.clear()
        self._offsets.clear()

    async def begin_transaction(self) -> None:
        self._pending.clear()
        self._offsets.clear()

    async def commit_transaction(self) -> None:
        if self._txn is not None and self._broker.epochs.get(self._txn) != self._epoch:
            self._pending.clear()
            self._offsets.clear()
            raise ProducerFenced()
        for topic, partition, rec in self._pending:
            self._broker.append(topic, partition, rec)
        self._broker.committed.update(self._offsets)
        self._pending.clear()
        self._offsets.clear()

    async def abort_transaction(self) -> None:
        self._pending.clear()
        self._offsets.clear()

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int], group_id: str) -> None:
        for tp, offset in offsets.items():
            self._offsets[(group_id, tp)] = offset

    def create_batch(self) -> _Batch:
        return _Batch()

    def _accept(self, topic: str, partition: int, items: list[Stored]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        limit = self._broker.max_bytes[topic]
        if any(len(v) + len(k or b"") + sum(len(n) + len(x) for n, x in h) > limit for k, v, h in items):
            future.set_exception(MessageSizeTooLargeError())
            return future
        for rec in items:
            if self._txn is None:
                self._broker.append(topic, partition, rec)
            else:
                self._pending.append((topic, partition, rec))
        future.set_result(None)
        return future

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        return self._accept(topic, partition, batch.items)

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None, **_: Any
    ) -> asyncio.Future[Any]:
        return self._accept(topic, 0, [(key, value, list(headers or ()))])
