"""The ingest service's Kafka channels, declared for the AsyncAPI document (``make generate``): its consumers
from their specs (``tollgate_ingest.consumers``), and what it publishes."""

from __future__ import annotations

from faststream.kafka import KafkaBroker

from tollgate_core.bus import declared_broker
from tollgate_core.settings import ServiceSettings
from tollgate_core.topics import Topics
from tollgate_ingest import SERVICE
from tollgate_ingest.consumers import consumer_specs


def build_broker(settings: ServiceSettings) -> KafkaBroker:
    broker = declared_broker(settings, SERVICE, consumer_specs(settings))
    broker.publisher(
        Topics(settings.topic_namespace).events_raw,
        description="HTTP gateway: events posted to /v1/events, acknowledged by all replicas.",
    )
    return broker
