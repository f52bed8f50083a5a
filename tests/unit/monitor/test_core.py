"""The monitor's use cases over the in-memory store: the label join and the dead-lettering of unreadable
inference records, without Kafka or PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from tollgate_monitor.core import MonitorCore
from tollgate_monitor.memory import CollectedDeadLetters, InMemoryMonitorStore, StoredPrediction
from tollgate_monitor.ports import PredictionRow
from tollgate_monitor.settings import MonitorSettings

AT = datetime(2026, 6, 1, tzinfo=UTC)
CONTRACT = "synthetic-risk.v1"


def record(topic: str, offset: int, value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic, 0, offset, 0, 0, None, value, None, len(value), len(value), [])


def monitor() -> tuple[MonitorCore, InMemoryMonitorStore, CollectedDeadLetters]:
    store, dead = InMemoryMonitorStore(), CollectedDeadLetters()
    return MonitorCore(MonitorSettings(), store, dead, CollectorRegistry()), store, dead


async def test_a_label_joins_its_prediction_once_and_an_unreadable_record_is_refused() -> None:
    core, store, _ = monitor()
    contract = core.contracts.get(CONTRACT)
    assert contract is not None
    row = PredictionRow("r-1", "m", "1", CONTRACT, "e-1", 0.9, "true", AT)
    store.predictions[("r-1", "m", "1")] = StoredPrediction(row)
    validated = {
        "schema": CONTRACT,
        "labeled": True,
        "entity_id": "e-1",
        "occurred_at": AT.isoformat(),
        "payload": {"request_id": "r-1", contract.label.name: True},
    }
    good, bad = record("validated", 1, orjson.dumps(validated)), record("validated", 2, b"[1, 2]")
    refused = await core.on_labels([good, bad])
    assert [rec.offset for rec, _ in refused] == [2]
    joined = store.predictions[("r-1", "m", "1")]
    assert (joined.label, joined.truth, joined.labeled_at) == ("true", 1.0, AT)
    assert await core.on_labels([good]) == []  # redelivered: the prediction is labeled already
    assert core.metrics.labels.labels("joined")._value.get() == 1


async def test_an_unreadable_inference_record_is_dead_lettered_and_checkpointed_past() -> None:
    core, store, dead = monitor()
    topic = core.topics.inference_log
    await core.on_inference([record(topic, 7, b"not json")])
    assert [out.topic for out in dead.records] == [core.topics.dlq("monitor")]
    assert store.partitions[(topic, 0)][0] == 7
    await core.on_inference([record(topic, 7, b"not json")])  # redelivery after a crash
    assert len(dead.records) == 1
    assert core.metrics.records.labels("redelivered")._value.get() == 1
