"""Who may do what, and what each role sees.

Roles come from the platform's API keys (``tollgate_core.apikeys``; stored hashed):

================  ==============================  ==========================================
role              may                             sees
================  ==============================  ==========================================
compliance-reader query, lineage, export          everything recorded (PII already protected)
auditor           the above + verify, checkpoints everything recorded
                  + DLQ list and show             DLQ record values too
operator          the above + verify, checkpoints no inference inputs/outputs, no data records
                  + DLQ list, show and redrive    (DLQ record values: not shown)
scorer-client     nothing here                    -
================  ==============================  ==========================================

An operator runs the platform and needs to see what happened and whether the trail is intact, not what
customers sent or got back: inference ``inputs``/``outputs`` and the data record inside rejected/validated
events are removed from every answer an operator gets (lists, single rows, exports, lineage).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

COMPLIANCE_READER = "compliance-reader"
AUDITOR = "auditor"
OPERATOR = "operator"


class Action(StrEnum):
    QUERY = "query"  # list, get, lineage
    EXPORT = "export"
    VERIFY = "verify"
    CHECKPOINTS = "checkpoints"  # list, seal now, inclusion proofs
    DLQ_READ = "read dead letters"  # DLQ depth, list, show
    DLQ_REDRIVE = "redrive dead letters"
    ACKNOWLEDGE = "acknowledge damage"  # let signing resume on a stream the writer found tampered with


ALLOWED: dict[Action, frozenset[str]] = {
    Action.QUERY: frozenset({COMPLIANCE_READER, AUDITOR, OPERATOR}),
    Action.EXPORT: frozenset({COMPLIANCE_READER, AUDITOR, OPERATOR}),
    Action.VERIFY: frozenset({AUDITOR, OPERATOR}),
    Action.CHECKPOINTS: frozenset({AUDITOR, OPERATOR}),
    Action.DLQ_READ: frozenset({AUDITOR, OPERATOR}),
    Action.DLQ_REDRIVE: frozenset({OPERATOR}),
    Action.ACKNOWLEDGE: frozenset({AUDITOR}),
}

REDACTED = "[redacted for role operator]"
_INFERENCE_FIELDS = ("inputs", "outputs")
_DATA_STREAMS = ("rejected", "validated")


def sees_payloads(role: str) -> bool:
    return role != OPERATOR


def redact_item(item: dict[str, Any], role: str) -> dict[str, Any]:
    """An audit row as ``role`` may see it."""
    if sees_payloads(role):
        return item
    event = item.get("event")
    if not isinstance(event, dict) or not isinstance(event.get("payload"), dict):
        return item
    payload = dict(event["payload"])
    if item.get("stream") == "inference":
        for name in _INFERENCE_FIELDS:
            if name in payload:
                payload[name] = REDACTED
    elif item.get("stream") in _DATA_STREAMS:
        payload = {"record": REDACTED}
    else:
        return item
    return {**item, "event": {**event, "payload": payload}}


def redact_lineage(view: dict[str, Any], role: str) -> dict[str, Any]:
    if sees_payloads(role):
        return view
    return {
        **view,
        "inferences": [
            {**inf, **{name: REDACTED for name in _INFERENCE_FIELDS}} for inf in view.get("inferences", [])
        ],
    }
