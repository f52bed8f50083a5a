"""The registrations topic on the real broker: created compacted; a follower started after two revisions of
one key puts the newest in force; the monitor's own follower applies a live revision's personal-data rules.

Every wait polls a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.kafka_helpers import produce
from tests.polling import eventually
from tollgate_core.contracts import ContractRegistry, DatasetContract
from tollgate_core.events import dumps
from tollgate_core.kafka_auth import kafka_security
from tollgate_core.registrations import (
    LiveCatalog,
    RegistrationEvent,
    RegistrationPayload,
    breaking_changes,
    contract_document,
    registration_key,
    start_following,
)
from tollgate_core.settings import ServiceSettings
from tollgate_core.topics import Topics
from tollgate_monitor.app import Monitor
from tollgate_monitor.settings import MonitorSettings
from tollgate_validator.consumers import registrations as validator_registrations

SEED = ContractRegistry.from_directory().latest("credit-default")


def probe_contract(name: str, *, maximum: float = 10_000, phone: bool = False) -> DatasetContract:
    """``credit-default.v1`` under another name; ``phone``: plus a nullable attribute hashed as personal data
    (a compatible revision: every record the first accepted, the second accepts)."""
    doc = contract_document(SEED)
    doc["contract"] = name
    for feature in doc["features"]:
        if feature["name"] == "balance":
            feature["maximum"] = maximum
    if phone:
        doc["attributes"].append({"name": "phone", "type": "string", "nullable": True, "pii": "hash"})
    return DatasetContract.model_validate(doc)


def registration(contract: DatasetContract, revision: int) -> tuple[bytes, bytes]:
    payload = RegistrationPayload(
        kind="contract",
        name=contract.contract,
        version=contract.version,
        revision=revision,
        digest=contract.digest,
        document=contract_document(contract),
        registered_by="integration-test",
        registered_at=datetime.now(UTC),
    )
    event = RegistrationEvent(
        event_id=uuid.uuid4(),
        event_type="contract.registered",
        schema_="registrations.v1",
        occurred_at=datetime.now(UTC),
        producer="registry",
        payload=payload,
    )
    return payload.key.encode(), dumps(event)


async def topic_configs(bootstrap: str, topic: str) -> dict[str, Any]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_security())
    await admin.start()
    try:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    configs: dict[str, Any] = {}
    for response in responses:
        for resource in response.resources:
            error_code, _message, _type, name, entries = resource[:5]
            assert (error_code, name) == (0, topic), resource
            configs.update({entry[0]: entry[1] for entry in entries})
    return configs


async def test_the_topic_is_compacted_and_a_fresh_follower_applies_the_newest_revision(
    bootstrap: str, namespace: str
) -> None:
    topic = Topics(namespace).registrations
    configs = await topic_configs(bootstrap, topic)
    assert configs["cleanup.policy"] == "compact", configs

    name = f"probe-{uuid.uuid4().hex[:6]}"
    first, second = probe_contract(name), probe_contract(name, maximum=50_000)
    assert breaking_changes(first, second) == [] and first.digest != second.digest
    await produce(bootstrap, topic, [registration(first, 1), registration(second, 2)])

    # A validator started after both: its follower reads the topic whole before the service serves.
    settings = ServiceSettings(kafka_bootstrap=bootstrap, topic_namespace=namespace)
    live = LiveCatalog(ContractRegistry.from_directory())
    follower = await start_following(validator_registrations(settings), live, settings)
    try:
        applied = live.contracts.get(second.schema_id)
        assert applied is not None and applied.digest == second.digest
        assert applied.fields_by_name["balance"].maximum == 50_000
        assert live.registrations[registration_key("contract", name, 1)].revision == 2
    finally:
        await follower.stop()


async def test_the_monitor_applies_a_live_revisions_personal_data_rules(
    bootstrap: str, namespace: str, database_url: str
) -> None:
    topic = Topics(namespace).registrations
    name = f"monitored-{uuid.uuid4().hex[:6]}"
    first, second = probe_contract(name), probe_contract(name, phone=True)
    assert breaking_changes(first, second) == []  # a revision the registry accepts under the same version
    await produce(bootstrap, topic, [registration(first, 1)])

    # Reads the registrations topic up to its end before it is built.
    monitor = await Monitor.create(
        MonitorSettings(kafka_bootstrap=bootstrap, topic_namespace=namespace, database_url=database_url)
    )
    following = asyncio.create_task(monitor.registrations.run())
    try:
        record = {"customer_id": "c-1", "customer_email": "a@example.org", "phone": "+44 20 7946 0000"}
        before = monitor.core.redactors[first.schema_id].redact(record)
        assert before["phone"] == record["phone"]  # the first revision does not know the field
        assert before["customer_email"] != record["customer_email"]

        await produce(bootstrap, topic, [registration(second, 2)])

        async def phone_hashed() -> bool:
            redacted = monitor.core.redactors[first.schema_id].redact(record)
            return redacted["phone"] not in (None, record["phone"])

        await eventually(phone_hashed, timeout=30, what="the monitor to apply the revision's rules")
        assert monitor.core.contracts.get(first.schema_id) == second
        assert "phone" in monitor.core.redactors[first.schema_id].actions
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
        await monitor.stop()
