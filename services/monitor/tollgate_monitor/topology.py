"""The monitor's Kafka channels, declared for the AsyncAPI document (``make generate``): its consumers from
their specs (``tollgate_monitor.consumers``), and what it publishes."""

from __future__ import annotations

from faststream.kafka import KafkaBroker

from tollgate_core.alerts import AlertEvent
from tollgate_core.bus import declared_broker
from tollgate_core.lifecycle import TrainingRequestEvent
from tollgate_core.settings import ServiceSettings
from tollgate_core.topics import Topics
from tollgate_monitor import SERVICE
from tollgate_monitor.consumers import consumer_specs


def build_broker(settings: ServiceSettings) -> KafkaBroker:
    topics = Topics(settings.topic_namespace)
    broker = declared_broker(settings, SERVICE, consumer_specs(settings))
    broker.publisher(
        topics.monitor_alerts,
        schema=AlertEvent,
        description="Alerts raised and cleared (transactional outbox), keyed by model name.",
    )
    broker.publisher(
        topics.training_requests,
        schema=TrainingRequestEvent,
        description="Debounced training requests for drift or performance alerts on production "
        "versions (transactional outbox).",
    )
    broker.publisher(topics.dlq(SERVICE), description="Records that could not be read, with their origin.")
    return broker
