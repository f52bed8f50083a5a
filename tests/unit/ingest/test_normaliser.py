from __future__ import annotations

import uuid

import orjson
import pytest

from tollgate_core.contracts import ContractRegistry
from tollgate_core.events import IngestedEvent, now_iso
from tollgate_ingest.core import Malformed, Normaliser


@pytest.fixture(scope="module")
def normaliser() -> Normaliser:
    return Normaliser(ContractRegistry.from_directory())


def envelope(**overrides: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "event_id": str(uuid.uuid4()),
        "event_type": "observation",
        "schema": "credit-default.v1",
        "occurred_at": "2026-03-01T10:00:00+02:00",
        "producer": "core-banking",
        "payload": {"customer_id": "C7", "student": "No", "balance": 1.0, "income": 2.0, "default": None},
    }
    doc.update(overrides)
    return doc


def test_output_is_a_valid_ingested_event(normaliser: Normaliser) -> None:
    out = normaliser.normalise(orjson.dumps(envelope()), None, now_iso())
    event = IngestedEvent.model_validate_json(out.encode())
    assert event.occurred_at.isoformat() == "2026-03-01T08:00:00+00:00"  # normalised to UTC
    assert out.key == b"C7"  # keyed by the contract's entity id


def test_epoch_milliseconds_are_accepted(normaliser: Normaliser) -> None:
    out = normaliser.normalise(orjson.dumps(envelope(occurred_at=1_700_000_000_000)), None, now_iso())
    assert out.document["occurred_at"] == "2023-11-14T22:13:20Z"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty message"),
        (b"{not json", "not JSON"),
        (b"[1,2]", "a JSON object"),
        (orjson.dumps({"payload": {}}), "missing envelope field(s): event_id, event_type, schema"),
        (orjson.dumps(envelope(event_id="nope")), "is not a UUID"),
        (orjson.dumps(envelope(schema="credit-default.v9")), "unknown schema 'credit-default.v9'"),
        (orjson.dumps(envelope(schema="Credit Default")), "must look like <name>.v<N>"),
        (orjson.dumps(envelope(occurred_at="2026-03-01T10:00:00")), "has no UTC offset"),
        (orjson.dumps(envelope(occurred_at="yesterday")), "not an ISO 8601 timestamp"),
        (orjson.dumps(envelope(payload=[1])), "payload must be a JSON object"),
        (orjson.dumps(envelope(producer="")), "producer must be a non-empty string"),
        (orjson.dumps({**envelope(), "extra": 1}), "unknown envelope field(s): extra"),
    ],
)
def test_malformed_messages_say_why(normaliser: Normaliser, raw: bytes, reason: str) -> None:
    with pytest.raises(Malformed, match=reason.replace("(", r"\(").replace(")", r"\)")):
        normaliser.normalise(raw, None, now_iso())
