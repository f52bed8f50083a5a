"""The validator's Kafka channels, declared for the AsyncAPI document (``make generate``): its consumers from
their specs (``tollgate_validator.consumers``)."""

from __future__ import annotations

from faststream.kafka import KafkaBroker

from tollgate_core.bus import create_broker
from tollgate_core.runtime import declare
from tollgate_core.settings import ServiceSettings
from tollgate_validator import SERVICE
from tollgate_validator.consumers import consumer_specs


def build_broker(settings: ServiceSettings) -> KafkaBroker:
    broker = create_broker(settings, SERVICE)
    for spec in consumer_specs(settings):
        declare(broker, spec)
    return broker
