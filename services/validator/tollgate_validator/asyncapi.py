"""The validator's Kafka channels, declared for the AsyncAPI document (``make generate``)."""

from __future__ import annotations

from faststream.kafka import KafkaBroker

from tollgate_core.bus import create_broker
from tollgate_core.kafka import StageSpec, declare_stage
from tollgate_core.settings import ServiceSettings
from tollgate_core.topics import Topics

SERVICE = "validator"


def stage_spec(settings: ServiceSettings) -> StageSpec:
    topics = Topics(settings.topic_namespace)
    return StageSpec(
        service=SERVICE,
        group_id=f"{settings.topic_namespace}.{SERVICE}",
        sources=(topics.events_ingested,),
        outputs=(
            (topics.events_validated, "Events that satisfy their dataset contract, with quality flags."),
            (topics.events_rejected, "Events that break their contract, with every failed rule and value."),
            (topics.dlq(SERVICE), "Messages that are not ingested events."),
        ),
        description="Enforce dataset contracts; exactly-once (Kafka transactions).",
    )


def build_broker(settings: ServiceSettings) -> KafkaBroker:
    from tollgate_validator.app import declare_reference_subscriber

    async def ignore(_: dict[str, object]) -> None:
        return None

    broker = create_broker(settings, SERVICE)
    declare_stage(broker, stage_spec(settings))
    declare_reference_subscriber(
        broker, Topics(settings.topic_namespace), f"{settings.topic_namespace}.{SERVICE}.references", ignore
    )
    return broker
