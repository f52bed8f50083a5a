"""The validator's Kafka consumers, declared once: the running service starts them from these specs and the
AsyncAPI document (``make generate``) declares them from these specs."""

from __future__ import annotations

from tollgate_core.registrations import follower_spec
from tollgate_core.runtime import ConsumerSpec
from tollgate_core.settings import ServiceSettings
from tollgate_core.topics import Topics
from tollgate_validator import SERVICE


def stage(settings: ServiceSettings) -> ConsumerSpec:
    topics = Topics(settings.topic_namespace)
    return ConsumerSpec(
        service=SERVICE,
        name=SERVICE,
        kind="transactional_stage",
        topics=(topics.events_ingested,),
        group=settings.consumer_group(SERVICE),
        description="Enforce dataset contracts.",
        dlq=topics.dlq(SERVICE),
        outputs=(
            (topics.events_validated, "Events that satisfy their dataset contract, with quality flags."),
            (topics.events_rejected, "Events that break their contract, with every failed rule and value."),
            (topics.dlq(SERVICE), "Messages that are not ingested events."),
        ),
        max_records=5000,
    )


def references(settings: ServiceSettings) -> ConsumerSpec:
    topics = Topics(settings.topic_namespace)
    return ConsumerSpec(
        service=SERVICE,
        name=f"{SERVICE}-references",
        kind="compacted_follower",
        topics=(topics.models_candidates,),
        group=None,
        description="Keep the newest training reference per dataset contract for statistical expectations: "
        "every replica reads every candidate (a consumer group would give each replica only its share), "
        "and stores the newest per contract (PostgreSQL, upsert by contract).",
        dlq=topics.dlq(SERVICE),
        max_records=50,
    )


def registrations(settings: ServiceSettings) -> ConsumerSpec:
    return follower_spec(SERVICE, settings, "the dataset contracts events are validated against.")


def consumer_specs(settings: ServiceSettings) -> list[ConsumerSpec]:
    return [stage(settings), references(settings), registrations(settings)]
