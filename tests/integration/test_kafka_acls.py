"""The broker enforces the topic catalog: every client authenticates (SASL/SCRAM-SHA-512) and each principal
may write and read only what the catalog's producers and consumers grant it (ACLs from tollgate_core.acls)."""

from __future__ import annotations

import asyncio
import io
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from tests.conftest import kafka_principal_env
from tollgate_core import consume
from tollgate_core.kafka_auth import kafka_security
from tollgate_core.topics import Topics

pytestmark = pytest.mark.skipif(
    not kafka_principal_env("admin"), reason="needs the local stack's SASL broker and its generated passwords"
)


def credentials(principal: str) -> dict[str, Any]:
    return kafka_security(kafka_principal_env(principal))


async def write(bootstrap: str, principal: str, topic: str, **extra: Any) -> None:
    """One acknowledged, idempotent write to ``topic`` as ``principal``."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        **credentials(principal),
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=10_000,
        **extra,
    )
    await producer.start()
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, b"{}", key=b"k"), 30)
    finally:
        await producer.stop()


async def test_an_outside_producer_writes_events_raw_but_not_models_lifecycle(
    bootstrap: str, namespace: str
) -> None:
    topics = Topics(namespace)
    await write(bootstrap, "producer", topics.events_raw)
    await write(bootstrap, "producer", topics.scoring_requests)
    with pytest.raises(TopicAuthorizationFailedError):
        await write(bootstrap, "producer", topics.models_lifecycle)
    with pytest.raises(TopicAuthorizationFailedError):
        await write(bootstrap, "producer", topics.events_ingested)


async def test_only_the_registry_writes_models_lifecycle(bootstrap: str, namespace: str) -> None:
    topics = Topics(namespace)
    await write(bootstrap, "registry", topics.models_lifecycle)
    for principal in ("scorer", "trainer", "monitor", "operator"):
        with pytest.raises(TopicAuthorizationFailedError):
            await write(bootstrap, principal, topics.models_lifecycle)


async def test_the_scorer_writes_inference_log_but_not_models_candidates(
    bootstrap: str, namespace: str
) -> None:
    topics = Topics(namespace)
    await write(bootstrap, "scorer", topics.inference_log)
    with pytest.raises(TopicAuthorizationFailedError):
        await write(bootstrap, "scorer", topics.models_candidates)
    with pytest.raises(TopicAuthorizationFailedError):
        await write(bootstrap, "monitor", topics.inference_log)  # only the scorer writes inference.log


async def test_transactional_ids_and_groups_belong_to_their_service(bootstrap: str, namespace: str) -> None:
    topics = Topics(namespace)
    # The validator's transactional stage id is its own; the scorer cannot take it over (nor fence it).
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, **credentials("scorer"), transactional_id=f"{namespace}.validator-0"
    )
    with pytest.raises(TransactionalIdAuthorizationFailed):
        await asyncio.wait_for(producer.start(), 30)
    await producer.stop()
    # The monitor reads inference.log in its own groups, not in the trainer's.
    consumer = AIOKafkaConsumer(
        topics.inference_log,
        bootstrap_servers=bootstrap,
        **credentials("monitor"),
        group_id=f"{namespace}.trainer",
        enable_auto_commit=False,
    )
    try:
        with pytest.raises(GroupAuthorizationFailedError):  # joining the group is refused
            await asyncio.wait_for(consumer.start(), 30)
    finally:
        await consumer.stop()


async def test_the_operator_reads_every_topic(bootstrap: str, namespace: str) -> None:
    topics = Topics(namespace)
    await write(bootstrap, "registry", topics.models_lifecycle)
    consumer = AIOKafkaConsumer(
        topics.models_lifecycle,
        bootstrap_servers=bootstrap,
        **credentials("operator"),
        group_id=f"{namespace}.operator.{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 30)
        assert record.value == b"{}"
    finally:
        await consumer.stop()


async def test_unauthenticated_and_wrong_password_clients_are_refused(bootstrap: str) -> None:
    plain = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    with pytest.raises(KafkaError):  # the broker speaks SASL only: a PLAINTEXT client never gets metadata
        await asyncio.wait_for(plain.start(), 30)
    await plain.stop()
    wrong = {**credentials("registry"), "sasl_plain_password": "not-the-password"}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **wrong, request_timeout_ms=5000)
    with pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(producer.start(), 30)
    await producer.stop()


async def test_a_client_properties_file_reads_the_topics_as_the_operator(
    bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    """What infra/stack.sh writes to .local/kafka/client.properties, read by tollgate consume (the
    stand-in for kcat -F, whose Debian build cannot authenticate with SCRAM against this broker)."""
    topics = Topics(namespace)
    await write(bootstrap, "registry", topics.models_lifecycle)
    env = kafka_principal_env("operator")
    props = tmp_path / "client.properties"
    props.write_text(
        f"bootstrap.servers={bootstrap}\nsecurity.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n"
        f"sasl.username=operator\nsasl.password={env['TOLLGATE_KAFKA_PASSWORD']}\n"
    )
    args = consume.client_args(consume.read_properties(props))
    assert topics.models_lifecycle in await consume.list_topics(args)
    out = io.StringIO()
    assert (
        await asyncio.wait_for(consume.consume(args, [topics.models_lifecycle], follow=False, out=out), 60)
        == 1
    )
    assert out.getvalue() == "{}\n"
