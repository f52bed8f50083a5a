"""Metric labels of the validator come from the contracts, never from the events: an event with a
thousand made-up field names adds no series."""

from __future__ import annotations

import orjson
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from tollgate_core.contracts import ContractRegistry
from tollgate_validator.stage import References, ValidatorMetrics, ValidatorStage


def record(value: bytes, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("ingested", 0, offset, 0, 0, None, value, None, len(value), len(value), [])


def series(registry: CollectorRegistry, name: str) -> list[dict[str, str]]:
    return [s.labels for m in registry.collect() for s in m.samples if s.name == name + "_total"]


async def test_field_labels_are_bounded_by_the_contract() -> None:
    registry = CollectorRegistry()
    contracts = ContractRegistry.from_directory()
    stage = ValidatorStage(
        contracts,
        References(),
        validated_topic="validated",
        rejected_topic="rejected",
        dlq_topic="dlq",
        metrics=ValidatorMetrics(registry),
    )
    payload = {"customer_id": "C1", "student": "Maybe", "balance": 1.0}
    payload |= {f"made_up_{i}": 1 for i in range(1000)}
    doc = {"schema": "credit-default.v1", "payload": payload}
    out = await stage([record(orjson.dumps(doc), 0)])
    rejected = orjson.loads(out[0].value)
    # The rejection record itself still names the made-up fields (as many as it keeps).
    assert {v["field"] for v in rejected["violations"] if v["rule"] == "unknown_field"} >= {"made_up_0"}
    labels = series(registry, "tollgate_validator_violations")
    assert {(s["field"], s["rule"]) for s in labels} == {
        ("student", "category"),
        ("(undeclared)", "unknown_field"),
    }
