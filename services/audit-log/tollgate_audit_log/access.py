"""Who may do what, and what each role sees.

Roles come from the platform's API keys (``tollgate_core.apikeys``; stored hashed):

================  ==============================  ==========================================
role              may                             sees
================  ==============================  ==========================================
compliance-reader query, lineage, export          everything recorded (PII already protected)
auditor           the above + verify, checkpoints everything recorded
                  + DLQ list and show             DLQ record values too
operator          the above + verify, checkpoints no value of a record or an inference (see below)
                  + DLQ list, show and redrive    (DLQ record values: not shown)
other roles       nothing here                    -
================  ==============================  ==========================================

A key with several roles may do what any of them may, and sees payloads if one of its roles does.

An operator runs the platform and needs to see what happened and whether the trail is intact, not what
customers sent or got back. For every role without payload access (today: operator) every field that can
carry a value is replaced, in every answer (lists, single rows, exports, lineage): inference ``inputs``,
``outputs``, ``entity_id`` and ``explanation`` (reason codes are derived from the inputs); the data record of rejected/validated events, their ``entity_id``, each
violation's ``value`` and ``message`` and each quality flag's ``value`` and ``expected``; the row's
``entity_id`` column. What is kept is allowlisted (a new field is hidden until listed).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from tollgate_core.apikeys import AUDITOR, COMPLIANCE_READER, OPERATOR, Principal

PAYLOAD_ROLES = frozenset({COMPLIANCE_READER, AUDITOR})


class Action(StrEnum):
    QUERY = "query"  # list, get, lineage
    EXPORT = "export"
    VERIFY = "verify"
    CHECKPOINTS = "checkpoints"  # list, seal now, inclusion proofs
    DLQ_READ = "read dead letters"  # DLQ depth, list, show
    DLQ_REDRIVE = "redrive dead letters"
    PROOF = "get receipts"  # per-decision receipts (they hold the recorded envelope)
    ACKNOWLEDGE = "acknowledge damage"  # let signing resume on a stream the writer found tampered with


ALLOWED: dict[Action, frozenset[str]] = {
    Action.QUERY: frozenset({COMPLIANCE_READER, AUDITOR, OPERATOR}),
    Action.EXPORT: frozenset({COMPLIANCE_READER, AUDITOR, OPERATOR}),
    Action.VERIFY: frozenset({AUDITOR, OPERATOR}),
    Action.CHECKPOINTS: frozenset({AUDITOR, OPERATOR}),
    Action.DLQ_READ: frozenset({AUDITOR, OPERATOR}),
    Action.DLQ_REDRIVE: frozenset({OPERATOR}),
    Action.PROOF: frozenset({COMPLIANCE_READER, AUDITOR}),
    Action.ACKNOWLEDGE: frozenset({AUDITOR}),
}

REDACTED = "[redacted for role operator]"
_DATA_STREAMS = ("rejected", "validated")

# What a role without payload access still sees: allowlists, so a field added later is hidden until it is
# listed here. Everything else that can carry a value (inputs, outputs, the record, the entity id, a
# violation's or quality flag's value and message) is replaced by REDACTED.
_ENVELOPE_KEYS = frozenset(
    {"event_id", "event_type", "schema", "occurred_at", "producer", "ingested_at", "validated_at",
     "rejected_at", "labeled"}
)  # fmt: skip
_INFERENCE_KEYS = frozenset(
    {"request_id", "model", "version", "route", "channel", "contract", "latency_ms", "trace_id"}
)
_VIOLATION_KEYS = frozenset({"field", "rule"})
_FLAG_KEYS = frozenset({"field", "check"})
_ITEM_VALUE_COLUMNS = ("entity_id",)  # index columns that are values of a record
# Streams whose payload holds no customer data: decisions about models, alerts over aggregates, requests,
# submission attempts (principal, reasons, file digests).
_DECISION_STREAMS = frozenset(
    {"lifecycle", "candidates", "submissions", "requests", "alerts", "operations", "registrations"}
)


def sees_payloads(who: Principal) -> bool:
    """Payloads are shown to a key with a compliance role; a key that is only an operator sees none."""
    return who.has_any(PAYLOAD_ROLES)


def _only(mapping: Any, keys: frozenset[str]) -> Any:
    if not isinstance(mapping, dict):
        return REDACTED
    return {k: (v if k in keys else REDACTED) for k, v in mapping.items()}


def redact_event(stream: str | None, event: dict[str, Any]) -> dict[str, Any]:
    """The envelope of a row of ``stream`` without any value a role without payload access may not see."""
    if stream in _DECISION_STREAMS:
        return event
    out: dict[str, Any] = {}
    for key, value in event.items():
        if key in _ENVELOPE_KEYS:
            out[key] = value
        elif key == "payload":
            if stream == "inference":
                out[key] = _only(value, _INFERENCE_KEYS)
            elif stream in _DATA_STREAMS:
                out[key] = {"record": REDACTED}
            else:  # the audit-log's own rows (damage records) and anything unknown: hashes and seqs only
                out[key] = value if event.get("producer") == "audit-log" else REDACTED
        elif key == "violations" and isinstance(value, list):
            out[key] = [_only(v, _VIOLATION_KEYS) for v in value]
        elif key == "quality_flags" and isinstance(value, list):
            out[key] = [_only(v, _FLAG_KEYS) for v in value]
        else:
            out[key] = REDACTED
    return out


def redact_item(item: dict[str, Any], who: Principal) -> dict[str, Any]:
    """An audit row as ``who`` may see it."""
    if sees_payloads(who):
        return item
    stream = item.get("stream")
    if stream in _DECISION_STREAMS:
        return item
    out = dict(item)
    event = item.get("event")
    if isinstance(event, dict):
        out["event"] = redact_event(stream, event)
    for column in _ITEM_VALUE_COLUMNS:
        if out.get(column) is not None:
            out[column] = REDACTED
    return out


# The reason codes are derived from the inputs (a contribution's sign says which side of the mean a value is).
_LINEAGE_VALUES = ("inputs", "outputs", "entity_id", "explanation")


def redact_lineage(view: dict[str, Any], who: Principal) -> dict[str, Any]:
    if sees_payloads(who):
        return view
    return {
        **view,
        "inferences": [
            {**inf, **{name: REDACTED for name in _LINEAGE_VALUES if name in inf}}
            for inf in view.get("inferences", [])
        ],
    }
