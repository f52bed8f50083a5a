"""Which topics the audit trail records, as which stream, and how each message becomes an :class:`Entry`.

A *stream* is one topic family and one hash chain with one writer. Each stream has a small extractor that
lifts the query columns (request id, entity id, model, version) out of its payload; the full envelope is
kept byte for byte as it was received, except that personal data in data records (rejected, validated) is protected with
the dataset contract's PII rules first: the audit trail is kept for years and must not become the one place
that holds raw personal data.

``events.validated`` is off by default: it is the full data stream (every accepted record, tens of thousands
a second at peak), and what the audit trail must answer — which data trained a model — is already pinned by
the candidate's lineage (exact topic/partition/offset ranges, row count and data hash) while Kafka and the
trainer's store keep the records. Switch it on with ``TOLLGATE_AUDIT_LOG_AUDIT_VALIDATED=true``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from tollgate_audit_log.canonical import CANONICAL_UUID, Entry, canonical_json
from tollgate_core.contracts import ContractRegistry, DatasetContract
from tollgate_core.pii import PiiRedactor
from tollgate_core.telemetry import TRACEPARENT, header_value, trace_id_of

Index = tuple[
    str | None, str | None, str | None, str | None, str | None
]  # request, entity, model, version, trace
Extractor = Callable[[dict[str, Any]], Index]


class PoisonMessage(ValueError):
    """A message that can never be recorded as it is (not an envelope, unstorable text): it goes to the DLQ."""


def _s(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _payload(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    payload = doc.get("payload")
    return payload if isinstance(payload, Mapping) else {}


def inference_index(doc: dict[str, Any]) -> Index:
    p = _payload(doc)
    return (
        _s(p.get("request_id")),
        _s(p.get("entity_id")),
        _s(p.get("model")),
        _s(p.get("version")),
        _s(p.get("trace_id")),
    )


def model_version_index(doc: dict[str, Any]) -> Index:
    """Lifecycle transitions, candidates and alerts: they concern one model version."""
    p = _payload(doc)
    return None, None, _s(p.get("model")), _s(p.get("version")), None


def training_request_index(doc: dict[str, Any]) -> Index:
    """A training request is looked up by its own event id (lineage names it as ``training_request_id``)."""
    p = _payload(doc)
    return _s(doc.get("event_id")), None, _s(p.get("model")), None, None


def operation_index(doc: dict[str, Any]) -> Index:
    """An operator's action is looked up by its own event id (what a redrive answers with)."""
    return _s(doc.get("event_id")), None, None, None, None


def registration_index(doc: dict[str, Any]) -> Index:
    """A registration is looked up by its own event id (what the registry answers with); a model catalog
    entry's by its model too; a contract's version goes in the version column."""
    p = _payload(doc)
    model = _s(p.get("name")) if p.get("kind") == "model" else None
    version = _s(p.get("version")) if p.get("kind") == "contract" else None
    return _s(doc.get("event_id")), None, model, version, None


def data_record_index(doc: dict[str, Any]) -> Index:
    """Rejected/validated records: the entity id (validated events carry it; for rejected ones it is read
    from the record through the contract while the record is protected)."""
    return None, _s(doc.get("entity_id")), None, None, None


@dataclass(frozen=True, slots=True)
class StreamSpec:
    name: str
    topic: str  # catalog name, e.g. inference.log
    extract: Extractor
    data_records: bool = False  # payload is a dataset record: apply the contract's PII rules
    description: str = ""


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec(
        "lifecycle",
        "models.lifecycle",
        model_version_index,
        description="Every state change of a model version: registration, gates, approvals (who, why), promotions, rollbacks.",
    ),
    StreamSpec(
        "candidates",
        "models.candidates",
        model_version_index,
        description="Trained versions with metrics, parity result and lineage (exact training-data offsets).",
    ),
    StreamSpec(
        "submissions",
        "models.submissions",
        model_version_index,
        description="Every attempt to submit a model built outside the platform: the principal and roles, "
        "refused with every reason or accepted with its version, the files' digests and sizes.",
    ),
    StreamSpec(
        "requests",
        "training.requests",
        training_request_index,
        description="Training requests from operators and from the monitor's alerts.",
    ),
    StreamSpec(
        "inference",
        "inference.log",
        inference_index,
        description="Every inference: inputs (PII protected by the scorer), outputs, version, route.",
    ),
    StreamSpec(
        "alerts",
        "monitor.alerts",
        model_version_index,
        description="Drift, performance, staleness and latency alerts, raised and cleared.",
    ),
    StreamSpec(
        "operations",
        "operations",
        operation_index,
        description="What operators did to the running platform (DLQ redrives): who, why, which records.",
    ),
    StreamSpec(
        "registrations",
        "registrations",
        registration_index,
        description="Dataset contracts and model catalog entries registered live: the document, its digest "
        "and the principal that registered it.",
    ),
    StreamSpec(
        "rejected",
        "events.rejected",
        data_record_index,
        data_records=True,
        description="Records that broke their dataset contract, with every violation (PII protected here).",
    ),
)
VALIDATED = StreamSpec(
    "validated",
    "events.validated",
    data_record_index,
    data_records=True,
    description="Accepted records (off by default: volume).",
)


def stream_specs(*, audit_validated: bool) -> tuple[StreamSpec, ...]:
    return (*STREAMS, VALIDATED) if audit_validated else STREAMS


def parse_occurred_at(value: Any) -> datetime:
    if not isinstance(value, str):
        raise PoisonMessage("occurred_at is missing or not a string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise PoisonMessage(f"occurred_at {value[:64]!r} is not an ISO 8601 time") from exc
    if moment.tzinfo is None:
        raise PoisonMessage("occurred_at has no UTC offset")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise PoisonMessage(f"occurred_at {value[:64]!r} is out of range in UTC (years 1 to 9999)") from None


UNKNOWN_CONTRACT = "(withheld: contract not known to the audit-log when recorded)"


def _withheld(doc: dict[str, Any]) -> dict[str, Any]:
    """A data record of an unknown contract with every value of its record, violations and flags withheld
    (field names and rules kept)."""
    out = dict(doc)
    record = doc.get("payload")
    if isinstance(record, Mapping):
        out["payload"] = {str(k): UNKNOWN_CONTRACT for k in record}
    out.pop("entity_id", None)
    for key in ("violations", "quality_flags"):
        items = doc.get(key)
        if not isinstance(items, list):
            continue
        kept: list[Any] = []
        for item in items:
            if not isinstance(item, Mapping):
                kept.append(UNKNOWN_CONTRACT)
            elif key == "violations":
                kept.append({**item, "value": UNKNOWN_CONTRACT, "message": pii_safe_message(item)})
            else:
                kept.append({**item, "value": UNKNOWN_CONTRACT})
        out[key] = kept
    return out


def pii_safe_message(violation: Mapping[str, Any]) -> str:
    """A violation message that names the field and the rule, never the value."""
    return f"{violation.get('field')}: rule {violation.get('rule')} failed (value withheld: personal data)"


class EntryBuilder:
    """Turns consumed messages of one stream into entries (pure: no I/O)."""

    def __init__(
        self, spec: StreamSpec, contracts: ContractRegistry | None = None, pii_key: bytes = b""
    ) -> None:
        self.spec = spec
        self._contracts = contracts
        self._pii_key = pii_key
        self._protection: dict[str, tuple[DatasetContract, PiiRedactor] | None] = {}

    def build(
        self, value: bytes | None, topic: str, partition: int, offset: int, headers: Any = None
    ) -> Entry:
        try:
            doc = orjson.loads(value or b"")
        except orjson.JSONDecodeError as exc:
            raise PoisonMessage(f"not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise PoisonMessage("not a JSON object")
        event_id = doc.get("event_id")
        if not (isinstance(event_id, str) and CANONICAL_UUID.match(event_id)):
            try:
                event_id = str(uuid.UUID(str(event_id)))
            except ValueError:
                raise PoisonMessage(f"event_id {str(event_id)[:64]!r} is not a UUID") from None
        event_type = doc.get("event_type")
        if not isinstance(event_type, str) or not event_type:
            raise PoisonMessage("event_type is missing")
        occurred_at = parse_occurred_at(doc.get("occurred_at"))
        request_id, entity_id, model, version, trace_id = self.spec.extract(doc)
        # Kept as the producer sent it, byte for byte; only a record whose personal data had to be
        # protected is re-serialised (canonically).
        envelope = (value or b"").decode()
        if self.spec.data_records:
            protected, entity_id = self._protect(doc)
            if protected is not doc:
                envelope = canonical_json(protected).decode()
        header_trace = trace_id_of(header_value(headers, TRACEPARENT))
        if "\\u0000" in envelope:
            raise PoisonMessage("contains a NUL character, which PostgreSQL cannot store in jsonb")
        return Entry(
            event_id=event_id,
            topic=topic,
            partition=partition,
            offset=offset,
            event_type=event_type[:128],
            occurred_at=occurred_at,
            request_id=request_id,
            entity_id=entity_id,
            model=model,
            version=version,
            trace_id=header_trace or trace_id,
            envelope=envelope,
        )

    def forget(self, schema: str) -> None:
        """A contract was registered live: build its protection again from the registry."""
        self._protection.pop(schema, None)

    def _protection_for(self, schema: Any) -> tuple[DatasetContract, PiiRedactor] | None:
        """The contract named by ``schema`` and its redactor (built once per contract); None when unknown."""
        if not isinstance(schema, str) or self._contracts is None:
            return None
        if schema not in self._protection:
            contract = self._contracts.get(schema)
            self._protection[schema] = (
                (contract, PiiRedactor(contract, self._pii_key)) if contract is not None else None
            )
        return self._protection[schema]

    def _protect(self, doc: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """Hash/mask/drop the contract's PII fields in the record and in violation values; return the
        protected envelope and the record's entity id (as protected) for the index."""
        entity_id = _s(doc.get("entity_id"))
        found = self._protection_for(doc.get("schema"))
        if found is None:
            if self._contracts is not None:
                # A contract this replica does not know (yet: registered moments ago) cannot say which
                # fields are personal: every value is withheld rather than kept in the clear for years.
                return _withheld(doc), None
            return doc, entity_id
        contract, redactor = found
        out = dict(doc)
        record = doc.get("payload")
        if isinstance(record, Mapping):
            out["payload"] = redactor.redact(record)
            field = contract.entity_id.name
            if entity_id is None and field in record:
                entity_id = _s(redactor.value(field, record[field]))
        violations = doc.get("violations")
        if isinstance(violations, list):
            out["violations"] = [
                {
                    **v,
                    "value": redactor.value(str(v.get("field")), v.get("value")),
                    # the validator's message may quote the value: never kept for a personal-data field
                    "message": pii_safe_message(v),
                }
                if isinstance(v, Mapping) and v.get("field") in redactor.actions
                else v
                for v in violations
            ]
        flags = doc.get("quality_flags")
        if isinstance(flags, list):
            out["quality_flags"] = [
                {**f, "value": redactor.value(str(f.get("field")), f.get("value"))}
                if isinstance(f, Mapping) and f.get("field") in redactor.actions
                else f
                for f in flags
            ]
        return out, entity_id
