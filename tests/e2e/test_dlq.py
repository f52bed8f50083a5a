"""DLQ tooling end to end on the real broker and database: the audit-log's operator API lists and shows a
service's dead letters, redrives them to their source topic with an attempt count (one record, then the
rest), records each redrive in the audit trail under the key's principal, and reports DLQ depth and
oldest age on /metrics. The ``tollgate dlq`` command is run against the same API."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from tests.audit_support import ensure_writer_role
from tests.conftest import ServiceProcess, wait_http_ok
from tests.kafka_helpers import collect
from tests.polling import eventually
from tollgate_core import apikeys
from tollgate_core.dlq import DeadLetterQueues
from tollgate_core.kafka import DLQ_ATTEMPT, DLQ_SOURCE_TOPIC, dead_letter, producer_config
from tollgate_core.topics import Topics

pytestmark = pytest.mark.timeout(240)
TOLLGATE = str(Path(sys.executable).parent / "tollgate")  # the platform's command, as installed


async def dead_letters(bootstrap: str, topics: Topics, values: list[bytes]) -> None:
    """Dead letters of the validator, as its stage writes them: in transactions (so the DLQ holds
    transaction markers between records), each naming its source topic, partition and offset."""
    source = topics.events_ingested
    producer = AIOKafkaProducer(
        **producer_config(bootstrap, "test-dlq", transactional_id=f"test-dlq-{uuid.uuid4().hex[:6]}")
    )
    await producer.start()
    try:
        for start in range(0, len(values), 2):  # two per transaction
            async with producer.transaction():
                for i, value in enumerate(values[start : start + 2], start=start):
                    rec = ConsumerRecord(
                        source, 1, 100 + i, 0, 0, b"entity-%d" % i, value, None, 0, 0,
                        [("traceparent", b"00-%032x-%016x-01" % (i + 1, i + 1))],
                    )  # fmt: skip
                    out = dead_letter(rec, topics.dlq("validator"), "validator", ValueError(f"bad {i}"))
                    await producer.send(out.topic, out.value, key=out.key, headers=out.headers, partition=0)
    finally:
        await producer.stop()


async def metric(port: int, sample: str, key: str) -> float | None:
    async with httpx.AsyncClient(timeout=10, headers={"x-api-key": key}) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_dlq_list_show_redrive_recorded_in_the_audit_trail(
    services: Any, namespace: str, database_url: str, bootstrap: str, tmp_path: Path
) -> None:
    await ensure_writer_role()
    owner = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        operator_name = f"ops-{uuid.uuid4().hex[:6]}"
        operator = await apikeys.create_key(owner, operator_name, "operator")
        auditor = await apikeys.create_key(owner, f"aud-{uuid.uuid4().hex[:6]}", "auditor")
    finally:
        await owner.close()
    topics = Topics(namespace)
    values = [orjson.dumps({"n": i, "customer_email": f"c{i}@example.com"}) for i in range(5)]
    await dead_letters(bootstrap, topics, values)

    env = {"TOLLGATE_AUDIT_LOG_SIGNING_KEY_PATH": str(tmp_path / "ed25519.pem")}
    proc: ServiceProcess = services("audit-log", env_extra=env, dlq_refresh_s="0.5")
    port = proc.port  # type: ignore[attr-defined]
    base = f"http://127.0.0.1:{port}"
    await wait_http_ok(f"{base}/readyz", proc=proc, timeout=180)  # a loaded machine starts slowly
    depth = 'tollgate_dlq_depth{service="validator"}'
    await eventually(lambda: _equals(metric(port, depth, operator), 5), what="DLQ depth 5 on /metrics")
    age = await metric(port, 'tollgate_dlq_oldest_age_seconds{service="validator"}', operator)
    assert age is not None and age >= 0

    as_operator = httpx.AsyncClient(base_url=base, timeout=60, headers={"x-api-key": operator})
    as_auditor = httpx.AsyncClient(base_url=base, timeout=60, headers={"x-api-key": auditor})
    async with as_operator, as_auditor, httpx.AsyncClient(base_url=base) as anonymous:
        assert (await anonymous.get("/v1/dlq")).status_code == 401
        overview = {q["service"]: q for q in (await as_operator.get("/v1/dlq")).json()}
        assert overview["validator"]["pending"] == 5 and overview["ingest"]["pending"] == 0
        assert overview["validator"]["pending_exact"] is True  # counted, well below the reading limit
        listed = (await as_operator.get("/v1/dlq/validator")).json()
        assert [r["source_offset"] for r in listed] == [100, 101, 102, 103, 104]
        assert {r["error_type"] for r in listed} == {"ValueError"} and listed[0]["attempt"] == 1
        assert listed[0]["source_topic"] == topics.events_ingested and "value" not in listed[0]
        first = listed[0]
        one = f"/v1/dlq/validator/0/{first['offset']}"
        shown = (await as_operator.get(one)).json()  # an operator sees no data record
        assert "value" not in shown and shown["value_sha256"] == first["value_sha256"]
        assert (await as_auditor.get(one)).json()["value"] == values[0].decode()
        assert (await as_operator.get("/v1/dlq/nosuch")).status_code == 404
        assert (await as_operator.get("/v1/dlq/validator/0/99999")).status_code == 404
        refused = await as_auditor.post("/v1/dlq/validator/redrive", json={"reason": "x"})
        assert refused.status_code == 403
        no_reason = await as_operator.post("/v1/dlq/validator/redrive", json={"reason": ""})
        assert no_reason.status_code == 422
        # A redrive the DLQ refuses gets the platform's 422 shape, naming the parameter at fault.
        no_partition = await as_operator.post(
            "/v1/dlq/validator/redrive", json={"reason": "x", "offset": first["offset"]}
        )
        assert no_partition.status_code == 422
        [problem] = no_partition.json()["detail"]
        assert problem["loc"] == ["body", "partition"] and "needs its partition" in problem["msg"]

        # One record: the first pending one, so the cursor moves past it.
        done = await as_operator.post(
            "/v1/dlq/validator/redrive",
            json={"reason": "validator fixed", "partition": 0, "offset": first["offset"]},
        )
        assert done.status_code == 200, done.text
        assert done.json()["redriven"] == 1 and done.json()["cursor"] == {"0": first["offset"] + 1}
        pending = (await as_operator.get("/v1/dlq/validator")).json()
        assert [r["offset"] for r in pending] == [r["offset"] for r in listed[1:]]
        everything = (await as_operator.get("/v1/dlq/validator", params={"all": "true"})).json()
        assert len(everything) == 5

        # The rest through the command line.
        cli = await asyncio.to_thread(
            subprocess.run,
            [TOLLGATE, "dlq", "redrive", "validator", "--reason",
             "contract v2 live", "--audit-url", base, "--api-key", operator],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert "4 record(s) redriven" in cli.stdout
        assert (await as_operator.get("/v1/dlq/validator")).json() == []
        listing = await asyncio.to_thread(
            subprocess.run,
            [TOLLGATE, "dlq", "list", "--audit-url", base, "--api-key",
             operator],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert listing.returncode == 0 and "validator" in listing.stdout, listing.stderr
        await eventually(
            lambda: _equals(metric(port, depth, operator), 0), what="DLQ depth 0 after the redrive"
        )
        redriven = await metric(port, 'tollgate_dlq_redriven_total{service="validator"}', operator)
        assert redriven == 5  # one through the API, four through the command line (the same API)

        # Back on the source topic: the same key, value and original headers, attempt 2, no DLQ headers.
        copies = await collect(bootstrap, topics.events_ingested, expect=5, settle=1)
        assert sorted(c.value for c in copies) == sorted(values)
        for c in copies:
            headers = dict(c.headers)
            assert headers[DLQ_ATTEMPT] == b"2" and DLQ_SOURCE_TOPIC not in headers
            assert headers["traceparent"].startswith(b"00-") and c.key is not None

        # Each redrive is in the audit trail, under the key's principal, with the reason and records.
        async def recorded() -> list[dict[str, Any]]:
            page = await as_operator.get("/v1/audit/events", params={"stream": "operations"})
            return list(page.json()["items"]) if len(page.json()["items"]) == 2 else []

        rows = await eventually(recorded, what="two operations rows in the audit trail")
        payloads = sorted((r["event"]["payload"] for r in rows), key=lambda p: len(p["records"]))
        assert [p["actor"] for p in payloads] == [operator_name, operator_name]
        assert [p["reason"] for p in payloads] == ["validator fixed", "contract v2 live"]
        assert [len(p["records"]) for p in payloads] == [1, 4]
        assert payloads[0]["records"][0]["source_offset"] == 100 and payloads[0]["records"][0]["attempt"] == 2

    # The library agrees with the API.
    assert (await DeadLetterQueues(bootstrap, namespace).depth("validator")).pending == 0


async def _equals(value: Awaitable[float | None], expected: float) -> bool:
    return await value == expected
