"""Raw events from a plain Kafka client through ingest and validator, both running as real processes."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson

from tests.conftest import wait_http_ok
from tests.kafka_helpers import collect, good_record, produce, raw_event

N_VALID = 300
M_INVALID = 40
DUPLICATES = 50


async def test_valid_rejected_duplicates_and_poison(services: Any, namespace: str, bootstrap: str) -> None:
    ingest = services("ingest")
    validator = services("validator")
    await wait_http_ok(f"http://127.0.0.1:{ingest.port}/readyz", proc=ingest)
    await wait_http_ok(f"http://127.0.0.1:{validator.port}/readyz", proc=validator)

    valid_ids = [str(uuid.uuid4()) for _ in range(N_VALID)]
    messages: list[tuple[bytes | None, bytes]] = [
        (f"C{i:06d}".encode(), raw_event(good_record(i), event_id=eid)) for i, eid in enumerate(valid_ids)
    ]
    invalid_ids = []
    for j in range(M_INVALID):
        rec = good_record(10_000 + j)
        if j % 4 == 0:
            rec["student"] = "Sometimes"  # not an allowed category
        elif j % 4 == 1:
            rec["balance"] = -5.0  # below minimum
        elif j % 4 == 2:
            rec["balance"] = "lots"  # wrong type
        else:
            del rec["student"]  # required field missing
            rec["income"] = 2_000_000.0  # and above maximum
        eid = str(uuid.uuid4())
        invalid_ids.append(eid)
        messages.append((None, raw_event(rec, event_id=eid)))
    # Duplicates: the same event ids sent again (a producer retrying), with different occurred_at.
    messages += [
        (f"C{i:06d}".encode(), raw_event(good_record(i), event_id=valid_ids[i])) for i in range(DUPLICATES)
    ]
    poison = [
        b"this is not json",
        b"[1, 2, 3]",
        orjson.dumps({"hello": "world"}),
        raw_event(good_record(1), schema="credit-default.v9"),
        b"",
    ]
    messages += [(None, p) for p in poison]
    await produce(bootstrap, f"{namespace}.events.raw.v1", messages)
    # One event enters with a sampled W3C trace context: the same trace must follow it to validated.
    trace_id = uuid.uuid4().hex
    traced_id = str(uuid.uuid4())
    await produce(
        bootstrap,
        f"{namespace}.events.raw.v1",
        [(b"T1", raw_event(good_record(1), event_id=traced_id))],
        headers=[("traceparent", f"00-{trace_id}-{'ab' * 8}-01".encode())],
    )
    valid_ids.append(traced_id)

    validated, rejected, dead = await asyncio.gather(
        collect(bootstrap, f"{namespace}.events.validated.v1", expect=N_VALID + 1),
        collect(bootstrap, f"{namespace}.events.rejected.v1", expect=M_INVALID),
        collect(bootstrap, f"{namespace}.dlq.ingest.v1", expect=len(poison)),
    )
    seen = [orjson.loads(r.value)["event_id"] for r in validated]
    assert len(seen) == N_VALID + 1, f"expected {N_VALID + 1} validated, got {len(seen)}"
    [traced] = [r for r in validated if orjson.loads(r.value)["event_id"] == traced_id]
    traceparent = dict(traced.headers)["traceparent"].decode()
    assert traceparent.split("-")[1] == trace_id  # same trace ...
    assert traceparent.split("-")[2] != "ab" * 8  # ... continued by the services' own spans
    assert sorted(seen) == sorted(valid_ids)
    for rec in validated:
        doc = orjson.loads(rec.value)
        assert rec.key == doc["payload"]["customer_id"].encode() or doc["event_id"] == traced_id
        assert doc["entity_id"] == doc["payload"]["customer_id"]
        assert doc["ingested_at"] and doc["validated_at"]

    assert sorted(orjson.loads(r.value)["event_id"] for r in rejected) == sorted(invalid_ids)
    for rec in rejected:
        doc = orjson.loads(rec.value)
        assert doc["violations"], doc
        for v in doc["violations"]:
            assert v["field"] and v["rule"] and v["message"]
    rules = {(v["field"], v["rule"]) for r in rejected for v in orjson.loads(r.value)["violations"]}
    assert {
        ("student", "category"),
        ("balance", "minimum"),
        ("balance", "type"),
        ("student", "required"),
        ("income", "maximum"),
    } <= rules

    assert len(dead) == len(poison)
    assert sorted(r.value or b"" for r in dead) == sorted(poison)
    for rec in dead:
        headers = dict(rec.headers)
        assert headers["tollgate-dlq-source-topic"] == f"{namespace}.events.raw.v1".encode()
        assert headers["tollgate-dlq-source-offset"].isdigit()
        assert headers["tollgate-dlq-error"]
    reasons = b" ".join(dict(r.headers)["tollgate-dlq-error"] for r in dead)
    assert b"not JSON" in reasons and b"unknown schema 'credit-default.v9'" in reasons
    assert b"missing envelope field" in reasons
