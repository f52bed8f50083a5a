"""The topic catalog's producer and consumer lists agree with what the services declare.

Every service declares its Kafka channels in its ``asyncapi`` module (the source of the AsyncAPI documents):
a subscriber per consumed topic (the runtime's stages and sinks, and the faststream subscribers), a
publisher per produced topic. The catalog (``schemas/topics/*.yaml``, the source of the broker's ACLs) must
name exactly those services; names that are not services (operators, clients, external producers) are free.
"""

from __future__ import annotations

import importlib
from collections import defaultdict

import pytest

from tollgate_core.settings import ServiceSettings
from tollgate_core.topics import SERVICES, catalog


def _declared() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    consumed: dict[str, set[str]] = defaultdict(set)
    produced: dict[str, set[str]] = defaultdict(set)
    for service in SERVICES:
        module = importlib.import_module(f"tollgate_{service.replace('-', '_')}.asyncapi")
        settings = ServiceSettings()
        if service == "audit-log":  # every stream it can record, the opt-in events.validated too
            from tollgate_audit_log.settings import AuditLogSettings

            settings = AuditLogSettings(audit_validated=True)
        broker = module.build_broker(settings)
        for sub in broker.subscribers:
            for topic in sub.topic_names:
                consumed[_catalog_name(topic)].add(service)
        for pub in broker.publishers:
            produced[_catalog_name(pub.topic)].add(service)
    return consumed, produced


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
