"""Poison on ``events.validated`` for its database sinks (trainer's training store, monitor's label join),
on real Kafka and PostgreSQL: each poison record lands in that service's DLQ with its headers, the next
normal record is stored, and the DLQ count equals the number injected. Before the runtime's poison policy,
one malformed record stalled the training store for ever and the label consumer raised on a non-object."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.auth_support import make_keys
from tests.conftest import wait_http_ok
from tests.e2e.test_trainer import validated, write_catalog
from tests.kafka_helpers import collect, good_record, produce
from tests.polling import eventually

POISON = [
    b"{not json",  # malformed JSON
    b"[1, 2, 3]",  # not an object
    orjson.dumps({"labeled": True, "schema": "credit-default.v1"}),  # envelope fields missing
]


def _metric(text: str, name: str, labels: str) -> float:
    found = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def _poll_metric(url: str, key: str, name: str, labels: str, want: float, timeout: float = 90) -> None:
    async with httpx.AsyncClient(headers={"x-api-key": key}) as client:

        async def reached() -> float | None:
            value = _metric((await client.get(url)).text, name, labels)
            return value if value >= want else None

        value = await eventually(reached, timeout=timeout, what=f"{name}{{{labels}}} = {want}")
    assert value == want, f"{name}{{{labels}}} = {value}, expected {want}"


async def test_training_store_and_label_join_dead_letter_poison_and_go_on(
    services: Any, namespace: str, bootstrap: str, tmp_path: Path, own_database: str
) -> None:
    # A database of its own: the rows this test stores must not count towards another test's training run.
    own = {"TOLLGATE_DATABASE_URL": own_database}
    trainer = services(
        "trainer",
        env_extra={**own, "TOLLGATE_MODELS_DIR": str(write_catalog(tmp_path / "models", min_rows=1_000_000))},
    )
    monitor = services("monitor", env_extra=own)
    await wait_http_ok(f"http://127.0.0.1:{trainer.port}/readyz", timeout=240, proc=trainer)
    await wait_http_ok(f"http://127.0.0.1:{monitor.port}/readyz", timeout=240, proc=monitor)
    api_keys = await make_keys(own_database, prefix="poison")

    topic = f"{namespace}.events.validated.v1"
    pii_list = good_record(2) | {"customer_email": ["a@example.com", "b@example.com"]}
    messages: list[tuple[bytes | None, bytes]] = []
    for i, bad in enumerate(POISON):
        messages.append((b"C000001", bad))
        messages.append(validated(good_record(10 + i), i))  # the next normal record
    messages.append(validated(pii_list, 99))  # a list in a PII field is stored and redacted, not poison
    for message in messages:
        await produce(bootstrap, topic, [message])

    dead_trainer, dead_monitor = await asyncio.gather(
        collect(bootstrap, f"{namespace}.dlq.trainer.v1", expect=len(POISON), timeout=90),
        collect(bootstrap, f"{namespace}.dlq.monitor.v1", expect=len(POISON), timeout=90),
    )
    for service, dead in (("trainer", dead_trainer), ("monitor", dead_monitor)):
        assert len(dead) == len(POISON), f"{service}: DLQ count differs from the poison injected"
        assert sorted(r.value for r in dead) == sorted(POISON)
        for rec in dead:
            headers = dict(rec.headers)
            assert headers["tollgate-dlq-source-topic"] == topic.encode()
            assert headers["tollgate-dlq-source-partition"].isdigit()
            assert headers["tollgate-dlq-source-offset"].isdigit()
            assert headers["tollgate-dlq-service"] == service.encode()
            assert headers["tollgate-dlq-error-type"] and headers["tollgate-dlq-error"]
            assert headers["tollgate-dlq-attempt"] == b"1"

    # Every normal record after the poison was stored (3 + the one with a list in its PII field).
    await _poll_metric(
        f"http://127.0.0.1:{trainer.port}/metrics",
        api_keys["operator"],
        "tollgate_trainer_rows_total",
        'contract="credit-default.v1"',
        len(POISON) + 1,
    )
    await _poll_metric(
        f"http://127.0.0.1:{monitor.port}/metrics",
        api_keys["operator"],
        "tollgate_monitor_labels_total",
        'outcome="received"',
        len(POISON) + 1,
    )
    await _poll_metric(
        f"http://127.0.0.1:{trainer.port}/metrics",
        api_keys["operator"],
        "tollgate_consumer_dead_lettered_total",
        'consumer="trainer-store"',
        len(POISON),
    )
