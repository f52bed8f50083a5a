"""The registry's Kafka channels, declared for the AsyncAPI document (``make generate``): it consumes
``models.candidates`` (spec in ``tollgate_registry.consumers``) and publishes ``models.lifecycle`` (through its
outbox)."""

from __future__ import annotations

from faststream.kafka import KafkaBroker

from tollgate_core.bus import declared_broker
from tollgate_core.settings import ServiceSettings
from tollgate_core.topics import Topics
from tollgate_registry import SERVICE
from tollgate_registry.consumers import consumer_specs


def build_broker(settings: ServiceSettings) -> KafkaBroker:
    broker = declared_broker(settings, SERVICE, consumer_specs(settings))
    topics = Topics(settings.topic_namespace)
    broker.publisher(
        topics.models_lifecycle,
        description="Every state change of a model version, keyed by model name (transactional "
        "outbox: published after the change is stored).",
    )
    broker.publisher(
        topics.registrations,
        description="Dataset contracts and model catalog entries registered live (POST /v1/contracts, "
        "/v1/models), keyed contract/<name>/v<N> or model/<name> (transactional outbox).",
    )
    broker.publisher(topics.dlq(SERVICE), description="Candidate messages that could not be processed.")
    return broker
