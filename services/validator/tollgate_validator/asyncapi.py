"""The validator's Kafka channels, declared for the AsyncAPI document (``make generate``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from faststream.kafka import KafkaBroker

from tollgate_core.bus import Delivery, create_broker, subscribe
from tollgate_core.kafka import StageSpec, declare_stage
from tollgate_core.settings import ServiceSettings
from tollgate_core.topics import Topics
from tollgate_validator.stage import SERVICE

ReferenceHandler = Callable[[dict[str, Any]], Awaitable[None]]


def stage_spec(settings: ServiceSettings) -> StageSpec:
    topics = Topics(settings.topic_namespace)
    return StageSpec(
        service=SERVICE,
        group_id=settings.consumer_group(SERVICE),
        sources=(topics.events_ingested,),
        outputs=(
            (topics.events_validated, "Events that satisfy their dataset contract, with quality flags."),
            (topics.events_rejected, "Events that break their contract, with every failed rule and value."),
            (topics.dlq(SERVICE), "Messages that are not ingested events."),
        ),
        dlq=topics.dlq(SERVICE),
        description="Enforce dataset contracts; exactly-once (Kafka transactions).",
    )


def declare_reference_subscriber(
    broker: KafkaBroker, settings: ServiceSettings, on_reference: ReferenceHandler
) -> None:
    topics = Topics(settings.topic_namespace)

    @subscribe(
        broker,
        topics.models_candidates,
        service=SERVICE,
        topics=topics,
        delivery=Delivery(group_id=settings.consumer_group(SERVICE, "references"), max_workers=1),
    )
    async def training_reference(body: bytes) -> None:
        """Keep the newest training reference per dataset contract for statistical expectations."""
        await on_reference(orjson.loads(body))


def build_broker(settings: ServiceSettings) -> KafkaBroker:
    async def ignore(_: dict[str, Any]) -> None:
        return None

    broker = create_broker(settings, SERVICE)
    declare_stage(broker, stage_spec(settings))
    declare_reference_subscriber(broker, settings, ignore)
    return broker
