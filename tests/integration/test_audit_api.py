"""The compliance API on the real PostgreSQL: every role and endpoint pair, what an operator may not see,
keyset pagination, filters, exports, the lineage of one inference, verification and inclusion proofs."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.audit_support import MODEL, ensure_writer_role, fill, fresh_database, lineage_scenario, storage_app
from tollgate_audit_log.app import AuditStorage
from tollgate_audit_log.chain import ChainWriter
from tollgate_audit_log.merkle import verify_inclusion
from tollgate_audit_log.settings import AuditLogSettings
from tollgate_audit_log.streams import STREAMS, EntryBuilder
from tollgate_core import apikeys

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
REQUEST = "req-lineage-42"
BULK = 230  # extra inference rows, for pagination


@pytest.fixture(scope="module")
async def database_url() -> AsyncIterator[str]:
    """This module's own database (it counts and verifies whole tables)."""
    async with fresh_database("api") as dsn:
        yield dsn


@pytest.fixture(scope="module")
async def audit(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, Any]]:
    await ensure_writer_role()
    key_file = Path(tmp_path_factory.mktemp("audit-key")) / "ed25519.pem"
    settings = AuditLogSettings(database_url=database_url, signing_key_path=str(key_file))
    service = await AuditStorage.open(settings)
    assert key_file.exists() and key_file.with_suffix(".pub").exists()
    assert service.signer is not None
    specs = {s.topic: s for s in STREAMS}
    writers: dict[str, ChainWriter] = {}
    ids: dict[str, list[str]] = {}
    try:
        for offset, (topic, doc) in enumerate(lineage_scenario(T0, REQUEST)):
            spec = specs[topic]
            if spec.name not in writers:
                writers[spec.name] = ChainWriter(await service.connect(), spec.name)
                await writers[spec.name].acquire()
            builder = EntryBuilder(spec, service.contracts, settings.pii_key.get_secret_value().encode())
            entry = builder.build(orjson.dumps(doc), f"tollgate.{topic}.v1", 0, offset)
            assert await writers[spec.name].append([entry]) == 1
            ids.setdefault(spec.name, []).append(entry.event_id)
        # continues the chain after the scenario (a writer of its own, on the same connection and lock)
        writers["inference"] = await fill(writers["inference"].conn, "inference", BULK)
        assert await writers["lifecycle"].checkpoint(service.signer, max_rows=1000) is not None
        while await writers["inference"].checkpoint(service.signer, max_rows=100) is not None:
            pass  # seq 1..100 (the decision's two rows), 101..200, 201..232
    finally:
        for writer in writers.values():
            await writer.conn.close()

    owner = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    keys = {
        role: await apikeys.create_key(owner, f"{role}-{uuid.uuid4().hex[:6]}", role)
        for role in apikeys.ROLES
    }
    revoked_name = f"revoked-{uuid.uuid4().hex[:6]}"
    revoked = await apikeys.create_key(owner, revoked_name, "auditor")
    assert await apikeys.revoke_key(owner, revoked_name)
    await owner.close()
    await service.keys.refresh()
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=storage_app(service)), base_url="http://audit"
    )
    yield {"client": client, "keys": keys, "revoked": revoked, "ids": ids, "service": service}
    await client.aclose()
    await service.close()


def headers(audit: dict[str, Any], role: str) -> dict[str, str]:
    return {"X-API-Key": audit["keys"][role]}


async def get(audit: dict[str, Any], role: str, path: str, **params: Any) -> httpx.Response:
    return await audit["client"].get(path, params=params, headers=headers(audit, role))


# ---------------------------------------------------------------------------------------------- roles

ENDPOINTS = {
    "events": ("GET", "/v1/audit/events"),
    "event": ("GET", "/v1/audit/events/{event_id}"),
    "export_jsonl": ("GET", "/v1/audit/export?format=jsonl"),
    "export_csv": ("GET", "/v1/audit/export?format=csv"),
    "lineage": ("GET", f"/v1/audit/lineage/{REQUEST}"),
    "streams": ("GET", "/v1/audit/streams"),
    "verify": ("GET", "/v1/audit/verify"),
    "checkpoints": ("GET", "/v1/audit/checkpoints"),
    "seal": ("POST", "/v1/audit/checkpoints"),
    "proof": ("GET", "/v1/audit/events/{lifecycle_id}/proof"),
}
# Written out, not derived from the service's own table, so a change to either shows up here.
READER = {
    "events": 200,
    "event": 200,
    "export_jsonl": 200,
    "export_csv": 200,
    "lineage": 200,
    "streams": 200,
    "verify": 403,
    "checkpoints": 403,
    "seal": 403,
    "proof": 403,
}
EXPECTED = {
    "compliance-reader": READER,
    "auditor": dict.fromkeys(ENDPOINTS, 200),
    "operator": dict.fromkeys(ENDPOINTS, 200),
    **{
        role: dict.fromkeys(ENDPOINTS, 403)
        for role in ("scorer-client", "producer", "data-scientist", "approver", "viewer")
    },
    "no key": dict.fromkeys(ENDPOINTS, 401),
    "unknown key": dict.fromkeys(ENDPOINTS, 401),
    "revoked key": dict.fromkeys(ENDPOINTS, 401),
}
MATRIX = [(role, endpoint, status) for role, row in EXPECTED.items() for endpoint, status in row.items()]


@pytest.mark.parametrize(("role", "endpoint", "status"), MATRIX, ids=[f"{r}-{e}" for r, e, _ in MATRIX])
async def test_role_endpoint_matrix(audit: dict[str, Any], role: str, endpoint: str, status: int) -> None:
    method, path = ENDPOINTS[endpoint]
    path = path.format(event_id=audit["ids"]["inference"][0], lifecycle_id=audit["ids"]["lifecycle"][0])
    if role == "no key":
        auth: dict[str, str] = {}
    elif role == "unknown key":
        auth = {"X-API-Key": "tgk_" + "x" * 43}
    elif role == "revoked key":
        auth = {"X-API-Key": audit["revoked"]}
    else:
        auth = (
            {"Authorization": f"Bearer {audit['keys'][role]}"} if role == "auditor" else headers(audit, role)
        )
    response = await audit["client"].request(method, path, headers=auth)
    assert response.status_code == status, response.text
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_openapi_documents_every_route_and_the_key_schemes(audit: dict[str, Any]) -> None:
    spec = (await audit["client"].get("/openapi.json")).json()
    for _, path in ENDPOINTS.values():
        template = path.split("?")[0].replace(REQUEST, "{request_id}").replace("{lifecycle_id}", "{event_id}")
        assert template in spec["paths"], template
    assert {"apiKey", "bearer"} <= set(spec["components"]["securitySchemes"])  # the same names everywhere


# ---------------------------------------------------------------------------------------------- what roles see


async def test_operator_never_sees_inference_inputs_or_outputs(audit: dict[str, Any]) -> None:
    for role, hidden in (("operator", True), ("compliance-reader", False)):
        page = (await get(audit, role, "/v1/audit/events", request_id=REQUEST)).json()
        payloads = [i["event"]["payload"] for i in page["items"]]
        assert len(payloads) == 2
        assert all(("balance" not in str(p["inputs"])) == hidden for p in payloads)
        assert all(p["model"] == MODEL for p in payloads)  # the rest stays visible
        one = (await get(audit, role, f"/v1/audit/events/{page['items'][0]['event_id']}")).json()
        assert ("1200.5" in str(one["event"])) != hidden
        lineage = (await get(audit, role, f"/v1/audit/lineage/{REQUEST}")).json()
        assert ("1200.5" in str(lineage)) != hidden
        export = (await get(audit, role, "/v1/audit/export", format="jsonl", request_id=REQUEST)).text
        assert ("1200.5" in export) != hidden
        rejected = (await get(audit, role, "/v1/audit/events", stream="rejected")).json()["items"][0]
        assert ("customer_id" in str(rejected["event"]["payload"])) != hidden


async def test_rejected_records_are_stored_with_pii_protected(audit: dict[str, Any]) -> None:
    item = (await get(audit, "auditor", "/v1/audit/events", stream="rejected")).json()["items"][0]
    assert "jane@example.com" not in orjson.dumps(item).decode()
    assert len(item["event"]["payload"]["customer_email"]) == 64


# ---------------------------------------------------------------------------------------------- queries


async def test_keyset_pagination_walks_every_row_once_in_order(audit: dict[str, Any]) -> None:
    seen: list[tuple[str, str, int]] = []
    after = None
    pages = 0
    while True:
        params: dict[str, Any] = {"stream": "inference", "limit": 17}
        if after:
            params["after"] = after
        page = (await get(audit, "compliance-reader", "/v1/audit/events", **params)).json()
        seen += [(i["occurred_at"], i["stream"], i["seq"]) for i in page["items"]]
        pages += 1
        after = page["next"]
        if after is None:
            break
    assert len(seen) == BULK + 2 == len(set(seen))
    assert seen == sorted(seen, key=lambda k: (datetime.fromisoformat(k[0]), k[1], k[2]))
    assert pages == -(-(BULK + 2) // 17)
    bad = await get(audit, "compliance-reader", "/v1/audit/events", after="garbage")
    assert bad.status_code == 422


async def test_filters(audit: dict[str, Any]) -> None:
    async def count(**params: Any) -> int:
        response = await get(audit, "compliance-reader", "/v1/audit/events", limit=1000, **params)
        assert response.status_code == 200, response.text
        return len(response.json()["items"])

    assert await count(request_id=REQUEST) == 2
    assert await count(entity_id="C-000042") == 2
    assert await count(entity_id="e7") == 1
    assert await count(model=MODEL, version="7", stream="lifecycle") == 5
    assert await count(model=MODEL, version="7") == 5 + 1 + 1  # lifecycle, candidate, the answer
    assert await count(event_type="approved") == 1
    assert (
        await count(
            stream="alerts",
            since=(T0 + timedelta(minutes=5)).isoformat(),
            until=(T0 + timedelta(minutes=12)).isoformat(),
        )
        == 2
    )
    naive = await get(audit, "compliance-reader", "/v1/audit/events", since="2026-01-01T00:00:00")
    assert naive.status_code == 422


async def test_exports_match_the_query(audit: dict[str, Any]) -> None:
    query = {"model": MODEL, "version": "7"}
    items = (await get(audit, "auditor", "/v1/audit/events", limit=1000, **query)).json()["items"]
    jsonl = await get(audit, "auditor", "/v1/audit/export", format="jsonl", **query)
    assert jsonl.headers["content-type"].startswith("application/x-ndjson")
    lines = [orjson.loads(line) for line in jsonl.text.splitlines()]
    assert [(x["stream"], x["seq"]) for x in lines] == [(x["stream"], x["seq"]) for x in items]
    assert lines[0]["event"] == items[0]["event"] and lines[0]["row_hash"] == items[0]["row_hash"]
    csv_response = await get(audit, "auditor", "/v1/audit/export", format="csv", **query)
    assert csv_response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(csv_response.text)))
    assert [(r["stream"], int(r["seq"])) for r in rows] == [(x["stream"], x["seq"]) for x in items]
    assert orjson.loads(rows[0]["event"]) == items[0]["event"]


# ---------------------------------------------------------------------------------------------- lineage


async def test_lineage_of_one_inference(audit: dict[str, Any]) -> None:
    view = (await get(audit, "compliance-reader", f"/v1/audit/lineage/{REQUEST}")).json()
    answer, shadow = view["inferences"]
    assert view["request_id_reused"] == 0  # an answer and its shadow: one inference, not a reused id
    assert (answer["route"], answer["version"], shadow["route"], shadow["version"]) == (
        "champion",
        "7",
        "shadow",
        "8",
    )
    assert answer["inputs"]["balance"] == 1200.5 and answer["outputs"]["score"] == 0.08
    assert answer["pii_protection"] == {"customer_email": "hash"}
    mv = answer["model_version"]
    assert mv["stage_at_inference"] == "production"
    assert [t["transition"] for t in mv["transitions"]] == ["registered", "staged", "approved", "promoted"]
    assert mv["later_transitions"] == 1  # archived after the inference
    assert [g["gate"] for g in mv["gates"]] == ["min:roc_auc", "parity"] and all(
        g["passed"] for g in mv["gates"]
    )
    assert [(a["approved_by"], a["reason"]) for a in mv["approvals"]] == [
        ("alice", "reviewed the canary report")
    ]
    training = mv["training"]
    assert training["run_id"] == "run-7" and training["parity"]["passed"] is True
    assert training["data"]["offsets"][0] == {
        "topic": "tollgate.events.validated.v1",
        "partition": 0,
        "first_offset": 0,
        "last_offset": 666,
    }
    assert training["training_request"]["requested_by"] == "monitor"
    assert training["audit"]["stream"] == "candidates"
    assert [a["alert_id"] for a in mv["active_alerts"]] == ["alert-active"]
    assert shadow["model_version"]["training"] is None and shadow["model_version"]["approvals"] == []
    missing = await get(audit, "compliance-reader", "/v1/audit/lineage/no-such-request")
    assert missing.status_code == 404


# ---------------------------------------------------------------------------------------------- integrity


async def test_verify_and_inclusion_proof(audit: dict[str, Any]) -> None:
    report = (await get(audit, "auditor", "/v1/audit/verify")).json()
    assert report["ok"] and report["rows"] == 14 + BULK, report
    assert report["summary"].startswith(f"OK: {14 + BULK} rows")
    lifecycle = next(s for s in report["streams"] if s["stream"] == "lifecycle")
    assert lifecycle["checkpoints_verified"] == 1
    event_id = audit["ids"]["lifecycle"][2]
    proof = (await get(audit, "auditor", f"/v1/audit/events/{event_id}/proof")).json()
    assert proof["seq"] == 3 and proof["tree_size"] == 5
    assert verify_inclusion(
        bytes.fromhex(proof["row_hash"]),
        proof["leaf_index"],
        proof["tree_size"],
        [bytes.fromhex(h) for h in proof["path"]],
        bytes.fromhex(proof["checkpoint"]["merkle_root"]),
    )
    unsealed = await get(audit, "auditor", f"/v1/audit/events/{audit['ids']['alerts'][0]}/proof")
    assert unsealed.status_code == 404
    checkpoints = (await get(audit, "auditor", "/v1/audit/checkpoints")).json()
    assert (
        checkpoints[0]["key_id"] == audit["service"].signer.key_id and len(checkpoints[0]["signature"]) == 128
    )


async def test_readiness_reports_how_the_trail_is_protected(audit: dict[str, Any]) -> None:
    body = (await audit["client"].get("/readyz")).json()
    assert body["checks"]["append_only"].startswith(
        ("ok: role tollgate_audit_writer", "degraded: triggers only")
    )
    assert body["checks"]["postgres"] == "ok"


@pytest.mark.parametrize(
    ("role", "status"),
    [("auditor", 404), ("operator", 403), ("compliance-reader", 403), ("scorer-client", 403)],
)
async def test_only_an_auditor_acknowledges_damage(audit: dict[str, Any], role: str, status: int) -> None:
    """404 for the auditor: the stream has no damage to acknowledge (the writer-tampering test covers the rest)."""
    response = await audit["client"].post(
        "/v1/audit/streams/lifecycle/acknowledge", json={"reason": "checked"}, headers=headers(audit, role)
    )
    assert response.status_code == status, response.text
    missing = await audit["client"].post(
        "/v1/audit/streams/lifecycle/acknowledge", json={}, headers=headers(audit, "auditor")
    )
    assert missing.status_code == 422


async def test_a_nul_in_a_reason_is_a_422_not_a_500(audit: dict[str, Any]) -> None:
    """Regression (found by the OpenAPI fuzz test): a reason holding \\u0000 reached PostgreSQL, whose text
    cannot hold NUL, and the driver's error was a 500."""
    response = await audit["client"].post(
        "/v1/audit/streams/lifecycle/acknowledge",
        json={"reason": "a\x00b"},
        headers=headers(audit, "auditor"),
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "reason"]


async def test_receipts_for_one_decision_verify_offline_and_forgeries_are_refused(
    audit: dict[str, Any], tmp_path: Path
) -> None:
    from tests.integration.test_audit_cli import cli
    from tollgate_audit_log.signing import public_pem

    assert (await get(audit, "operator", "/v1/audit/proof", request_id=REQUEST)).status_code == 403
    assert (await get(audit, "auditor", "/v1/audit/proof", request_id="no-such-request")).status_code == 404
    answer = await get(audit, "compliance-reader", "/v1/audit/proof", request_id=REQUEST)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [r["row"]["seq"] for r in body["receipts"]] == [1, 2] and body["unsealed"] == []
    receipt = body["receipts"][0]
    assert receipt["checkpoint"]["first_seq"] == 1 and receipt["checkpoint"]["last_seq"] == 100
    assert receipt["row"]["request_id"] == REQUEST and len(receipt["path"]) == 7  # ceil(log2(100))

    pub = tmp_path / "audit.pub"
    pub.write_text(public_pem(audit["service"].signer.public_key))
    other = tmp_path / "other.pub"
    other.write_text(public_pem(Ed25519PrivateKey.generate().public_key()))
    whole = tmp_path / "receipts.json"
    whole.write_bytes(answer.content)
    code, out, err = await cli("verify-proof", str(whole), "--public-key", str(pub))
    assert code == 0 and out.count("OK: recorded: stream inference") == 2, out + err

    stale = (await get(audit, "auditor", "/v1/audit/proof", request_id="req-210")).json()["receipts"][0]
    forgeries = {
        "wrong path": (lambda r: r["path"].__setitem__(0, "00" * 32), "audit path does not lead"),
        "wrong root": (
            lambda r: r["checkpoint"].__setitem__("merkle_root", "11" * 32),
            "audit path does not lead",
        ),
        "stale checkpoint": (
            lambda r: r.__setitem__("checkpoint", stale["checkpoint"]),
            "stale or unrelated",
        ),
        "changed row": (
            lambda r: r["row"].__setitem__("model", "other-model"),
            "do not hash to its content hash",
        ),
        "changed statement": (
            lambda r: r["checkpoint"].__setitem__("created_at_us", r["checkpoint"]["created_at_us"] - 1),
            "signature does not verify",
        ),
    }
    for name, (change, why) in forgeries.items():
        forged = orjson.loads(orjson.dumps(receipt))
        change(forged)
        path = tmp_path / f"{name.replace(' ', '-')}.json"
        path.write_bytes(orjson.dumps(forged))
        code, out, _ = await cli("verify-proof", str(path), "--public-key", str(pub))
        assert code == 1 and "REFUSED" in out and why in out, (name, out)
    single = tmp_path / "one.json"
    single.write_bytes(orjson.dumps(receipt))
    code, out, _ = await cli("verify-proof", str(single), "--public-key", str(other))
    assert code == 1 and "not trusted" in out, out
    code, _, err = await cli("verify-proof", str(single))
    assert code == 2 and "no trusted public keys" in err


async def test_receipts_read_one_block_of_rows_and_give_the_whole_ranges_path(
    audit: dict[str, Any], database_url: str
) -> None:
    """A checkpoint stores its block roots (level 6 of its range tree); a receipt reads the 64 row hashes
    of its row's block and those roots, and its audit path is the one over every row of the range, for
    rows in the first block, a later one, and the last (shorter) block of a checkpoint."""
    from tollgate_audit_log.merkle import block_roots, inclusion_proof, leaf_hashes
    from tollgate_audit_log.receipts import receipts_for, verify_receipt

    trusted = {audit["service"].signer.key_id: audit["service"].signer.public_key}
    conn = await asyncpg.connect(database_url)
    try:
        checkpoints = await conn.fetch(
            "SELECT first_seq, last_seq, block_roots FROM audit_checkpoints WHERE stream = 'inference' ORDER BY first_seq"
        )
        assert [(c["first_seq"], c["last_seq"]) for c in checkpoints] == [(1, 100), (101, 200), (201, 232)]
        ranges = {}
        for c in checkpoints:
            rows = await conn.fetch(
                "SELECT row_hash FROM audit_events WHERE stream = 'inference' AND seq BETWEEN $1 AND $2 ORDER BY seq",
                c["first_seq"],
                c["last_seq"],
            )
            range_hashes = [bytes(r[0]) for r in rows]
            ranges[c["first_seq"]] = range_hashes
            assert bytes(c["block_roots"]) == b"".join(block_roots(leaf_hashes(range_hashes)))
        for seq in (3, 64, 65, 100, 101, 170, 200, 201, 232):
            request_id = await conn.fetchval(
                "SELECT request_id FROM audit_events WHERE stream = 'inference' AND seq = $1", seq
            )
            (receipt,) = [
                r for r in (await receipts_for(conn, request_id)).receipts if r["row"]["seq"] == seq
            ]
            first = receipt["checkpoint"]["first_seq"]
            whole = inclusion_proof(ranges[first], seq - first)
            assert receipt["path"] == [h.hex() for h in whole], seq
            assert receipt["tree_size"] == len(ranges[first])
            assert verify_receipt(receipt, trusted).ok, seq
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "event_id",
    ["------------------------------------", "gggggggg" * 4, "0123456789abcdef0123456789abcde-f", "%00" * 12],
)
@pytest.mark.parametrize("suffix", ["", "/proof"])
async def test_an_id_that_is_not_a_uuid_is_a_4xx_not_a_500(
    audit: dict[str, Any], event_id: str, suffix: str
) -> None:
    """The path pattern let ids through that the database could not cast to a UUID (a 500)."""
    response = await get(audit, "auditor", f"/v1/audit/events/{event_id}{suffix}")
    assert 400 <= response.status_code < 500, response.text


@pytest.mark.parametrize(
    ("params", "field"),
    [({"after": "garbage"}, "after"), ({"since": "2026-01-01T00:00:00"}, "since")],
)
async def test_a_422_has_the_declared_shape(
    audit: dict[str, Any], params: dict[str, str], field: str
) -> None:
    """The OpenAPI document declares a 422's detail as a list of errors; some were a bare string."""
    response = await get(audit, "compliance-reader", "/v1/audit/events", **params)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail[0]["loc"] == ["query", field] and detail[0]["msg"]
    declared = audit["client"]
    openapi = (await declared.get("/openapi.json")).json()
    schema = openapi["paths"]["/v1/audit/events"]["get"]["responses"]["422"]["content"]["application/json"]
    assert schema["schema"]["$ref"].endswith("/HTTPValidationError")


async def test_inclusion_proof_by_event_reads_one_block_and_equals_the_whole_ranges_path(
    audit: dict[str, Any], database_url: str
) -> None:
    """GET /v1/audit/events/{id}/proof uses the checkpoint's block roots too: for a row in the second block
    of a 100-row checkpoint, the path over every row of the range."""
    from tollgate_audit_log.merkle import inclusion_proof

    conn = await asyncpg.connect(database_url)
    try:
        event_id, seq = await conn.fetchrow(
            "SELECT event_id::text, seq FROM audit_events WHERE stream = 'inference' AND seq = 77"
        )
        range_hashes = [
            bytes(r[0])
            for r in await conn.fetch(
                "SELECT row_hash FROM audit_events WHERE stream = 'inference' AND seq BETWEEN 1 AND 100 ORDER BY seq"
            )
        ]
    finally:
        await conn.close()
    proof = (await get(audit, "auditor", f"/v1/audit/events/{event_id}/proof")).json()
    assert (proof["seq"], proof["leaf_index"], proof["tree_size"]) == (seq, 76, 100)
    assert proof["path"] == [h.hex() for h in inclusion_proof(range_hashes, 76)]
    assert verify_inclusion(
        range_hashes[76],
        76,
        100,
        [bytes.fromhex(h) for h in proof["path"]],
        bytes.fromhex(proof["checkpoint"]["merkle_root"]),
    )
