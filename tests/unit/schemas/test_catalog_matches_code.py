"""The topic catalog's producer and consumer lists agree with what the services declare.

Every service declares each of its Kafka consumers as a spec in its ``consumers`` module (what the running
service starts, and what its AsyncAPI document declares), and each produced topic as a publisher in its
``topology`` module. The catalog (``schemas/topics/*.yaml``, the source of the broker's ACLs) must name
exactly those services; names that are not services (operators, clients, external producers) are free.
The AsyncAPI document's subscribers must be exactly the specs, channel for channel.
"""

from __future__ import annotations

import importlib
from collections import defaultdict

import pytest

from tollgate_core.runtime import ConsumerSpec, channel_title
from tollgate_core.settings import ServiceSettings
from tollgate_core.topics import SERVICES, catalog


def _declared() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    consumed: dict[str, set[str]] = defaultdict(set)
    produced: dict[str, set[str]] = defaultdict(set)
    for service in SERVICES:
        module = importlib.import_module(f"tollgate_{service.replace('-', '_')}.topology")
        settings = ServiceSettings()
        if service == "audit-log":  # every stream it can record, the opt-in events.validated too
            from tollgate_audit_log.settings import AuditLogSettings

            settings = AuditLogSettings(audit_validated=True)
        for spec in _specs(service, settings):
            for topic in spec.topics:
                consumed[_catalog_name(topic)].add(service)
        broker = module.build_broker(settings)
        for pub in broker.publishers:
            produced[_catalog_name(pub.topic)].add(service)
    return consumed, produced


def _specs(service: str, settings: ServiceSettings) -> list[ConsumerSpec]:
    module = importlib.import_module(f"tollgate_{service.replace('-', '_')}.consumers")
    specs: list[ConsumerSpec] = module.consumer_specs(settings)
    return specs


def _settings(service: str) -> ServiceSettings:
    if service == "audit-log":
        from tollgate_audit_log.settings import AuditLogSettings

        return AuditLogSettings(audit_validated=True)
    return ServiceSettings()


def _catalog_name(full: str) -> str:
    """``tollgate.events.raw.v1`` → ``events.raw``."""
    return full.split(".", 1)[1].rsplit(".", 1)[0]


def _services(names: list[str]) -> set[str]:
    """The services among a catalog list (``ingest (HTTP gateway)`` counts as ingest)."""
    return {name.split(" ")[0] for name in names if name.split(" ")[0] in SERVICES}


CONSUMED, PRODUCED = _declared()


@pytest.mark.parametrize("topic", sorted(t for t in catalog() if not t.startswith("dlq.")))
def test_catalog_consumers_are_the_services_that_subscribe(topic: str) -> None:
    spec = catalog()[topic]
    assert _services(spec.consumers) == CONSUMED.get(topic, set()), (
        f"{topic}: catalog consumers {sorted(_services(spec.consumers))}, "
        f"declared subscribers {sorted(CONSUMED.get(topic, set()))}"
    )


@pytest.mark.parametrize("topic", sorted(catalog()))
def test_catalog_producers_are_the_services_that_publish(topic: str) -> None:
    spec = catalog()[topic]
    assert _services(spec.producers) == PRODUCED.get(topic, set()), (
        f"{topic}: catalog producers {sorted(_services(spec.producers))}, "
        f"declared publishers {sorted(PRODUCED.get(topic, set()))}"
    )


def _order(channel: tuple[str, str | None, str]) -> tuple[str, str, str]:
    topic, group, title = channel
    return topic, group or "", title


@pytest.mark.parametrize("service", SERVICES)
def test_the_asyncapi_subscribers_are_the_consumer_specs(service: str) -> None:
    """What the document declares is what runs: one subscriber per spec topic, with its group and title."""
    settings = _settings(service)
    module = importlib.import_module(f"tollgate_{service.replace('-', '_')}.topology")
    broker = module.build_broker(settings)
    # A topic may be read both by a group and by a follower without one (None): sort None first.
    declared = sorted(
        (
            (topic, sub.group_id, sub.specification.config.title_)  # type: ignore[attr-defined]
            for sub in broker.subscribers
            for topic in sub.topic_names  # type: ignore[attr-defined]
        ),
        key=_order,
    )
    specs = _specs(service, settings)
    expected = sorted(
        ((topic, spec.group, channel_title(spec, topic)) for spec in specs for topic in spec.topics),
        key=_order,
    )
    assert specs, f"{service} declares no consumer"
    assert declared == expected
    assert all(not sub.calls for sub in broker.subscribers), (
        "a subscriber has a handler: consumers run on the runtime"
    )


@pytest.mark.parametrize("service", SERVICES)
def test_every_consumer_spec_writes_its_dead_letters_to_its_services_dlq(service: str) -> None:
    from tollgate_core.topics import Topics

    settings = _settings(service)
    for spec in _specs(service, settings):
        assert spec.service == service
        assert spec.dlq == Topics(settings.topic_namespace).dlq(service), spec.name
        if spec.group is not None:
            assert spec.group.startswith(settings.consumer_group(service)), spec.name
