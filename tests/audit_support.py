"""Helpers for the audit-log tests: the writer role (made as the local superuser, as the stack does), a
chain filled fast through the real writer, and events shaped like the platform's producers send them."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from tests.conftest import fresh_database as conftest_fresh_database
from tests.db_support import ADMIN_DSN, superuser_connect
from tollgate_audit_log.app import AuditStorage, create_app
from tollgate_audit_log.canonical import Entry, canonical_json
from tollgate_audit_log.chain import ChainWriter
from tollgate_audit_log.dlq_api import DlqMetrics
from tollgate_audit_log.roles import setup_sql
from tollgate_audit_log.settings import DEVELOPMENT_WRITER_PASSWORD, WRITER_ROLE
from tollgate_core.dlq import DeadLetterQueues


@contextlib.asynccontextmanager
async def fresh_database(label: str) -> AsyncIterator[str]:
    """A database of its own (the audit tests count and verify whole tables), dropped afterwards."""
    async with conftest_fresh_database(f"tollgate_test_audit_{label}") as dsn:
        yield dsn


async def ensure_writer_role() -> str | None:
    """Create the writer role as the stack does; returns why it could not (None when it exists)."""
    try:
        conn = await superuser_connect()
    except (OSError, asyncpg.PostgresError) as exc:
        owner = await asyncpg.connect(ADMIN_DSN)
        try:
            if await owner.fetchval("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)", WRITER_ROLE):
                return None
        finally:
            await owner.close()
        return f"no superuser access to create {WRITER_ROLE}: {exc}"
    try:
        await conn.execute(setup_sql(WRITER_ROLE, DEVELOPMENT_WRITER_PASSWORD))
    finally:
        await conn.close()
    return None


def storage_app(storage: AuditStorage) -> FastAPI:
    """The audit-log's HTTP API over its storage alone: no stream written by this process, no Kafka."""
    s = storage.settings
    dlq = DeadLetterQueues(s.kafka_bootstrap, s.topic_namespace)
    return create_app(
        storage,
        workers={},
        metrics_registry=CollectorRegistry(),
        dlq=dlq,
        dlq_metrics=DlqMetrics(dlq),
        checks=storage.readiness_checks(),
    )


def envelope(
    event_type: str,
    schema: str,
    payload: dict[str, Any],
    *,
    at: datetime | None = None,
    event_id: str | None = None,
    producer: str = "test",
) -> dict[str, Any]:
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "event_type": event_type,
        "schema": schema,
        "occurred_at": (at or datetime.now(UTC)).isoformat(),
        "producer": producer,
        "payload": payload,
    }


def inference_entry(i: int, *, at: datetime | None = None, model: str = "credit-default-risk") -> Entry:
    """A synthetic inference-log entry (what EntryBuilder would make), cheap enough for 10^6 rows."""
    moment = at or datetime(2026, 1, 1, tzinfo=UTC) + timedelta(milliseconds=i)
    doc = envelope(
        "inference",
        "inference.log.v1",
        {
            "request_id": f"req-{i}",
            "model": model,
            "version": "3",
            "route": "champion",
            "channel": "http",
            "contract": "credit-default.v1",
            "entity_id": f"e{i % 5000}",
            "inputs": {"balance": float(i % 2500), "income": 20000.0 + i, "student": "No"},
            "outputs": {"prediction": i % 2 == 0, "score": (i % 100) / 100},
            "latency_ms": 0.8,
        },
        at=moment,
    )
    return Entry(
        doc["event_id"],
        "tollgate.inference.log.v1",
        i % 6,
        i,
        "inference",
        moment,
        f"req-{i}",
        f"e{i % 5000}",
        model,
        "3",
        None,
        canonical_json(doc).decode(),
    )


async def fill(conn: asyncpg.Connection, stream: str, rows: int, *, batch: int = 5000) -> ChainWriter:
    """Append ``rows`` synthetic inference entries to ``stream`` through the real writer (COPY)."""
    writer = ChainWriter(conn, stream)
    await writer.acquire()
    start = writer.head_seq
    for first in range(start, start + rows, batch):
        await writer.append([inference_entry(i) for i in range(first, min(first + batch, start + rows))])
    return writer


# ---------------------------------------------------------------------------------------------- a scenario

MODEL = "credit-default-risk"


def _example(topic: str, name: str) -> dict[str, Any]:
    import json

    from tollgate_core.paths import schemas_dir

    return dict(json.loads(Path(schemas_dir(), "topics", topic, "v1.examples", f"{name}.json").read_text()))


def _at(t0: datetime, minutes: float) -> str:
    return (t0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def lineage_scenario(
    t0: datetime, request_id: str, *, version: str = "7"
) -> list[tuple[str, dict[str, Any]]]:
    """(catalog topic, envelope) of one model version's life up to and after one inference: a training
    request from an alert, the candidate it produced, gates, an approval by a person, the promotion, alerts
    raised and cleared around it, the inference itself (answer and shadow), and a rejected record with PII."""
    out: list[tuple[str, dict[str, Any]]] = []
    request = _example("training.requests", "from-drift-alert")
    request.update(event_id=str(uuid.uuid4()), occurred_at=_at(t0, 0))
    out.append(("training.requests", request))

    candidate = _example("models.candidates", "credit-default-on-request")
    candidate.update(event_id=str(uuid.uuid4()), occurred_at=_at(t0, 1))
    candidate["payload"].update(model=MODEL, version=version, run_id=f"run-{version}")
    candidate["payload"]["lineage"]["training_request_id"] = request["event_id"]
    out.append(("models.candidates", candidate))

    gates = [
        {"gate": "min:roc_auc", "passed": True, "detail": "0.94 >= 0.80", "observed": 0.94, "threshold": 0.8},
        {"gate": "parity", "passed": True, "detail": "max diff 9e-08", "observed": 9e-08, "threshold": 1e-05},
    ]
    for minutes, transition, from_stage, to_stage, actor, reason, with_gates in (
        (2, "registered", None, "candidate", "registry", "candidate received", False),
        (3, "staged", "candidate", "staging", "registry", "all gates passed", True),
        (7, "approved", "staging", "staging", "alice", "reviewed the canary report", False),
        (8, "promoted", "staging", "production", "registry", "approved and canary healthy", False),
        (30, "archived", "production", "archived", "registry", "replaced by a newer version", False),
    ):
        event = _example("models.lifecycle", "staged-canary")
        event.update(event_id=str(uuid.uuid4()), occurred_at=_at(t0, minutes), event_type=transition)
        event["payload"].update(
            model=MODEL,
            version=version,
            transition=transition,
            from_stage=from_stage,
            to_stage=to_stage,
            actor=actor,
            reason=reason,
            gates=gates if with_gates else [],
        )
        out.append(("models.lifecycle", event))

    for minutes, alert_id, state in (
        (4, "alert-active", "raised"),
        (5, "alert-cleared", "raised"),
        (6, "alert-cleared", "cleared"),
        (12, "alert-later", "raised"),
    ):
        alert = _example("monitor.alerts", "data-drift-raised")
        alert.update(event_id=str(uuid.uuid4()), occurred_at=_at(t0, minutes), event_type=f"alert_{state}")
        alert["payload"].update(alert_id=alert_id, model=MODEL, version="6", state=state)
        out.append(("monitor.alerts", alert))

    for route, answered_by in (("champion", version), ("shadow", "8")):
        out.append(
            (
                "inference.log",
                envelope(
                    "inference",
                    "inference.log.v1",
                    {
                        "request_id": request_id,
                        "model": MODEL,
                        "version": answered_by,
                        "route": route,
                        "channel": "http",
                        "contract": "credit-default.v1",
                        "entity_id": "C-000042",
                        "inputs": {
                            "student": "No",
                            "balance": 1200.5,
                            "income": 41000.0,
                            "customer_email": "5" * 64,
                        },
                        "outputs": {"prediction": False, "score": 0.08},
                        "latency_ms": 0.9,
                        "trace_id": "0af7651916cd43dd8448eb211c80319c",
                    },
                    at=t0 + timedelta(minutes=10),
                    producer="scorer",
                ),
            )
        )

    rejected = _example("events.rejected", "credit-default-out-of-range")
    rejected.update(event_id=str(uuid.uuid4()), occurred_at=_at(t0, 9))
    rejected["payload"]["customer_email"] = "jane@example.com"
    out.append(("events.rejected", rejected))
    return out


def compiled_or_python(request: Any, monkeypatch: Any, module: ModuleType, attribute: str) -> str:
    """The body of a parametrized fixture (params ``["compiled", "python"]``) that runs a test with the
    compiled loop ``module.attribute`` (it must be built) or with None there: the Python loop alone."""
    if request.param == "compiled":
        assert getattr(module, attribute) is not None, "tollgate_audit_native is not built"
    else:
        monkeypatch.setattr(module, attribute, None)
    return str(request.param)
