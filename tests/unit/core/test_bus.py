"""The subscriber wrapper through faststream's in-memory broker: raw bytes in, bounded retries, then the DLQ
with headers naming the source."""

from __future__ import annotations

from faststream.kafka import TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage

from tollgate_core.bus import Delivery, create_broker, subscribe
from tollgate_core.settings import ServiceSettings
from tollgate_core.topics import Topics


async def test_handler_gets_raw_bytes_and_failures_reach_the_dlq_after_retries() -> None:
    settings = ServiceSettings()
    topics = Topics("unit")
    broker = create_broker(settings, "trainer")
    seen: list[bytes] = []
    attempts = {"poison": 0}

    @subscribe(
        broker,
        "unit.in",
        service="trainer",
        topics=topics,
        delivery=Delivery(group_id="g", retries=2, retry_backoff_s=0.0),
    )
    async def handler(body: bytes) -> None:
        if body == b'{"poison": true}':
            attempts["poison"] += 1
            raise ValueError("cannot handle this")
        seen.append(body)

    dead: list[tuple[bytes, dict[str, str]]] = []

    @broker.subscriber(topics.dlq("trainer"), group_id="dlq-reader")
    async def dlq(message: KafkaMessage) -> None:
        dead.append((message.body, dict(message.headers)))

    async with TestKafkaBroker(broker) as br:
        await br.publish(b'{"ok": 1}', "unit.in")
        await br.publish(b'{"poison": true}', "unit.in")
    assert seen == [b'{"ok": 1}']
    assert attempts["poison"] == 3  # first try + 2 retries
    [(body, headers)] = dead
    assert body == b'{"poison": true}'
    assert headers["tollgate-dlq-source-topic"] == "unit.in"
    assert headers["tollgate-dlq-error-type"] == "ValueError"
    assert "cannot handle this" in headers["tollgate-dlq-error"]


async def test_transient_failures_are_retried_until_they_pass_and_never_dead_lettered() -> None:
    settings = ServiceSettings()
    topics = Topics("unit")
    broker = create_broker(settings, "trainer")
    calls = {"n": 0}
    seen: list[bytes] = []

    @subscribe(
        broker,
        "unit.in",
        service="trainer",
        topics=topics,
        delivery=Delivery(group_id="g", retries=1, retry_backoff_s=0.0),
    )
    async def handler(body: bytes) -> None:
        calls["n"] += 1
        if calls["n"] <= 4:  # more failures than retries: still never dead-lettered
            raise TimeoutError("database did not answer")
        seen.append(body)

    dead: list[bytes] = []

    @broker.subscriber(topics.dlq("trainer"), group_id="dlq-reader")
    async def dlq(message: KafkaMessage) -> None:
        dead.append(message.body)

    async with TestKafkaBroker(broker) as br:
        await br.publish(b'{"ok": 1}', "unit.in")
    assert seen == [b'{"ok": 1}'] and calls["n"] == 5
    assert dead == []
