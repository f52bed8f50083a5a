"""What each role may do and see, without a database: the role table and the operator's redaction."""

from __future__ import annotations

from typing import Any

from tollgate_audit_log.access import ALLOWED, REDACTED, Action, redact_item, redact_lineage


def item(stream: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"stream": stream, "seq": 1, "event": {"event_id": "x", "payload": payload}}


def test_role_table() -> None:
    assert ALLOWED[Action.QUERY] == ALLOWED[Action.EXPORT] == {"compliance-reader", "auditor", "operator"}
    assert ALLOWED[Action.VERIFY] == ALLOWED[Action.CHECKPOINTS] == {"auditor", "operator"}
    assert all("scorer-client" not in roles for roles in ALLOWED.values())


def test_operator_loses_inference_inputs_and_outputs_only() -> None:
    original = item(
        "inference", {"model": "m", "version": "1", "inputs": {"balance": 1.0}, "outputs": {"score": 0.2}}
    )
    seen = redact_item(original, "operator")
    assert seen["event"]["payload"] == {"model": "m", "version": "1", "inputs": REDACTED, "outputs": REDACTED}
    assert original["event"]["payload"]["inputs"] == {"balance": 1.0}  # the original is not modified
    assert redact_item(original, "compliance-reader") is original
    assert redact_item(original, "auditor") is original


def test_operator_loses_data_records_but_keeps_decisions() -> None:
    rejected = item("rejected", {"customer_id": "C-1", "balance": -3})
    assert redact_item(rejected, "operator")["event"]["payload"] == {"record": REDACTED}
    lifecycle = item("lifecycle", {"model": "m", "actor": "alice"})
    assert redact_item(lifecycle, "operator") is lifecycle


def test_operator_lineage_has_no_inputs_or_outputs() -> None:
    view = {"request_id": "r", "inferences": [{"version": "7", "inputs": {"a": 1}, "outputs": {"b": 2}}]}
    seen = redact_lineage(view, "operator")
    assert seen["inferences"][0] == {"version": "7", "inputs": REDACTED, "outputs": REDACTED}
    assert redact_lineage(view, "auditor") is view
