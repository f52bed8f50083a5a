"""DLQ depth on the real broker: counted exactly while the pending span is small, and beyond the explicit
limit (``DEPTH_EXACT_MAX_OFFSETS``) taken from the offsets alone, without reading every pending record."""

from __future__ import annotations

import time
import uuid

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from tollgate_core.dlq import DEPTH_EXACT_MAX_OFFSETS, DeadLetterQueues
from tollgate_core.kafka import dead_letter, producer_config
from tollgate_core.topics import Topics


async def _dead_letters(bootstrap: str, topics: Topics, n: int, per_transaction: int) -> int:
    """``n`` dead letters of the validator in transactions (each leaves a marker); returns the first one's
    failure time."""
    producer = AIOKafkaProducer(
        **producer_config(bootstrap, "test-dlq-depth", transactional_id=f"test-dlq-{uuid.uuid4().hex[:6]}")
    )
    await producer.start()
    first_failed_at = int(time.time() * 1000)
    try:
        for start in range(0, n, per_transaction):
            async with producer.transaction():
                for i in range(start, min(n, start + per_transaction)):
                    rec = ConsumerRecord(
                        topics.events_ingested, 0, i, 0, 0, None, b"bad %d" % i, None, 0, 0, []
                    )  # fmt: skip
                    out = dead_letter(rec, topics.dlq("validator"), "validator", ValueError("bad"))
                    await producer.send(out.topic, out.value, key=out.key, headers=out.headers, partition=0)
    finally:
        await producer.stop()
    return first_failed_at


async def test_depth_is_exact_below_the_limit_and_the_offset_span_above_it(
    bootstrap: str, namespace: str
) -> None:
    assert DEPTH_EXACT_MAX_OFFSETS >= 1000  # the documented limit
    topics = Topics(namespace)
    first_failed_at = await _dead_letters(bootstrap, topics, 12, per_transaction=3)  # 12 records, 4 markers
    queues = DeadLetterQueues(bootstrap, namespace)

    exact = await queues.depth("validator")
    assert (exact.pending, exact.exact) == (12, True)
    assert exact.end == {0: 16, 1: 0, 2: 0} and exact.cursor == {0: 0, 1: 0, 2: 0}

    bounded = await queues.depth("validator", exact_max_offsets=5)
    assert (bounded.pending, bounded.exact) == (16, False)  # the span: records and markers, nothing read
    assert bounded.oldest_failed_at_ms is not None and bounded.oldest_failed_at_ms >= first_failed_at - 1000
    assert bounded.oldest_failed_at_ms == exact.oldest_failed_at_ms  # the first pending record is the oldest
