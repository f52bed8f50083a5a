"""The audit-log service as a process on the real broker and database: it records what the platform
publishes, skips redeliveries, dead-letters poison, signs checkpoints, answers the lineage of an inference,
and fails over between two replicas (one writer per chain, the other on standby)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from tests.audit_support import MODEL, ensure_writer_role, fresh_database, lineage_scenario
from tests.conftest import ServiceProcess, wait_http_ok
from tests.kafka_helpers import collect, produce
from tests.polling import eventually
from tollgate_core import apikeys
from tollgate_core.kafka import DLQ_ERROR, DLQ_SOURCE_TOPIC
from tollgate_core.topics import Topics

REQUEST = "req-e2e-1"


@pytest.fixture(scope="module")
async def database_url() -> AsyncIterator[str]:
    """This module's own database (it counts and verifies whole tables)."""
    async with fresh_database("e2e") as dsn:
        yield dsn


class Api:
    def __init__(self, port: int, key: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.headers = {"X-API-Key": key}

    async def get(self, path: str, **params: Any) -> Any:
        async with httpx.AsyncClient(base_url=self.base, timeout=60) as client:
            response = await client.get(path, params=params, headers=self.headers)
        assert response.status_code == 200, response.text
        return response.json()

    async def count(self) -> int:
        return len((await self.get("/v1/audit/events", limit=1000))["items"])


def messages(
    events: list[tuple[str, dict[str, Any]]], topics: Topics
) -> dict[str, list[tuple[bytes | None, bytes]]]:
    by_topic: dict[str, list[tuple[bytes | None, bytes]]] = {}
    for topic, doc in events:
        by_topic.setdefault(topics.name(topic), []).append((MODEL.encode(), orjson.dumps(doc)))
    return by_topic


async def publish(bootstrap: str, batches: dict[str, list[tuple[bytes | None, bytes]]]) -> None:
    for topic, batch in batches.items():
        await produce(bootstrap, topic, batch)


async def ready_states(port: int) -> str:
    async with httpx.AsyncClient(timeout=10) as client:
        body = (await client.get(f"http://127.0.0.1:{port}/readyz")).json()
    return str(body["checks"].get("kafka", ""))


async def test_audit_service_end_to_end(
    services: Any, namespace: str, database_url: str, bootstrap: str, tmp_path: Path
) -> None:
    role_problem = await ensure_writer_role()
    env = {"TOLLGATE_AUDIT_LOG_SIGNING_KEY_PATH": str(tmp_path / "ed25519.pem")}
    settings = {"checkpoint_interval_s": "1", "checkpoint_rows": "1000", "api_key_refresh_s": "1"}
    first: ServiceProcess = services("audit-log", env_extra=env, **settings)
    await wait_http_ok(f"http://127.0.0.1:{first.port}/readyz", proc=first)  # type: ignore[attr-defined]

    owner = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        key = await apikeys.create_key(owner, f"auditor-{uuid.uuid4().hex[:6]}", "auditor")
        operator_key = await apikeys.create_key(owner, f"operator-{uuid.uuid4().hex[:6]}", "operator")
    finally:
        await owner.close()
    topics = Topics(namespace)
    events = lineage_scenario(datetime.now(UTC).replace(microsecond=0), REQUEST)
    await publish(bootstrap, messages(events, topics))
    await produce(bootstrap, topics.monitor_alerts, [(b"x", b"{not json")])

    # The key is newer than the service: it is picked up by the periodic refresh.
    api = Api(first.port, key)  # type: ignore[attr-defined]
    await eventually(lambda: _status(api), timeout=45, what="the new API key to be loaded")
    await eventually(lambda: _has(api, len(events)), what=f"{len(events)} rows")

    dead = await collect(bootstrap, topics.dlq("audit-log"), expect=1, settle=0.5)
    assert len(dead) == 1 and dead[0].value == b"{not json"
    headers = dict(dead[0].headers)
    assert headers[DLQ_SOURCE_TOPIC] == topics.monitor_alerts.encode() and b"not JSON" in headers[DLQ_ERROR]

    # Redelivery of everything (same event ids): no new row.
    await publish(bootstrap, messages(events, topics))
    await eventually(
        lambda: _metric(first.port, operator_key, "tollgate_audit_duplicates_total", len(events)),
        what="duplicates seen",
    )  # type: ignore[attr-defined]
    assert await api.count() == len(events)

    view = await api.get(f"/v1/audit/lineage/{REQUEST}")
    mv = view["inferences"][0]["model_version"]
    assert mv["approvals"][0]["approved_by"] == "alice" and mv["training"]["data"]["offsets"]
    assert [a["alert_id"] for a in mv["active_alerts"]] == ["alert-active"]

    ready = await ready_states(first.port)  # type: ignore[attr-defined]
    assert ready.startswith("ok:") and "inference active" in ready
    async with httpx.AsyncClient(timeout=10) as client:
        checks = (await client.get(f"http://127.0.0.1:{first.port}/readyz")).json()["checks"]  # type: ignore[attr-defined]
    expected = "ok: role tollgate_audit_writer" if role_problem is None else "degraded: triggers only"
    assert checks["append_only"].startswith(expected), checks

    # A second replica waits on every stream's lock; when the first dies, it takes over.
    second: ServiceProcess = services("audit-log", env_extra=env, **settings)
    await wait_http_ok(f"http://127.0.0.1:{second.port}/readyz", proc=second)  # type: ignore[attr-defined]
    assert "inference standby" in await ready_states(second.port)  # type: ignore[attr-defined]
    first.kill()
    more = lineage_scenario(datetime.now(UTC).replace(microsecond=0), "req-e2e-2", version="9")
    await publish(bootstrap, messages(more, topics))
    api = Api(second.port, key)  # type: ignore[attr-defined]
    await eventually(
        lambda: _has(api, len(events) + len(more)), timeout=90, what="rows recorded by the second replica"
    )
    assert "inference active" in await ready_states(second.port)  # type: ignore[attr-defined]

    await eventually(lambda: _sealed(api), timeout=30, what="checkpoints over every row")
    report = await api.get("/v1/audit/verify")
    assert report["ok"] and report["rows"] == len(events) + len(more), report
    assert sum(s["checkpoints_verified"] for s in report["streams"]) >= len(report["streams"])


async def _status(api: Api) -> bool:
    async with httpx.AsyncClient(base_url=api.base, timeout=10) as client:
        return (await client.get("/v1/audit/streams", headers=api.headers)).status_code == 200


async def _has(api: Api, rows: int) -> bool:
    return await api.count() >= rows


async def _sealed(api: Api) -> bool:
    streams = await api.get("/v1/audit/streams")
    return all(s["head_seq"] is None or s["checkpointed_seq"] == s["head_seq"] for s in streams)


async def _metric(port: int, key: str, name: str, at_least: float) -> bool:
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics", headers={"X-API-Key": key})).text
    total = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))
    return total >= at_least


pytestmark = pytest.mark.timeout(240)
