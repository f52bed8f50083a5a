"""Plain aiokafka helpers for tests: what any Kafka client would do, nothing from tollgate."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from tollgate_core.kafka_auth import kafka_security


def raw_event(
    payload: dict[str, Any], *, schema: str = "credit-default.v1", event_id: str | None = None
) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id or str(uuid.uuid4()),
            "event_type": "observation",
            "schema": schema,
            "occurred_at": datetime.now(UTC).isoformat(),
            "producer": "test-producer",
            "payload": payload,
        }
    )


def good_record(i: int) -> dict[str, Any]:
    return {
        "customer_id": f"C{i:06d}",
        "student": "Yes" if i % 3 == 0 else "No",
        "balance": float(i % 2500),
        "income": 20000.0 + i,
        "default": i % 7 == 0,
        "customer_email": f"c{i}@example.com",
    }


async def produce(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes]],
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    """Write (key, value) messages with an idempotent producer; at most 20,000 await acks at once, so this
    also pre-loads large benchmark topics."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        **kafka_security(),
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=512 * 1024,
    )
    await producer.start()
    try:
        pending = []
        for key, value in messages:
            pending.append(await producer.send(topic, value, key=key, headers=headers))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def committed_reader(bootstrap: str, topic: str, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer (not started) that reads ``topic`` from the start, committed transactional data only, and
    never commits offsets."""
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        **kafka_security(),
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
        "isolation_level": "read_committed",
    }
    return AIOKafkaConsumer(topic, **{**config, **overrides})


async def collect(
    bootstrap: str, topic: str, *, expect: int, timeout: float = 60, settle: float = 2.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read ``topic`` from the start (read_committed) until ``expect`` records arrived, then keep reading for
    ``settle`` seconds so that any extra (duplicate) record would be seen too."""
    consumer = committed_reader(bootstrap, topic)
    await consumer.start()
    got: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=250)
            for records in batch.values():
                got.extend(records)
            if len(got) >= expect and settle_until is None:
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() >= settle_until:
                break
    finally:
        await consumer.stop()
    return got
