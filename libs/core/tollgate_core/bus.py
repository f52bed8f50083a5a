"""faststream on Kafka with the platform's delivery rules, for the AsyncAPI documents.

Every Kafka consumer of the platform runs on the consumer runtime (``tollgate_core.runtime``); faststream
brokers are built only to declare the services' channels (``tollgate_core.runtime.declare``) and to publish.

* ``create_broker``: idempotent producers with ``acks=all``; the broker-wide ack policy is ``MANUAL``: never
  faststream's at-most-once default ``ACK_FIRST``, and not ``ACK`` either, which commits even when the
  handler raised.
* ``declared_broker``: a service's broker with its consumer specs declared, what every ``topology.py`` starts
  from before adding what the service publishes.
* ``subscriber_policies``: what every declared subscriber resolves to, for the delivery test.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker

from tollgate_core.kafka_auth import faststream_security
from tollgate_core.runtime import ConsumerSpec, declare
from tollgate_core.settings import ServiceSettings


def create_broker(settings: ServiceSettings, service: str, **kwargs: Any) -> KafkaBroker:
    return KafkaBroker(
        settings.kafka_bootstrap,
        client_id=settings.client_id(service),
        acks="all",
        enable_idempotence=True,
        ack_policy=AckPolicy.MANUAL,
        allow_auto_create_topics=False,
        security=faststream_security(),
        **kwargs,
    )


def declared_broker(settings: ServiceSettings, service: str, specs: Iterable[ConsumerSpec]) -> KafkaBroker:
    """``service``'s broker (never started) with every consumer of ``specs`` declared on it."""
    broker = create_broker(settings, service)
    for spec in specs:
        declare(broker, spec)
    return broker


def subscriber_policies(broker: KafkaBroker) -> list[tuple[str, AckPolicy, bool]]:
    """(topics, resolved ack policy, auto-commit) of every subscriber — what the delivery test inspects."""
    found = []
    for sub in broker.subscribers:
        names = ",".join(sub.topic_names)  # type: ignore[attr-defined]
        auto_commit = bool(sub._connection_args.get("enable_auto_commit"))  # type: ignore[attr-defined]
        found.append((names, sub.ack_policy, auto_commit))
    return found
