"""From consumed message to audit entry: envelope checks, per-stream index columns, PII protection of data
records, poison messages. Uses the catalog's own examples, so a field renamed by a producer breaks here."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from tollgate_audit_log.streams import (
    STREAMS,
    VALIDATED,
    EntryBuilder,
    PoisonMessage,
    StreamSpec,
    stream_specs,
)
from tollgate_core.contracts import ContractRegistry
from tollgate_core.events import dumps
from tollgate_core.paths import schemas_dir
from tollgate_core.scoring import Channel, InferenceLogEvent, InferenceLogPayload, InferenceOutputs, Route

PII_KEY = b"unit-test-pii-key"
SPECS = {s.name: s for s in (*STREAMS, VALIDATED)}


def example(topic: str, name: str) -> dict[str, Any]:
    path = Path(schemas_dir(), "topics", topic, "v1.examples", f"{name}.json")
    return json.loads(path.read_text())


def build(spec: StreamSpec, doc: dict[str, Any] | bytes, headers: Any = None) -> Any:
    builder = EntryBuilder(spec, ContractRegistry.from_directory(), PII_KEY)
    raw = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    return builder.build(raw, f"t.{spec.topic}.v1", 2, 41, headers)


def test_streams_cover_the_audited_topics_and_validated_is_opt_in() -> None:
    assert [s.topic for s in stream_specs(audit_validated=False)] == [
        "models.lifecycle",
        "models.candidates",
        "models.submissions",
        "training.requests",
        "inference.log",
        "monitor.alerts",
        "operations",
        "registrations",
        "events.rejected",
    ]
    assert stream_specs(audit_validated=True)[-1].topic == "events.validated"


def test_lifecycle_event_is_indexed_by_model_and_version_and_kept_verbatim() -> None:
    doc = example("models.lifecycle", "promoted-first-version")
    entry = build(SPECS["lifecycle"], doc)
    assert (entry.model, entry.version, entry.request_id, entry.entity_id) == (
        "credit-default-risk",
        "1",
        None,
        None,
    )
    assert (entry.event_id, entry.event_type, entry.partition, entry.offset) == (
        doc["event_id"],
        "promoted",
        2,
        41,
    )
    assert entry.occurred_at == datetime(2026, 11, 22, 19, 5, 38, 752189, tzinfo=UTC)
    assert entry.envelope == orjson.dumps(doc).decode()  # byte for byte as sent


@pytest.mark.parametrize(
    ("stream", "topic", "name"),
    [
        ("candidates", "models.candidates", "credit-default-first-version"),
        ("alerts", "monitor.alerts", "data-drift-raised"),
    ],
)
def test_model_version_streams(stream: str, topic: str, name: str) -> None:
    doc = example(topic, name)
    entry = build(SPECS[stream], doc)
    assert (entry.model, entry.version) == (doc["payload"]["model"], doc["payload"]["version"])


def test_training_request_is_found_by_its_own_event_id() -> None:
    doc = example("training.requests", "from-drift-alert")
    entry = build(SPECS["requests"], doc)
    assert entry.request_id == doc["event_id"] and entry.model == doc["payload"]["model"]


def test_inference_log_index_and_trace_from_the_header() -> None:
    event = InferenceLogEvent(
        event_id=uuid.uuid4(),
        event_type="inference",
        schema="inference.log.v1",
        occurred_at=datetime.now(UTC),
        producer="scorer",
        payload=InferenceLogPayload(
            request_id="req-1",
            model="credit-default-risk",
            version="4",
            route=Route.CANARY,
            channel=Channel.HTTP,
            contract="credit-default.v1",
            entity_id="C-1",
            inputs={"balance": 10.0},
            latency_ms=1.2,
            outputs=InferenceOutputs(prediction=True, score=0.9),
            trace_id="ab" * 16,
        ),
    )
    entry = build(SPECS["inference"], dumps(event))
    assert (entry.request_id, entry.entity_id, entry.model, entry.version, entry.trace_id) == (
        "req-1",
        "C-1",
        "credit-default-risk",
        "4",
        "ab" * 16,
    )
    traceparent = b"00-" + b"cd" * 16 + b"-" + b"ef" * 8 + b"-01"
    assert build(SPECS["inference"], dumps(event), [("traceparent", traceparent)]).trace_id == "cd" * 16


def test_rejected_record_has_its_pii_protected_and_entity_indexed() -> None:
    doc = example("events.rejected", "credit-default-out-of-range")
    doc["payload"]["customer_email"] = "jane@example.com"
    doc["violations"].append(
        {
            "field": "customer_email",
            "rule": "type",
            "message": "customer_email 'jane@example.com' must be a number",
            "value": "jane@example.com",
        }
    )
    entry = build(SPECS["rejected"], doc)
    stored = orjson.loads(entry.envelope)
    hashed = hmac.new(PII_KEY, b"jane@example.com", hashlib.sha256).hexdigest()
    assert stored["payload"]["customer_email"] == hashed
    assert stored["violations"][-1]["value"] == hashed
    assert stored["violations"][-1]["message"] == (
        "customer_email: rule type failed (value withheld: personal data)"
    )  # the message quoted the value: replaced for every role, not only hidden from some
    assert "jane@example.com" not in entry.envelope
    assert entry.envelope == orjson.dumps(stored, option=orjson.OPT_SORT_KEYS).decode()  # re-serialised
    assert entry.entity_id == doc["payload"]["customer_id"]
    assert stored["payload"]["student"] == "Maybe"  # not personal data: kept for the compliance record


def test_a_record_of_a_contract_registered_live_is_withheld_until_known_then_protected() -> None:
    """A contract registered moments ago may reach the audit-log's data stream before its follower applied
    it: its values are withheld (which fields are personal is unknown), never kept in the clear; once the
    contract is in force (``forget`` after a registration) its own PII rules apply."""
    contracts = ContractRegistry.from_directory()
    builder = EntryBuilder(SPECS["rejected"], contracts, PII_KEY)
    doc = example("events.rejected", "credit-default-out-of-range")
    doc["schema"] = "onboarded.v1"
    doc["payload"]["customer_email"] = "jane@example.com"
    unknown = builder.build(orjson.dumps(doc), "t.events.rejected.v1", 0, 1)
    assert (
        "jane@example.com" not in unknown.envelope and doc["payload"]["customer_id"] not in unknown.envelope
    )
    stored = orjson.loads(unknown.envelope)
    assert set(stored["payload"]) == set(doc["payload"]) and unknown.entity_id is None
    assert [v["field"] for v in stored["violations"]] == [v["field"] for v in doc["violations"]]

    onboarded = contracts.latest("credit-default").model_copy(update={"contract": "onboarded"})
    contracts.put(onboarded)
    builder.forget(onboarded.schema_id)
    known = orjson.loads(builder.build(orjson.dumps(doc), "t.events.rejected.v1", 0, 2).envelope)
    hashed = hmac.new(PII_KEY, b"jane@example.com", hashlib.sha256).hexdigest()
    assert known["payload"]["customer_email"] == hashed and known["payload"]["student"] == "Maybe"


def test_validated_events_carry_their_entity_id() -> None:
    doc = example("events.validated", "credit-default-no-flags")
    assert build(VALIDATED, doc).entity_id == doc["entity_id"]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (
            orjson.dumps({"event_id": "nope", "event_type": "x", "occurred_at": "2026-01-01T00:00:00Z"}),
            "not a UUID",
        ),
        (orjson.dumps({"event_id": str(uuid.uuid4()), "occurred_at": "2026-01-01T00:00:00Z"}), "event_type"),
        (
            orjson.dumps({"event_id": str(uuid.uuid4()), "event_type": "x", "occurred_at": "yesterday"}),
            "ISO 8601",
        ),
        (
            orjson.dumps(
                {"event_id": str(uuid.uuid4()), "event_type": "x", "occurred_at": "2026-01-01T00:00:00"}
            ),
            "UTC offset",
        ),
        *(
            (
                orjson.dumps({"event_id": str(uuid.uuid4()), "event_type": "x", "occurred_at": moment}),
                "out of range",
            )
            for moment in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00")
        ),
        (
            orjson.dumps(
                {
                    "event_id": str(uuid.uuid4()),
                    "event_type": "x",
                    "occurred_at": "2026-01-01T00:00:00Z",
                    "payload": {"a": "nul\u0000"},
                }
            ),
            "NUL",
        ),
    ],
)
def test_poison_messages_are_refused_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(PoisonMessage, match=reason):
        build(SPECS["lifecycle"], raw)


def test_event_ids_are_normalised_to_canonical_text() -> None:
    doc = example("models.lifecycle", "staged-canary")
    doc["event_id"] = doc["event_id"].upper()
    assert build(SPECS["lifecycle"], doc).event_id == doc["event_id"].lower()


@pytest.mark.parametrize("name", ["http-champion-pii-hashed", "kafka-shadow-minimal"])
def test_inference_log_examples_are_indexed(name: str) -> None:
    doc = example("inference.log", name)
    entry = build(SPECS["inference"], doc)
    p = doc["payload"]
    assert (entry.request_id, entry.entity_id, entry.model, entry.version, entry.trace_id) == (
        p["request_id"],
        p.get("entity_id"),
        p["model"],
        p["version"],
        p.get("trace_id"),
    )
    assert entry.envelope == orjson.dumps(doc).decode()


def test_the_api_names_every_stream_it_can_return() -> None:
    """The audit API's description of ``stream`` lists every chain a row can belong to (it once named six of
    ten, so a reader of the OpenAPI document did not learn that operations, registrations or submissions
    could be queried)."""
    from tollgate_audit_log.api import AuditItem
    from tollgate_audit_log.streams import stream_specs

    described = AuditItem.model_fields["stream"].description or ""
    for spec in stream_specs(audit_validated=True):
        assert spec.name in described, spec.name
