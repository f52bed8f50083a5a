from __future__ import annotations

import uuid

import orjson
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from tests.kafka_helpers import good_record, raw_event
from tollgate_core.contracts import ContractRegistry
from tollgate_ingest.claims import MemoryClaimStore
from tollgate_ingest.core import Normaliser
from tollgate_ingest.stage import IngestMetrics, IngestStage


def record(value: bytes, offset: int, partition: int = 0) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("raw", partition, offset, 0, 0, None, value, None, len(value), len(value), [])


def make_stage(claims: MemoryClaimStore) -> IngestStage:
    return IngestStage(
        Normaliser(ContractRegistry.from_directory()),
        claims,
        output_topic="ingested",
        dlq_topic="dlq",
        metrics=IngestMetrics(CollectorRegistry()),
    )


async def test_duplicates_dropped_poison_dead_lettered_replay_kept() -> None:
    claims = MemoryClaimStore()
    stage = make_stage(claims)
    eid = str(uuid.uuid4())
    batch = [
        record(raw_event(good_record(1), event_id=eid), 0),
        record(b"garbage", 1),
        record(raw_event(good_record(1), event_id=eid), 2),
    ]
    out = await stage(batch)
    assert [o.topic for o in out] == ["dlq", "ingested"]
    assert orjson.loads(out[1].value)["event_id"] == eid
    # The same message replayed (its transaction aborted by a crash) still owns its claim ...
    again = await stage([batch[0]])
    assert [o.topic for o in again] == ["ingested"]
    # ... while a later copy of the event from another offset is a duplicate.
    assert await stage([record(raw_event(good_record(1), event_id=eid), 9, partition=1)]) == []
