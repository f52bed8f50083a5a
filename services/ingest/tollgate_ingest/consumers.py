"""The ingest service's Kafka consumers, declared once: the running service starts them from these specs
and the AsyncAPI document (``make generate``) declares them from these specs."""

from __future__ import annotations

from tollgate_core.registrations import follower_spec
from tollgate_core.runtime import ConsumerSpec
from tollgate_core.settings import ServiceSettings
from tollgate_core.topics import Topics
from tollgate_ingest import SERVICE


def stage(settings: ServiceSettings) -> ConsumerSpec:
    topics = Topics(settings.topic_namespace)
    return ConsumerSpec(
        service=SERVICE,
        name=SERVICE,
        kind="transactional_stage",
        topics=(topics.events_raw,),
        group=settings.consumer_group(SERVICE),
        description="Normalise raw events, drop duplicate event ids, dead-letter malformed messages.",
        dlq=topics.dlq(SERVICE),
        outputs=(
            (
                topics.events_ingested,
                "Accepted events: envelope checked, timestamps in UTC, first of their id.",
            ),
            (topics.dlq(SERVICE), "Messages that are not events (not JSON, no envelope, unknown schema)."),
        ),
        max_records=5000,
    )


def registrations(settings: ServiceSettings) -> ConsumerSpec:
    return follower_spec(
        SERVICE,
        settings,
        "the dataset contracts whose events are accepted, and that dry runs and CSV uploads are read "
        "against.",
    )


def consumer_specs(settings: ServiceSettings) -> list[ConsumerSpec]:
    return [stage(settings), registrations(settings)]
