"""Poison for the consumers that moved from faststream subscribers onto the runtime's database sinks (the
trainer's training requests, the monitor's candidates and lifecycle), on real Kafka and PostgreSQL: each
poison record lands in that service's DLQ with its headers at once (no rounds of retries), the next normal
record is stored, and the DLQ count equals the number injected."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from tests.auth_support import make_keys
from tests.conftest import wait_http_ok
from tests.e2e.test_sink_poison import _poll_metric
from tests.e2e.test_trainer import write_catalog
from tests.kafka_helpers import collect, produce
from tests.polling import eventually
from tests.unit.scorer.support import MODEL, lifecycle_event
from tollgate_core.events import dumps, utcnow
from tollgate_core.lifecycle import TrainingRequestEvent, TrainingRequestPayload
from tollgate_core.topics import Topics, current_schema_id


def _request(model: str) -> tuple[str, bytes]:
    event = TrainingRequestEvent(
        event_id=uuid.uuid4(),
        event_type="training_requested",
        schema_=current_schema_id("training.requests"),
        occurred_at=utcnow(),
        producer="test",
        payload=TrainingRequestPayload(
            model=model, contract="credit-default.v1", reason="poison test", requested_by="test"
        ),
    )
    return str(event.event_id), dumps(event)


async def test_training_requests_candidates_and_lifecycle_dead_letter_poison_and_go_on(
    services: Any, namespace: str, bootstrap: str, tmp_path: Path, own_database: str
) -> None:
    own = {"TOLLGATE_DATABASE_URL": own_database}
    trainer = services(
        "trainer",
        env_extra={**own, "TOLLGATE_MODELS_DIR": str(write_catalog(tmp_path / "models", min_rows=1_000_000))},
    )
    monitor = services("monitor", env_extra=own)
    await wait_http_ok(f"http://127.0.0.1:{trainer.port}/readyz", timeout=240, proc=trainer)
    await wait_http_ok(f"http://127.0.0.1:{monitor.port}/readyz", timeout=240, proc=monitor)
    api_keys = await make_keys(own_database, prefix="specpoison")
    topics = Topics(namespace)

    unknown_id, unknown_model = _request("no-such-model")
    valid_id, valid = _request(MODEL)
    request_poison = [b"{not json", unknown_model]  # unreadable; a model the trainer does not know
    await produce(
        bootstrap, topics.training_requests, [(MODEL.encode(), v) for v in [*request_poison, valid]]
    )
    await produce(bootstrap, topics.models_candidates, [(MODEL.encode(), b"{not json")])
    await produce(
        bootstrap,
        topics.models_lifecycle,
        [(MODEL.encode(), b"[1, 2]"), (MODEL.encode(), lifecycle_event("1", production="1"))],
    )

    dead_trainer, dead_monitor = await asyncio.gather(
        collect(bootstrap, topics.dlq("trainer"), expect=2, timeout=90, settle=1.0),
        collect(bootstrap, topics.dlq("monitor"), expect=2, timeout=90, settle=1.0),
    )
    assert sorted(r.value for r in dead_trainer) == sorted(request_poison)
    assert sorted(r.value for r in dead_monitor) == [b"[1, 2]", b"{not json"]
    sources = {
        "trainer": {topics.training_requests.encode()},
        "monitor": {topics.models_candidates.encode(), topics.models_lifecycle.encode()},
    }
    for service, dead in (("trainer", dead_trainer), ("monitor", dead_monitor)):
        for rec in dead:
            headers = dict(rec.headers)
            assert headers["tollgate-dlq-source-topic"] in sources[service]
            assert headers["tollgate-dlq-source-offset"].isdigit()
            assert headers["tollgate-dlq-service"] == service.encode()
            assert headers["tollgate-dlq-attempt"] == b"1"  # dead-lettered at the first failure
    by_value = {r.value: dict(r.headers) for r in dead_trainer}
    assert by_value[unknown_model]["tollgate-dlq-error-type"] == b"ValueError"
    assert b"no-such-model" in by_value[unknown_model]["tollgate-dlq-error"]

    for url, consumer, want in (
        (f"http://127.0.0.1:{trainer.port}/metrics", "trainer-requests", 2),
        (f"http://127.0.0.1:{monitor.port}/metrics", "monitor-candidates", 1),
        (f"http://127.0.0.1:{monitor.port}/metrics", "monitor-lifecycle", 1),
    ):
        await _poll_metric(
            url, api_keys["operator"], "tollgate_consumer_dead_lettered_total", f'consumer="{consumer}"', want
        )

    # The normal records after the poison were stored.
    conn = await asyncpg.connect(own_database)
    try:

        async def stored() -> tuple[int, str | None] | None:
            request = await conn.fetchval(
                "SELECT count(*) FROM trainer_requests WHERE event_id = $1", uuid.UUID(valid_id)
            )
            stage = await conn.fetchval(
                "SELECT stage FROM monitor_versions WHERE model = $1 AND version = '1'", MODEL
            )
            return (request, stage) if request and stage else None

        request, stage = await eventually(stored, timeout=90, what="the normal records stored")
        assert request == 1 and stage == "production"
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM trainer_requests WHERE event_id = $1", uuid.UUID(unknown_id)
            )
            == 0
        )
    finally:
        await conn.close()
