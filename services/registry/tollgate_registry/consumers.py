"""The registry's Kafka consumers, declared once: the running service starts them from these specs and the
AsyncAPI document (``make generate``) declares them from these specs."""

from __future__ import annotations

from tollgate_core.registrations import follower_spec
from tollgate_core.runtime import ConsumerSpec
from tollgate_core.settings import ServiceSettings
from tollgate_core.topics import Topics
from tollgate_registry import SERVICE


def candidates(settings: ServiceSettings) -> ConsumerSpec:
    topics = Topics(settings.topic_namespace)
    return ConsumerSpec(
        service=SERVICE,
        name=f"{SERVICE}-candidates",
        kind="database_sink",
        topics=(topics.models_candidates,),
        group=settings.consumer_group(SERVICE),
        description="Verify the artifact, evaluate the gates, store the version and its transitions "
        "(idempotent by event_id; lifecycle events through the outbox).",
        dlq=topics.dlq(SERVICE),
        max_records=10,
    )


def registrations(settings: ServiceSettings) -> ConsumerSpec:
    return follower_spec(
        SERVICE,
        settings,
        "the gates, rollout and risk tier of each model, and the contracts new registrations are "
        "checked against.",
    )


def consumer_specs(settings: ServiceSettings) -> list[ConsumerSpec]:
    return [candidates(settings), registrations(settings)]
