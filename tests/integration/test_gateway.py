"""The HTTP gateway against the real broker: accepted events land on the raw topic; bad requests get
precise 4xx errors and write nothing."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from tests.auth_support import RoleKeys, header
from tests.conftest import wait_http_ok
from tests.kafka_helpers import collect


async def test_json_jsonl_and_csv_reach_the_raw_topic(
    services: Any, namespace: str, bootstrap: str, api_keys: RoleKeys
) -> None:
    ingest = services("ingest", max_body_bytes="20000", max_events_per_request="50")
    base = f"http://127.0.0.1:{ingest.port}"
    await wait_http_ok(f"{base}/readyz", proc=ingest)
    async with httpx.AsyncClient(base_url=base, headers=header(api_keys["producer"])) as client:
        ok = await client.post(
            "/v1/events",
            headers={"x-tollgate-producer": "crm"},
            json={
                "events": [
                    {
                        "schema": "credit-default.v1",
                        "payload": {"customer_id": "A1", "student": "No", "balance": 5.0},
                    },
                    {
                        "schema": "credit-default.v1",
                        "payload": {"customer_id": "A2", "student": "Yes", "balance": 9.0},
                    },
                ]
            },
        )
        assert ok.status_code == 202, ok.text
        assert ok.json()["accepted"] == 2

        csv_body = "customer_id,student,balance,income,default\nB1,No,10.5,100,false\nB2,Yes,1,,true\n"
        up = await client.post(
            "/v1/events/upload",
            params={"schema": "credit-default.v1", "producer": "batch"},
            content=csv_body,
            headers={"content-type": "text/csv"},
        )
        assert up.status_code == 202, up.text
        again = await client.post(
            "/v1/events/upload",
            params={"schema": "credit-default.v1", "producer": "batch"},
            content=csv_body,
            headers={"content-type": "text/csv"},
        )
        assert again.json()["event_ids"] == up.json()["event_ids"]  # deterministic ids: re-upload dedups

        jsonl = b'{"customer_id": "J1", "student": "No", "balance": 3}\n\n{"customer_id": "J2", "student": "No", "balance": 4}\n'
        up2 = await client.post(
            "/v1/events/upload",
            params={"schema": "credit-default.v1", "producer": "batch", "format": "jsonl"},
            content=jsonl,
        )
        assert up2.status_code == 202 and up2.json()["accepted"] == 2

        # Precise errors, nothing written.
        too_big = await client.post("/v1/events", content=b"x" * 20001)
        assert too_big.status_code == 413 and "at most 20000 are accepted" in too_big.text
        too_many = await client.post(
            "/v1/events",
            json={"events": [{"schema": "credit-default.v1", "producer": "p", "payload": {}}] * 51},
        )
        assert too_many.status_code == 413 and "51 events is over the limit of 50" in too_many.text
        not_json = await client.post("/v1/events", content=b"{oops")
        assert not_json.status_code == 400 and "not JSON" in not_json.text
        mixed = await client.post(
            "/v1/events",
            json={
                "events": [
                    {"schema": "credit-default.v1", "producer": "p", "payload": {"customer_id": "X"}},
                    {"schema": "credit-default.v7", "producer": "p", "payload": {}},
                ]
            },
        )
        assert mixed.status_code == 422
        assert mixed.json()["detail"]["problems"] == [
            {
                "index": 1,
                "error": "unknown schema 'credit-default.v7': no dataset contract has that name and version",
            }
        ]
        bad_csv = await client.post(
            "/v1/events/upload",
            params={"schema": "credit-default.v1", "producer": "p"},
            content="customer_id,balance\nC1,lots\n",
            headers={"content-type": "text/csv"},
        )
        assert bad_csv.status_code == 422 and bad_csv.json()["detail"]["problems"][0]["line"] == 2
        unknown = await client.post(
            "/v1/events/upload", params={"schema": "nope.v1", "producer": "p"}, content="a\n1\n"
        )
        assert unknown.status_code == 422

        spec = (await client.get("/openapi.json")).json()
        assert {"/v1/events", "/v1/events/upload", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])
        assert (await client.get("/metrics")).status_code == 403  # a producer key is not an operator's
        metrics = (await client.get("/metrics", headers=header(api_keys["operator"]))).text
        assert 'tollgate_ingest_http_events_total{source="json"} 2.0' in metrics

    raw = await collect(bootstrap, f"{namespace}.events.raw.v1", expect=8, timeout=20)
    ids = [orjson.loads(r.value)["payload"]["customer_id"] for r in raw]
    assert sorted(ids) == ["A1", "A2", "B1", "B1", "B2", "B2", "J1", "J2"]
    ingested = await collect(bootstrap, f"{namespace}.events.ingested.v1", expect=6, timeout=30)
    assert sorted(orjson.loads(r.value)["payload"]["customer_id"] for r in ingested) == [
        "A1",
        "A2",
        "B1",
        "B2",
        "J1",
        "J2",
    ]


async def test_csv_structure_errors_are_400_naming_the_line(services: Any, api_keys: RoleKeys) -> None:
    """A field over the CSV parser's limit was a 500; a row with more values than the header lost its
    extra values silently. Both are refused whole, naming the line."""
    ingest = services("ingest")
    base = f"http://127.0.0.1:{ingest.port}"
    await wait_http_ok(f"{base}/readyz", proc=ingest)
    params = {"schema": "credit-default.v1", "producer": "batch", "format": "csv"}
    csv_header = "customer_id,student,balance,income,default\n"
    async with httpx.AsyncClient(base_url=base, timeout=30, headers=header(api_keys["producer"])) as client:
        huge = await client.post(
            "/v1/events/upload",
            params=params,
            content=csv_header + "B1,No,10.5,100,false\n" + f'B2,"{"x" * 200_000}",1,2,true\n',
        )
        extra = await client.post(
            "/v1/events/upload",
            params=params,
            content=csv_header + "B1,No,10.5,100,false\nB2,Yes,1,2,true,surprise\n",
        )
    assert huge.status_code == 400, huge.text
    assert huge.json()["detail"]["problems"][0]["line"] == 3
    assert "field larger than field limit" in huge.json()["detail"]["problems"][0]["error"]
    assert extra.status_code == 400, extra.text
    assert extra.json()["detail"]["problems"] == [{"line": 3, "error": "6 values, the header names 5 fields"}]


async def test_a_dry_run_lists_every_violation_by_line_and_publishes_nothing(
    services: Any, namespace: str, bootstrap: str, api_keys: RoleKeys
) -> None:
    ingest = services("ingest")
    base = f"http://127.0.0.1:{ingest.port}"
    await wait_http_ok(f"{base}/readyz", proc=ingest)
    params = {"schema": "credit-default.v1", "producer": "batch", "format": "csv", "dry_run": "true"}
    body = (
        "customer_id,student,balance,income,default,customer_email\n"
        "D1,No,10.5,100,false,d1@example.com\n"  # line 2: valid
        "D2,Maybe,-5,100,true,d2@example.com\n"  # line 3: category and minimum
        "D3,Yes,lots,,true,\n"  # line 4: not a number
        "D4,Yes,20000,41,false,secret@example.com\n"  # line 5: above the maximum
    )
    async with httpx.AsyncClient(base_url=base, timeout=30, headers=header(api_keys["producer"])) as client:
        checked = await client.post("/v1/events/upload", params=params, content=body)
        events = await client.post(
            "/v1/events",
            params={"dry_run": "true"},
            json=[
                {
                    "schema": "credit-default.v1",
                    "producer": "p",
                    "payload": {"customer_id": "E1", "student": "No", "balance": 1},
                },
                {"schema": "credit-default.v7", "producer": "p", "payload": {}},
                {
                    "schema": "credit-default.v1",
                    "producer": "p",
                    "payload": {"customer_id": "E3", "student": "No", "balance": 1, "extra": 1},
                },
            ],
        )
    assert checked.status_code == 200, checked.text
    reply = checked.json()
    assert (reply["dry_run"], reply["events"], reply["valid"], reply["invalid"]) == (True, 4, 1, 3)
    assert [(v["line"], v["field"], v["rule"]) for v in reply["violations"]] == [
        (4, "row", "unreadable"),
        (3, "student", "category"),
        (3, "balance", "minimum"),
        (5, "balance", "maximum"),
    ]
    messages = [v["message"] for v in reply["violations"]]
    assert messages[0] == "cannot convert: balance 'lots' is not a number"
    assert messages[2] == "balance -5 is below the minimum 0"  # whole numbers print whole
    assert messages[3] == "balance 20000 is above the maximum 10000"
    assert events.status_code == 200, events.text
    assert [(v["index"], v["field"], v["rule"]) for v in events.json()["violations"]] == [
        (1, "envelope", "envelope"),
        (2, "extra", "unknown_field"),
    ]
    assert "unknown schema 'credit-default.v7'" in events.json()["violations"][0]["message"]
    # Nothing was published: a marker event sent afterwards is the only record on the raw topic.
    async with httpx.AsyncClient(base_url=base, timeout=30, headers=header(api_keys["producer"])) as client:
        marker = await client.post(
            "/v1/events",
            json=[{"schema": "credit-default.v1", "producer": "p", "payload": {"customer_id": "MARK"}}],
        )
    assert marker.status_code == 202
    raw = await collect(bootstrap, f"{namespace}.events.raw.v1", expect=1, timeout=20)
    assert [orjson.loads(r.value)["payload"]["customer_id"] for r in raw] == ["MARK"]
