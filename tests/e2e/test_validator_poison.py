"""The validator on real Kafka: nothing lost after an oversized event, and every poison record in its DLQ.

Regression (issue 11): one event with 15,000 unknown fields (about 440 KB) made the validator build a
rejection record larger than the topic accepts; the failed write was only logged, the offsets committed
anyway, and the idempotent producer then wedged its partitions (``OutOfOrderSequenceNumber``), so later
rejected events were lost. Now the rejection lists at most 100 violations plus a count of the rest, every
write of a transaction is awaited before its offsets commit, and an output that still cannot fit goes to
``dlq.validator`` with its headers.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson

from tests.auth_support import RoleKeys, header
from tests.conftest import wait_http_ok
from tests.kafka_helpers import collect, good_record, produce, raw_event

INVALID_AFTER = 20


def ingested(payload: dict[str, Any], *, event_id: str | None = None) -> bytes:
    doc = orjson.loads(raw_event(payload, event_id=event_id))
    doc["ingested_at"] = doc["occurred_at"]
    return orjson.dumps(doc)


def _invalid(i: int) -> dict[str, Any]:
    rec = good_record(50_000 + i)
    rec["balance"] = -1.0 - i  # below the contract's minimum
    return rec


async def test_oversized_event_then_twenty_invalid_all_reach_rejected(
    services: Any, namespace: str, bootstrap: str, api_keys: RoleKeys
) -> None:
    validator = services("validator")
    await wait_http_ok(f"http://127.0.0.1:{validator.port}/readyz", proc=validator)
    huge = good_record(1) | {f"unknown_field_{i:05d}": "x" * 8 for i in range(15_000)}
    huge_id = str(uuid.uuid4())
    big = ingested(huge, event_id=huge_id)
    assert 300_000 < len(big) < 1_000_000, len(big)

    invalid_ids = [str(uuid.uuid4()) for _ in range(INVALID_AFTER)]
    valid_between = str(uuid.uuid4())
    messages: list[tuple[bytes | None, bytes]] = [(b"C000001", big)]
    for i, eid in enumerate(invalid_ids):
        messages.append((f"C{i:06d}".encode(), ingested(_invalid(i), event_id=eid)))
        if i == INVALID_AFTER // 2:
            messages.append((b"C777777", ingested(good_record(777_777), event_id=valid_between)))
    topic = f"{namespace}.events.ingested.v1"
    for message in messages:  # one by one: each lands in its own transaction-sized fetch as in the report
        await produce(bootstrap, topic, [message])

    rejected, validated = await _collect_both(bootstrap, namespace, INVALID_AFTER + 1, 1)
    by_id = {orjson.loads(r.value)["event_id"]: orjson.loads(r.value) for r in rejected}
    assert sorted(by_id) == sorted([huge_id, *invalid_ids]), "a rejected event was lost or duplicated"
    assert len(rejected) == INVALID_AFTER + 1
    doc = by_id[huge_id]
    assert len(doc["violations"]) == 100
    assert doc["violations_omitted"] == 15_000 - 100
    assert all(v["rule"] == "unknown_field" for v in doc["violations"])
    assert [orjson.loads(r.value)["event_id"] for r in validated] == [valid_between]

    async with httpx.AsyncClient() as client:
        metrics = (
            await client.get(
                f"http://127.0.0.1:{validator.port}/metrics", headers=header(api_keys["operator"])
            )
        ).text
        ready = await client.get(f"http://127.0.0.1:{validator.port}/readyz")
    assert 'tollgate_consumer_failed_writes_total{consumer="validator"}' not in metrics or (
        'tollgate_consumer_failed_writes_total{consumer="validator"} 0.0' in metrics
    )
    assert ready.status_code == 200


async def _collect_both(bootstrap: str, namespace: str, n_rejected: int, n_valid: int) -> tuple[Any, Any]:
    import asyncio

    return await asyncio.gather(
        collect(bootstrap, f"{namespace}.events.rejected.v1", expect=n_rejected, timeout=90),
        collect(bootstrap, f"{namespace}.events.validated.v1", expect=n_valid, timeout=90),
    )


async def test_poison_records_land_in_the_dlq_with_headers_and_the_next_record_goes_on(
    services: Any, namespace: str, bootstrap: str
) -> None:
    validator = services("validator")
    await wait_http_ok(f"http://127.0.0.1:{validator.port}/readyz", proc=validator)
    no_envelope = orjson.dumps({"event_id": str(uuid.uuid4()), "payload": good_record(3)})
    # The rejection record of this event would exceed the topic's 1 MiB: its input fits, but its 150
    # unknown fields add about 15 KB of violations to the output.
    near_limit = good_record(4) | {f"u{i:03d}": 0 for i in range(150)} | {"padding": "p" * 1_038_000}
    too_big_out = ingested(near_limit)
    assert len(too_big_out) < 1_048_576 - 1_000 and len(too_big_out) + 150 * 60 > 1_048_576
    poison = [b"{not json", no_envelope, too_big_out]
    list_in_pii = good_record(5) | {"customer_email": ["x@example.com"]}
    list_id = str(uuid.uuid4())
    after_ids = [str(uuid.uuid4()) for _ in poison]
    topic = f"{namespace}.events.ingested.v1"
    for i, bad in enumerate(poison):
        await produce(bootstrap, topic, [(b"P", bad)])
        await produce(bootstrap, topic, [(b"N", ingested(good_record(100 + i), event_id=after_ids[i]))])
    await produce(bootstrap, topic, [(b"L", ingested(list_in_pii, event_id=list_id))])

    dead, validated, rejected = await _gather(
        collect(bootstrap, f"{namespace}.dlq.validator.v1", expect=len(poison), timeout=90),
        collect(bootstrap, f"{namespace}.events.validated.v1", expect=len(after_ids), timeout=90),
        collect(bootstrap, f"{namespace}.events.rejected.v1", expect=1, timeout=90),
    )
    assert len(dead) == len(poison), "DLQ count differs from the number of poison records injected"
    assert sorted(r.value for r in dead) == sorted(poison)
    for rec in dead:
        headers = dict(rec.headers)
        assert headers["tollgate-dlq-source-topic"] == topic.encode()
        assert headers["tollgate-dlq-source-partition"].isdigit()
        assert headers["tollgate-dlq-source-offset"].isdigit()
        assert headers["tollgate-dlq-service"] == b"validator"
        assert headers["tollgate-dlq-error-type"] and headers["tollgate-dlq-error"]
        assert headers["tollgate-dlq-failed-at"].isdigit()
        assert headers["tollgate-dlq-attempt"] == b"1"
    [oversize] = [r for r in dead if r.value == too_big_out]
    assert dict(oversize.headers)["tollgate-dlq-error-type"] == b"OutputTooLarge"
    assert sorted(orjson.loads(r.value)["event_id"] for r in validated) == sorted(after_ids)
    # A list in a PII field breaks the contract (a string is required): rejected with the rule named.
    [listed] = rejected
    doc = orjson.loads(listed.value)
    assert doc["event_id"] == list_id
    assert {(v["field"], v["rule"]) for v in doc["violations"]} == {("customer_email", "type")}


async def _gather(*aws: Any) -> Any:
    import asyncio

    return await asyncio.gather(*aws)
