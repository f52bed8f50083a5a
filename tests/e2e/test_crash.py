"""SIGKILL the validator mid-stream and restart it: nothing is lost and nothing is validated twice."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from tests.conftest import wait_http_ok
from tests.kafka_helpers import collect, good_record, produce, raw_event
from tests.polling import eventually
from tollgate_core.kafka_auth import kafka_security

TOTAL = 40_000


async def _count_committed(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        **kafka_security(),
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partitions = consumer.assignment() or set()
        while not partitions:
            await asyncio.sleep(0.05)
            partitions = consumer.assignment()
        ends = await consumer.end_offsets(list(partitions))
        begins = await consumer.beginning_offsets(list(partitions))
        return sum(ends[tp] - begins[tp] for tp in partitions)  # an upper bound incl. markers; >0 is enough
    finally:
        await consumer.stop()


async def test_validator_sigkill_loses_nothing_and_duplicates_nothing(
    services: Any, namespace: str, bootstrap: str
) -> None:
    ids = [str(uuid.uuid4()) for _ in range(TOTAL)]
    await produce(
        bootstrap,
        f"{namespace}.events.raw.v1",
        [(f"C{i:06d}".encode(), raw_event(good_record(i), event_id=e)) for i, e in enumerate(ids)],
    )
    ingest = services("ingest")
    await wait_http_ok(f"http://127.0.0.1:{ingest.port}/readyz", proc=ingest)
    validator = services("validator", batch_max_records="500")
    await wait_http_ok(f"http://127.0.0.1:{validator.port}/readyz", proc=validator)

    async def two_thousand_validated() -> bool:
        return await _count_committed(bootstrap, f"{namespace}.events.validated.v1") >= 2_000

    await eventually(
        two_thousand_validated, timeout=60, interval=0.05, what="2,000 validated events", seen=validator.log
    )
    validator.kill()  # SIGKILL: no shutdown hook runs; a transaction may be left open
    assert validator.proc is not None and validator.proc.returncode == -9

    validator.start()
    validated = await collect(
        bootstrap, f"{namespace}.events.validated.v1", expect=TOTAL, timeout=180, settle=3
    )
    seen = [orjson.loads(r.value)["event_id"] for r in validated]
    assert len(seen) == len(set(seen)), f"{len(seen) - len(set(seen))} events validated twice"
    assert set(seen) == set(ids), f"{len(set(ids) - set(seen))} events lost"
