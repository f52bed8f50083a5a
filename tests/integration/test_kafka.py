"""The pinned Kafka broker really works with aiokafka: produce, consume, consumer groups, idempotence,
transactions. Kafka 4.x dropped old protocol versions, so this is what proves the version choice."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.kafka_helpers import collect
from tollgate_core.kafka_auth import kafka_security


async def _topic(bootstrap: str, partitions: int = 3) -> str:
    name = f"roundtrip-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_security())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()
    return name


async def test_idempotent_produce_and_group_consume(bootstrap: str) -> None:
    topic = await _topic(bootstrap)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, **kafka_security(), acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for i in range(300):
            await producer.send(topic, f"m{i}".encode(), key=f"k{i % 10}".encode())
        await producer.flush()
    finally:
        await producer.stop()

    group = f"g-{uuid.uuid4().hex[:6]}"
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        **kafka_security(),
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen: list[bytes] = []
    try:
        while len(seen) < 300:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                seen.extend(r.value for r in records)
        await consumer.commit()
        committed = {tp.partition: await consumer.committed(tp) for tp in consumer.assignment()}
    finally:
        await consumer.stop()
    assert sorted(seen) == sorted(f"m{i}".encode() for i in range(300))
    assert sum(v or 0 for v in committed.values()) == 300

    # A second member of the same group resumes from the committed offsets: nothing is read again.
    again = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, **kafka_security(), group_id=group, enable_auto_commit=False
    )
    await again.start()
    try:
        assert await again.getmany(timeout_ms=1500) == {}
    finally:
        await again.stop()


async def test_transactions_hide_aborted_writes(bootstrap: str) -> None:
    topic = await _topic(bootstrap, partitions=1)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, **kafka_security(), transactional_id=f"tx-{uuid.uuid4().hex[:6]}"
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send(topic, b"committed")
            await producer.send_offsets_to_transaction({TopicPartition(topic, 0): 0}, "some-group")
        await producer.begin_transaction()
        await producer.send(topic, b"aborted")
        await producer.abort_transaction()
    finally:
        await producer.stop()
    got = await collect(bootstrap, topic, expect=1, timeout=10, settle=1.0)
    assert [r.value for r in got] == [b"committed"]
