"""Delivery rules: no subscriber in the platform may commit before its work is done."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from faststream import AckPolicy

from tollgate_core.bus import subscriber_policies
from tollgate_core.settings import ServiceSettings
from tollgate_core.topics import SERVICES


def _service_brokers() -> list[tuple[str, object]]:
    found = []
    for service in SERVICES:
        package = f"tollgate_{service.replace('-', '_')}"
        try:
            module = importlib.import_module(f"{package}.topology")
        except ModuleNotFoundError:
            continue
        found.append((service, module.build_broker(ServiceSettings())))
    return found


def test_every_subscriber_in_the_repo_commits_after_its_work() -> None:
    brokers = _service_brokers()
    assert brokers, "no service declares its brokers"
    checked = 0
    for service, broker in brokers:
        for topics, policy, auto_commit in subscriber_policies(broker):  # type: ignore[arg-type]
            assert policy is not AckPolicy.ACK_FIRST, f"{service} {topics} resolves to ACK_FIRST"
            # ACK commits even when the handler raised: every subscriber commits itself (MANUAL).
            assert policy is AckPolicy.MANUAL, f"{service} {topics} resolves to {policy}"
            assert not auto_commit, f"{service} {topics} auto-commits"
            checked += 1
    assert checked >= 1


def test_no_consumer_in_the_source_enables_auto_commit() -> None:
    import tollgate_core

    roots = [tollgate_core.__path__[0]]
    for service in SERVICES:
        try:
            roots.append(importlib.import_module(f"tollgate_{service.replace('-', '_')}").__path__[0])
        except ModuleNotFoundError:
            continue
    offenders = []
    for root in roots:
        for info in pkgutil.walk_packages([root]):
            path = Path(root, *info.name.split(".")).with_suffix(".py")
            if not path.exists():
                continue
            text = path.read_text(encoding="utf-8")
            if "enable_auto_commit=True" in text.replace(" ", "") or "ACK_FIRST)" in text:
                offenders.append(str(path))
    assert offenders == []


def test_the_inspection_catches_faststreams_default() -> None:
    from faststream.kafka import KafkaBroker

    broker = KafkaBroker("localhost:9092")

    @broker.subscriber("some.topic", group_id="g")
    async def handler(body: bytes) -> None: ...

    [(topics, policy, auto_commit)] = subscriber_policies(broker)
    assert (topics, policy, auto_commit) == ("some.topic", AckPolicy.ACK_FIRST, True)


def test_consumer_groups_are_named_within_the_namespace() -> None:
    settings = ServiceSettings(topic_namespace="ns")
    assert settings.consumer_group("trainer") == "ns.trainer"
    assert settings.consumer_group("monitor", "windows") == "ns.monitor.windows"


# One-shot readers that are not consumers of the platform (read to an end offset and stop): allowed.
ONE_SHOT_READERS = {"tollgate_audit_log/publish.py"}  # kafka_heads: the verifier's read of audit.checkpoints


def test_every_service_consumer_is_built_from_a_spec() -> None:
    """No service builds a Kafka consumer of its own: stages, sinks and followers come from the specs in its
    ``consumers`` module (``tollgate_core.runtime.build_*``), and faststream subscribers are gone."""
    forbidden = ("BatchSink(", "TransactionalStage(", "CompactedFollower(", ".subscriber(", "subscribe(")
    offenders = []
    for service in SERVICES:
        root = Path(importlib.import_module(f"tollgate_{service.replace('-', '_')}").__path__[0])
        for path in sorted(root.rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            rel = f"{root.name}/{path.relative_to(root).as_posix()}"
            found = [f for f in forbidden if f in text]
            if "AIOKafkaConsumer(" in text and rel not in ONE_SHOT_READERS:
                found.append("AIOKafkaConsumer(")
            if found:
                offenders.append(f"{rel}: {found}")
    assert offenders == []
