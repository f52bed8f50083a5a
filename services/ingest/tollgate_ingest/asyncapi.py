"""The ingest service's Kafka channels, declared for the AsyncAPI document (``make generate``)."""

from __future__ import annotations

from faststream.kafka import KafkaBroker

from tollgate_core.bus import create_broker
from tollgate_core.kafka import StageSpec, declare_stage
from tollgate_core.settings import ServiceSettings
from tollgate_core.topics import Topics
from tollgate_ingest.stage import SERVICE


def stage_spec(settings: ServiceSettings) -> StageSpec:
    topics = Topics(settings.topic_namespace)
    return StageSpec(
        service=SERVICE,
        group_id=settings.consumer_group(SERVICE),
        sources=(topics.events_raw,),
        outputs=(
            (
                topics.events_ingested,
                "Accepted events: envelope checked, timestamps in UTC, first of their id.",
            ),
            (topics.dlq(SERVICE), "Messages that are not events (not JSON, no envelope, unknown schema)."),
        ),
        dlq=topics.dlq(SERVICE),
        description="Normalise raw events, drop duplicate event ids, dead-letter malformed messages; "
        "exactly-once (Kafka transactions).",
    )


def build_broker(settings: ServiceSettings) -> KafkaBroker:
    broker = create_broker(settings, SERVICE)
    declare_stage(broker, stage_spec(settings))
    broker.publisher(
        Topics(settings.topic_namespace).events_raw,
        description="HTTP gateway: events posted to /v1/events, acknowledged by all replicas.",
    )
    return broker
