"""What each role may do and see, without a database: the role table and the operator's redaction."""

from __future__ import annotations

from typing import Any

import pytest

from tollgate_audit_log.access import ALLOWED, REDACTED, Action, redact_item, redact_lineage
from tollgate_core.apikeys import Principal


def who(*roles: str) -> Principal:
    return Principal("someone", frozenset(roles))


def item(stream: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"stream": stream, "seq": 1, "event": {"event_id": "x", "payload": payload}}


def test_role_table() -> None:
    assert ALLOWED[Action.QUERY] == ALLOWED[Action.EXPORT] == {"compliance-reader", "auditor", "operator"}
    assert ALLOWED[Action.VERIFY] == ALLOWED[Action.CHECKPOINTS] == {"auditor", "operator"}
    assert ALLOWED[Action.PROOF] == {"compliance-reader", "auditor"}
    assert ALLOWED[Action.ACKNOWLEDGE] == {"auditor"}
    assert all("scorer-client" not in roles for roles in ALLOWED.values())


# Every field of a recorded row that can carry a value, with the row it sits in and how to read it.
INFERENCE_ROW = {
    "stream": "inference",
    "seq": 1,
    "entity_id": "C-000042",
    "request_id": "req-1",
    "event": {
        "event_id": "x",
        "event_type": "inference",
        "schema": "inference.log.v1",
        "producer": "scorer",
        "payload": {
            "request_id": "req-1",
            "model": "m",
            "version": "1",
            "route": "champion",
            "entity_id": "C-000042",
            "inputs": {"balance": 1.0},
            "outputs": {"score": 0.2},
            "latency_ms": 0.8,
            "shadow_extra": "a field added later",
        },
    },
}
REJECTED_ROW = {
    "stream": "rejected",
    "seq": 1,
    "entity_id": "C-000043",
    "event": {
        "event_id": "y",
        "event_type": "rejected",
        "schema": "credit-default.v1",
        "entity_id": "C-000043",
        "payload": {"customer_id": "C-000043", "balance": -3},
        "violations": [
            {"field": "balance", "rule": "minimum", "message": "balance -3 < minimum 0", "value": -3}
        ],
        "rejected_at": "2026-01-01T00:00:00Z",
    },
}
VALIDATED_ROW = {
    "stream": "validated",
    "seq": 1,
    "entity_id": "C-000044",
    "event": {
        "event_id": "z",
        "event_type": "validated",
        "entity_id": "C-000044",
        "labeled": True,
        "payload": {"customer_id": "C-000044", "balance": 99999.0},
        "quality_flags": [
            {"field": "balance", "check": "outside_training_range", "value": 99999.0, "expected": "[0, 2654]"}
        ],
    },
}
FIELDS = {
    "inference inputs": (INFERENCE_ROW, lambda r: r["event"]["payload"]["inputs"]),
    "inference outputs": (INFERENCE_ROW, lambda r: r["event"]["payload"]["outputs"]),
    "inference payload entity_id": (INFERENCE_ROW, lambda r: r["event"]["payload"]["entity_id"]),
    "inference unknown payload field": (INFERENCE_ROW, lambda r: r["event"]["payload"]["shadow_extra"]),
    "inference entity_id column": (INFERENCE_ROW, lambda r: r["entity_id"]),
    "rejected record": (REJECTED_ROW, lambda r: r["event"]["payload"].get("record", r["event"]["payload"])),
    "rejected entity_id": (REJECTED_ROW, lambda r: r["event"]["entity_id"]),
    "rejected entity_id column": (REJECTED_ROW, lambda r: r["entity_id"]),
    "violation value": (REJECTED_ROW, lambda r: r["event"]["violations"][0]["value"]),
    "violation message": (REJECTED_ROW, lambda r: r["event"]["violations"][0]["message"]),
    "validated record": (VALIDATED_ROW, lambda r: r["event"]["payload"].get("record", r["event"]["payload"])),
    "validated entity_id": (VALIDATED_ROW, lambda r: r["event"]["entity_id"]),
    "quality flag value": (VALIDATED_ROW, lambda r: r["event"]["quality_flags"][0]["value"]),
    "quality flag expected": (VALIDATED_ROW, lambda r: r["event"]["quality_flags"][0]["expected"]),
}
# What stays visible to every role (no value of a record): kept, so the operator can still work.
KEPT = {
    "inference model": (INFERENCE_ROW, lambda r: r["event"]["payload"]["model"]),
    "inference route": (INFERENCE_ROW, lambda r: r["event"]["payload"]["route"]),
    "inference request_id": (INFERENCE_ROW, lambda r: r["request_id"]),
    "violation field": (REJECTED_ROW, lambda r: r["event"]["violations"][0]["field"]),
    "violation rule": (REJECTED_ROW, lambda r: r["event"]["violations"][0]["rule"]),
    "quality flag check": (VALIDATED_ROW, lambda r: r["event"]["quality_flags"][0]["check"]),
}
SEES = {"compliance-reader": True, "auditor": True, "operator": False}
TABLE = [(role, name) for role in SEES for name in FIELDS]


@pytest.mark.parametrize(("role", "field"), TABLE, ids=[f"{r}-{f}" for r, f in TABLE])
def test_role_by_field_redaction_table(role: str, field: str) -> None:
    row, read = FIELDS[field]
    seen = read(redact_item(row, who(role)))
    if SEES[role]:
        assert seen == read(row)
    else:
        assert seen == REDACTED


@pytest.mark.parametrize("role", SEES)
@pytest.mark.parametrize("field", KEPT)
def test_fields_without_values_stay_visible(role: str, field: str) -> None:
    row, read = KEPT[field]
    assert read(redact_item(row, who(role))) == read(row)


def test_operator_loses_inference_inputs_and_outputs() -> None:
    original = item(
        "inference", {"model": "m", "version": "1", "inputs": {"balance": 1.0}, "outputs": {"score": 0.2}}
    )
    seen = redact_item(original, who("operator"))
    assert seen["event"]["payload"] == {"model": "m", "version": "1", "inputs": REDACTED, "outputs": REDACTED}
    assert original["event"]["payload"]["inputs"] == {"balance": 1.0}  # the original is not modified
    assert redact_item(original, who("compliance-reader")) is original
    assert redact_item(original, who("auditor")) is original


def test_operator_loses_data_records_but_keeps_decisions() -> None:
    rejected = item("rejected", {"customer_id": "C-1", "balance": -3})
    assert redact_item(rejected, who("operator"))["event"]["payload"] == {"record": REDACTED}
    lifecycle = item("lifecycle", {"model": "m", "actor": "alice"})
    assert redact_item(lifecycle, who("operator")) is lifecycle


def test_operator_lineage_has_no_inputs_or_outputs() -> None:
    view = {
        "request_id": "r",
        "inferences": [{"version": "7", "entity_id": "C-1", "inputs": {"a": 1}, "outputs": {"b": 2}}],
    }
    seen = redact_lineage(view, who("operator"))
    assert seen["inferences"][0] == {
        "version": "7",
        "entity_id": REDACTED,
        "inputs": REDACTED,
        "outputs": REDACTED,
    }
    assert redact_lineage(view, who("auditor")) is view


def test_lineage_shows_logged_reason_codes_to_compliance_and_hides_them_from_operators() -> None:
    from datetime import UTC, datetime

    from tollgate_audit_log.lineage import inference_view

    explanation = {
        "method": "linear",
        "output": "log_odds",
        "baseline": -3.1,
        "value": -1.2,
        "reasons": [{"feature": "balance", "contribution": 1.7}],
    }
    row = {
        **item(
            "inference",
            {"model": "m", "version": "7", "inputs": {"balance": 1.0}, "explanation": explanation},
        ),
        "occurred_at": datetime(2026, 1, 1, tzinfo=UTC),
        "model": "m",
        "version": "7",
        "trace_id": None,
        "event_id": "x",
        "row_hash": "00",
    }
    view = inference_view(row, None)
    assert view["explanation"] == explanation
    lineage = {"request_id": "r", "inferences": [view]}
    assert redact_lineage(lineage, who("compliance-reader"))["inferences"][0]["explanation"] == explanation
    assert redact_lineage(lineage, who("operator"))["inferences"][0]["explanation"] == REDACTED
    assert redact_item(row, who("operator"))["event"]["payload"]["explanation"] == REDACTED


def test_a_key_with_a_compliance_role_besides_operator_sees_payloads() -> None:
    original = item("inference", {"model": "m", "version": "1", "inputs": {"a": 1.0}, "outputs": {"s": 0.2}})
    assert redact_item(original, who("operator", "auditor")) is original
    assert redact_item(original, who("operator", "viewer"))["event"]["payload"]["inputs"] == REDACTED
