"""The trainer's Kafka consumers, declared once: the running service starts them from these specs and the
AsyncAPI document (``make generate``) declares them from these specs."""

from __future__ import annotations

from tollgate_core.registrations import follower_spec
from tollgate_core.runtime import ConsumerSpec
from tollgate_core.settings import ServiceSettings
from tollgate_core.topics import Topics
from tollgate_trainer import SERVICE


def store(settings: ServiceSettings) -> ConsumerSpec:
    topics = Topics(settings.topic_namespace)
    return ConsumerSpec(
        service=SERVICE,
        name=f"{SERVICE}-store",
        kind="database_sink",
        topics=(topics.events_validated,),
        group=settings.consumer_group(SERVICE),
        description="Labeled records into the training store (PostgreSQL, idempotent by event_id).",
        dlq=topics.dlq(SERVICE),
        max_records=2000,
    )


def requests(settings: ServiceSettings) -> ConsumerSpec:
    topics = Topics(settings.topic_namespace)
    return ConsumerSpec(
        service=SERVICE,
        name=f"{SERVICE}-requests",
        kind="database_sink",
        topics=(topics.training_requests,),
        group=settings.consumer_group(SERVICE, "requests"),
        description="Record a training request (operator or monitor alert; idempotent by event_id); the "
        "next debounced run consumes it.",
        dlq=topics.dlq(SERVICE),
        max_records=50,
    )


def registrations(settings: ServiceSettings) -> ConsumerSpec:
    return follower_spec(
        SERVICE,
        settings,
        "the models to train (policy, threshold rule) and the contracts their preprocessing is built from.",
    )


def consumer_specs(settings: ServiceSettings) -> list[ConsumerSpec]:
    return [store(settings), requests(settings), registrations(settings)]
