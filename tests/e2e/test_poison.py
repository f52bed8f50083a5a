"""Poison on real Kafka and PostgreSQL for every consuming service, one table of cases.

For each input topic the services that consume it run as processes; each poison record is followed by a
normal one. Every poison record must land in the DLQ of each service that consumes it, with its headers
(source topic, partition, offset, service, error type and message, time, attempt); each DLQ must hold
exactly as many records as were injected for it; the normal records must be processed (their outputs or
rows are there) and every consumer group must have committed past the last record (nothing stalls).

The cases here are the ones the other poison tests leave out (``test_validator_poison.py``: the
validator's malformed JSON, missing envelope, oversize output and list in a PII field; ``test_sink_poison.py``:
the trainer store's and the monitor's label join's malformed records; ``test_pipeline.py``: ingest's
malformed records): a handler exception for every service, an oversize output for ingest and the scorer,
the monitor's inference-log windows, its candidate follower, the registry's candidates consumer, the
audit-log's streams and the scorer's Kafka stage.

A handler exception comes from a real input where one exists: a NUL character in a string, which
PostgreSQL refuses (``jsonb`` and ``text``), in the records the database sinks store. The stream stages that
store nothing (ingest, validator, scorer) reach that path through the runtime's test-only fault hook
(``TOLLGATE_FAULT_INJECTION=1``, refused in production): a record with the ``tollgate-test-fault`` header
makes the stage raise in place of its handler.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord

from tests.audit_support import ensure_writer_role
from tests.conftest import ServiceProcess, wait_http_ok
from tests.db_support import fetch_rows
from tests.e2e.monitor_feed import Stream, candidate_event
from tests.kafka_helpers import collect, good_record, produce, raw_event
from tests.polling import eventually
from tollgate_core.events import dumps
from tollgate_core.kafka import FAULT_HEADER, FAULT_INJECTION_ENV
from tollgate_core.kafka_auth import kafka_security

Message = tuple[bytes | None, bytes]
FAULT = [(FAULT_HEADER, b"raise")]
NUL = "\u0000"
# An input that fits its topic (1 MiB) but whose output, a little larger, does not.
NEAR_LIMIT = 1_048_576 - 250


@dataclass
class Poison:
    what: str
    value: bytes
    dead_in: tuple[str, ...]  # the services that must dead-letter it
    error_type: bytes | None = None  # the tollgate-dlq-error-type expected (None: any)
    key: bytes = b"P"
    headers: list[tuple[str, bytes]] | None = None


@dataclass
class Ctx:
    bootstrap: str
    namespace: str
    dsn: str
    procs: dict[str, ServiceProcess] = field(default_factory=dict)
    seen: dict[str, Any] = field(default_factory=dict)

    def topic(self, name: str) -> str:
        return f"{self.namespace}.{name}.v1"


@dataclass
class Case:
    name: str
    topic: str  # catalog name, e.g. "events.raw"
    services: dict[str, dict[str, str]]  # service → its own settings
    groups: tuple[str, ...]  # consumer groups (after the namespace) that must commit past everything
    poison: Callable[[], list[Poison]]
    normal: Callable[[int], tuple[Message, str]]  # the i-th normal record and the id it is known by
    processed: Callable[[Ctx, list[str]], Awaitable[bool]]
    setup: Callable[[Ctx], Awaitable[None]] | None = None
    extra_normal: Callable[[], list[tuple[Message, str]]] = lambda: []


# ------------------------------------------------------------------------------------------ inputs


def envelope(payload: dict[str, Any], **over: Any) -> dict[str, Any]:
    return orjson.loads(raw_event(payload)) | over  # type: ignore[no-any-return]


def ingested(payload: dict[str, Any], event_id: str | None = None) -> bytes:
    doc = orjson.loads(raw_event(payload, event_id=event_id))
    doc["ingested_at"] = doc["occurred_at"]
    return orjson.dumps(doc)


def validated(payload: dict[str, Any], event_id: str | None = None) -> bytes:
    doc = orjson.loads(ingested(payload, event_id))
    doc |= {
        "validated_at": doc["occurred_at"],
        "entity_id": payload["customer_id"],
        "labeled": True,
        "quality_flags": [],
    }
    return orjson.dumps(doc)


def scoring_request(request_id: str, model: str = "no-such-model") -> bytes:
    return orjson.dumps(
        {
            "event_id": request_id,
            "event_type": "scoring_request",
            "schema": "scoring.requests.v1",
            "occurred_at": "2026-01-01T00:00:00Z",
            "producer": "test",
            "payload": {"model": model, "instance": {"customer_id": "C1", "balance": 1.0}},
        }
    )


def inference(model: str, request_id: str, event_id: str | None = None) -> bytes:
    """An inference-log event of ``model`` version 1 (its record from the monitored contract)."""
    stream = Stream(model, base=datetime.now(UTC), rows=1, drift_from=99, drift={})
    _, value = stream.log_events(0, 1)[0]
    doc = orjson.loads(value)
    doc["payload"]["request_id"] = request_id
    doc["event_id"] = event_id or str(uuid.uuid4())
    return orjson.dumps(doc)


def padded(doc: dict[str, Any], size: int, where: Callable[[dict[str, Any], str], None]) -> bytes:
    """``doc`` with a string put in by ``where`` so that the JSON is exactly ``size`` bytes."""
    where(doc, "")
    bare = len(orjson.dumps(doc))
    where(doc, "p" * (size - bare))
    out = orjson.dumps(doc)
    assert len(out) == size, (len(out), size)
    return out


# ------------------------------------------------------------------------------------------- checks


async def _ids_on(ctx: Ctx, topic: str, ids: list[str], pick: Callable[[dict[str, Any]], str]) -> bool:
    got = await collect(ctx.bootstrap, ctx.topic(topic), expect=len(ids), timeout=5, settle=0.2)
    seen = [pick(orjson.loads(r.value)) for r in got]
    return sorted(seen) == sorted(ids)


async def _ids_in(ctx: Ctx, sql: str, ids: list[str], *args: Any) -> bool:
    return sorted(str(r[0]) for r in await fetch_rows(ctx.dsn, sql, *args)) == sorted(ids)


async def publish_monitored_version(ctx: Ctx) -> None:
    """The monitor counts inference records of versions it has a reference profile for."""
    model = ctx.seen["model"] = f"risk-{ctx.namespace}"
    event = candidate_event(model, "1")
    await produce(ctx.bootstrap, ctx.topic("models.candidates"), [(model.encode(), dumps(event))])
    await eventually(
        lambda: fetch_rows(ctx.dsn, "SELECT 1 FROM monitor_versions WHERE model = $1", model),
        timeout=120,
        interval=0.5,
        what="the monitor storing the version",
    )


async def committed_to_end(bootstrap: str, group: str, topic: str) -> bool:
    """Whether ``group`` has committed the end offset of every partition of ``topic``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_security())
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **kafka_security())
    await admin.start()
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not parts:
            await consumer.topics()
            parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = await consumer.end_offsets(parts)
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await consumer.stop()
        await admin.close()
    return all(end == 0 or (tp in committed and committed[tp].offset >= end) for tp, end in ends.items())


# -------------------------------------------------------------------------------------------- cases


def _ingest_poison() -> list[Poison]:
    big = padded(envelope(good_record(9)), NEAR_LIMIT, lambda d, s: d["payload"].__setitem__("padding", s))
    return [
        Poison("malformed JSON", b"{not json", ("ingest",), b"Malformed"),
        Poison(
            "missing envelope fields", orjson.dumps({"payload": good_record(1)}), ("ingest",), b"Malformed"
        ),
        Poison("oversize output", big, ("ingest",), b"OutputTooLarge"),
        Poison("handler exception", raw_event(good_record(2)), ("ingest",), b"InjectedFault", headers=FAULT),
    ]


def _validator_poison() -> list[Poison]:
    return [
        Poison("handler exception", ingested(good_record(3)), ("validator",), b"InjectedFault", headers=FAULT)
    ]


def _scorer_poison() -> list[Poison]:
    big = padded(orjson.loads(scoring_request("x")), NEAR_LIMIT, lambda d, s: d.__setitem__("event_id", s))
    return [
        Poison("malformed JSON", b"{not json", ("scorer",)),
        Poison("missing envelope fields", orjson.dumps({"schema": "scoring.requests.v1"}), ("scorer",)),
        Poison("oversize output", big, ("scorer",), b"OutputTooLarge"),
        Poison(
            "handler exception",
            scoring_request(str(uuid.uuid4())),
            ("scorer",),
            b"InjectedFault",
            headers=FAULT,
        ),
    ]


def _validated_poison() -> list[Poison]:
    # A NUL in a string: the training store's jsonb and the label join's text refuse it.
    nul = good_record(4) | {"request_id": f"r{NUL}1"}
    return [
        Poison(
            "handler exception (NUL in a stored string)",
            validated(nul),
            ("trainer", "monitor"),
            key=b"C000004",
        )
    ]


def _inference_poison() -> list[Poison]:
    missing = orjson.dumps({"event_type": "inference", "schema": "inference.log.v1"})
    return [
        Poison("malformed JSON", b"{not json", ("monitor", "audit-log")),
        Poison("missing envelope fields", missing, ("monitor", "audit-log")),
        # the inference's request id with a NUL: the monitor's predictions (text) and the audit trail refuse it
        Poison("handler exception (NUL)", b"", ("monitor", "audit-log")),
    ]


def _candidate_poison() -> list[Poison]:
    missing = orjson.dumps({"event_type": "candidate", "schema": "models.candidates.v1"})
    return [
        Poison("malformed JSON", b"{not json", ("registry", "monitor", "audit-log")),
        Poison("missing envelope fields", missing, ("registry", "monitor", "audit-log")),
        # a model name with a NUL: every consumer's database refuses it
        Poison(
            "handler exception (NUL)",
            dumps(candidate_event(f"risk{NUL}nul", "1")),
            ("registry", "monitor", "audit-log"),
        ),
    ]


def _rejected_poison() -> list[Poison]:
    doc = orjson.loads(ingested(good_record(5)))
    doc |= {
        "rejected_at": doc["occurred_at"],
        "violations": [{"field": "x", "rule": "type", "message": f"m{NUL}"}],
    }
    return [
        Poison("malformed JSON", b"{not json", ("audit-log",)),
        Poison("missing envelope fields", orjson.dumps({"payload": {}}), ("audit-log",)),
        Poison("handler exception (NUL)", orjson.dumps(doc), ("audit-log",)),
    ]


def _rejected(i: int, payload: dict[str, Any] | None = None) -> tuple[Message, str]:
    eid = str(uuid.uuid4())
    doc = orjson.loads(ingested(payload or good_record(100 + i), eid))
    doc |= {
        "rejected_at": doc["occurred_at"],
        "violations": [{"field": "student", "rule": "category", "message": "not allowed", "value": "Maybe"}],
    }
    return (b"R", orjson.dumps(doc)), eid


def _new_id_event(build: Callable[[str], bytes], key: bytes = b"N") -> tuple[Message, str]:
    eid = str(uuid.uuid4())
    return (key, build(eid)), eid


FAULTS = {FAULT_INJECTION_ENV: "1", "TOLLGATE_ENV": "test"}

CASES = [
    Case(
        "ingest",
        "events.raw",
        {"ingest": {}},
        ("ingest",),
        _ingest_poison,
        lambda i: _new_id_event(lambda e: raw_event(good_record(200 + i), event_id=e)),
        lambda ctx, ids: _ids_on(ctx, "events.ingested", ids, lambda d: d["event_id"]),
        # a list in a PII field is not poison for ingest: it passes on (the validator judges it)
        extra_normal=lambda: [
            _new_id_event(
                lambda e: raw_event(good_record(7) | {"customer_email": ["a@example.com"]}, event_id=e)
            )
        ],
    ),
    Case(
        "validator",
        "events.ingested",
        {"validator": {}},
        ("validator",),
        _validator_poison,
        lambda i: _new_id_event(lambda e: ingested(good_record(300 + i), e)),
        lambda ctx, ids: _ids_on(ctx, "events.validated", ids, lambda d: d["event_id"]),
    ),
    Case(
        "scorer",
        "scoring.requests",
        {"scorer": {"auth_required": "false"}},
        ("scorer",),
        _scorer_poison,
        lambda i: _new_id_event(scoring_request),
        lambda ctx, ids: _ids_on(ctx, "scoring.results", ids, lambda d: d["payload"]["request_id"]),
    ),
    Case(
        "trainer-and-monitor-labels",
        "events.validated",
        {"trainer": {}, "monitor": {}},
        ("trainer", "monitor.labels"),
        _validated_poison,
        lambda i: _new_id_event(lambda e: validated(good_record(400 + i), e), key=b"C000400"),
        lambda ctx, ids: _ids_in(ctx, "SELECT event_id FROM trainer_rows", ids),
        # a list in a PII field is stored (hashed as canonical JSON) by both
        extra_normal=lambda: [
            _new_id_event(lambda e: validated(good_record(8) | {"customer_email": ["a@example.com"]}, e))
        ],
    ),
    Case(
        "monitor-windows-and-audit-inference",
        "inference.log",
        {"monitor": {"window_seconds": "3600", "reference_wait_seconds": "3600"}, "audit-log": {}},
        ("monitor.windows", "audit-log.inference"),
        _inference_poison,
        lambda i: _new_id_event(lambda e: b""),  # built in the test: it needs the model published first
        lambda ctx, ids: _ids_in(ctx, "SELECT event_id FROM audit_events WHERE stream = 'inference'", ids),
        setup=publish_monitored_version,
    ),
    Case(
        "registry-monitor-and-audit-candidates",
        "models.candidates",
        {"registry": {}, "monitor": {}, "audit-log": {}},
        ("registry", "monitor.candidates", "audit-log.candidates"),
        _candidate_poison,
        lambda i: _new_id_event(lambda e: b""),  # built in the test: a candidate event has its own id
        lambda ctx, ids: _ids_in(ctx, "SELECT candidate_event FROM registry_versions", ids),
    ),
    Case(
        "audit-rejected",
        "events.rejected",
        {"audit-log": {}},
        ("audit-log.rejected",),
        _rejected_poison,
        lambda i: _rejected(i),
        lambda ctx, ids: _ids_in(ctx, "SELECT event_id FROM audit_events WHERE stream = 'rejected'", ids),
        # a list in a PII field is recorded (hashed), not dead-lettered
        extra_normal=lambda: [_rejected(99, good_record(6) | {"customer_email": ["a@example.com"]})],
    ),
]


def _normal(case: Case, ctx: Ctx, i: int) -> tuple[Message, str]:
    if case.topic == "inference.log":
        rid = str(uuid.uuid4())
        eid = str(uuid.uuid4())
        ctx.seen.setdefault("requests", []).append(rid)
        return (ctx.seen["model"].encode(), inference(ctx.seen["model"], rid, eid)), eid
    if case.topic == "models.candidates":
        event = candidate_event(f"risk-{ctx.namespace}", str(i + 1))
        return (event.payload.model.encode(), dumps(event)), str(event.event_id)
    return case.normal(i)


def _poison_value(case: Case, ctx: Ctx, p: Poison) -> Poison:
    if case.topic == "inference.log" and not p.value:
        p.value = inference(ctx.seen["model"], f"r{NUL}x")
        p.key = ctx.seen["model"].encode()
    return p


def _is(rec: ConsumerRecord[bytes, bytes], p: Poison) -> bool:
    """The dead letter is the poison record: unchanged, or (when even the original does not fit the DLQ
    topic) a bounded summary naming its size."""
    if rec.value == p.value:
        return True
    try:
        doc = orjson.loads(rec.value or b"")
    except orjson.JSONDecodeError:
        return False
    return isinstance(doc, dict) and doc.get("original_bytes") == len(p.value)


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
async def test_poison_lands_in_each_consumers_dlq_and_the_next_record_goes_on(
    case: Case, own_database: str, services: Any, namespace: str, bootstrap: str, tmp_path: Path
) -> None:
    ctx = Ctx(bootstrap, namespace, own_database)
    env = {
        "TOLLGATE_DATABASE_URL": own_database,
        "TOLLGATE_ARTIFACT_DIR": str(tmp_path / "artifacts"),
        "TOLLGATE_AUDIT_LOG_SIGNING_KEY_PATH": str(tmp_path / "ed25519.pem"),
        "TOLLGATE_SCORER_LOG_SPOOL_DIR": str(tmp_path / "spool"),
        **FAULTS,
    }
    if "audit-log" in case.services:
        await ensure_writer_role()
    for name, settings in case.services.items():
        ctx.procs[name] = services(name, env_extra=env, **settings)
    for proc in ctx.procs.values():
        await wait_http_ok(f"http://127.0.0.1:{proc.port}/readyz", proc=proc, timeout=600)  # type: ignore[attr-defined]
    if case.setup is not None:
        await case.setup(ctx)

    topic = ctx.topic(case.topic)
    poison = [_poison_value(case, ctx, p) for p in case.poison()]
    ids: list[str] = []
    for i, p in enumerate(poison):
        await produce(bootstrap, topic, [(p.key, p.value)], headers=p.headers)
        message, known_as = _normal(case, ctx, i)
        await produce(bootstrap, topic, [message])
        ids.append(known_as)
    for message, known_as in case.extra_normal():
        await produce(bootstrap, topic, [message])
        ids.append(known_as)

    dlq_services = sorted({s for p in poison for s in p.dead_in})
    dead = await asyncio.gather(
        *(
            collect(bootstrap, ctx.topic(f"dlq.{s}"), expect=sum(s in p.dead_in for p in poison), timeout=180)
            for s in dlq_services
        )
    )
    for service, records in zip(dlq_services, dead, strict=True):
        wanted = [p for p in poison if service in p.dead_in]
        assert len(records) == len(wanted), (
            f"{service}: {len(records)} dead letters for {len(wanted)} poison records: "
            + str([dict(r.headers).get("tollgate-dlq-error", b"")[:200] for r in records])
        )
        for p in wanted:
            found = [r for r in records if _is(r, p)]
            assert len(found) == 1, f"{service}: {p.what} not dead-lettered once"
            headers = dict(found[0].headers)
            assert headers["tollgate-dlq-source-topic"] == topic.encode()
            assert headers["tollgate-dlq-source-partition"].isdigit()
            assert headers["tollgate-dlq-source-offset"].isdigit()
            assert headers["tollgate-dlq-service"] == service.encode()
            assert headers["tollgate-dlq-error"]
            assert headers["tollgate-dlq-failed-at"].isdigit()
            assert headers["tollgate-dlq-attempt"] == b"1"
            if p.error_type is not None:
                assert headers["tollgate-dlq-error-type"] == p.error_type, (p.what, headers)

    await eventually(
        lambda: case.processed(ctx, ids),
        timeout=180,
        interval=1,
        what=f"{case.name}: every normal record processed",
    )
    if case.topic == "inference.log":
        want = sorted(ctx.seen["requests"])
        await eventually(
            lambda: _ids_in(ctx, "SELECT request_id FROM monitor_predictions", want),
            timeout=180,
            interval=1,
            what="the monitor counting the normal inference records",
        )
    if case.topic == "models.candidates":
        versions = [str(i + 1) for i in range(len(poison))]
        model = f"risk-{namespace}"
        await eventually(
            lambda: _ids_in(ctx, "SELECT version FROM monitor_versions WHERE model = $1", versions, model),
            timeout=180,
            interval=1,
            what="the monitor storing the normal candidates",
        )
    for group in case.groups:
        await eventually(
            functools.partial(committed_to_end, bootstrap, f"{namespace}.{group}", topic),
            timeout=180,
            interval=1,
            what=f"{group} committing past the last record",
        )
