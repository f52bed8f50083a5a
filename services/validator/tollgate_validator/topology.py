"""The validator's Kafka channels, declared for the AsyncAPI document (``make generate``): its consumers from
their specs (``tollgate_validator.consumers``)."""

from __future__ import annotations

from faststream.kafka import KafkaBroker

from tollgate_core.bus import declared_broker
from tollgate_core.settings import ServiceSettings
from tollgate_validator import SERVICE
from tollgate_validator.consumers import consumer_specs


def build_broker(settings: ServiceSettings) -> KafkaBroker:
    broker = declared_broker(settings, SERVICE, consumer_specs(settings))
    return broker
