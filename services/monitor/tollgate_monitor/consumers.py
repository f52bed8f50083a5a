"""The monitor's Kafka consumers, declared once: the running service starts them from these specs and the
AsyncAPI document (``make generate``) declares them from these specs."""

from __future__ import annotations

from tollgate_core.registrations import follower_spec
from tollgate_core.runtime import ConsumerSpec
from tollgate_core.settings import ServiceSettings
from tollgate_core.topics import Topics
from tollgate_monitor import SERVICE


def windows(settings: ServiceSettings) -> ConsumerSpec:
    topics = Topics(settings.topic_namespace)
    return ConsumerSpec(
        service=SERVICE,
        name=f"{SERVICE}-windows",
        kind="database_sink",
        topics=(topics.inference_log,),
        group=settings.consumer_group(SERVICE, "windows"),
        description="Inference records counted into per-version windows; the window state, its offset and "
        "the alerts it raised are checkpointed in PostgreSQL per partition.",
        dlq=topics.dlq(SERVICE),
        max_records=2000,
    )


def labels(settings: ServiceSettings) -> ConsumerSpec:
    topics = Topics(settings.topic_namespace)
    return ConsumerSpec(
        service=SERVICE,
        name=f"{SERVICE}-labels",
        kind="database_sink",
        topics=(topics.events_validated,),
        group=settings.consumer_group(SERVICE, "labels"),
        description="Labeled records joined to earlier predictions by request id or entity id (idempotent "
        "update).",
        dlq=topics.dlq(SERVICE),
        max_records=2000,
    )


def candidates(settings: ServiceSettings) -> ConsumerSpec:
    topics = Topics(settings.topic_namespace)
    return ConsumerSpec(
        service=SERVICE,
        name=f"{SERVICE}-candidates",
        kind="database_sink",
        topics=(topics.models_candidates,),
        group=settings.consumer_group(SERVICE, "candidates"),
        description="Store each version's reference profile and holdout metrics (PostgreSQL, upsert by "
        "version).",
        dlq=topics.dlq(SERVICE),
        max_records=50,
    )


def lifecycle(settings: ServiceSettings) -> ConsumerSpec:
    topics = Topics(settings.topic_namespace)
    return ConsumerSpec(
        service=SERVICE,
        name=f"{SERVICE}-lifecycle",
        kind="database_sink",
        topics=(topics.models_lifecycle,),
        group=settings.consumer_group(SERVICE, "lifecycle"),
        description="Store each version's stage (production, staging, ...): alerts and retraining depend on "
        "it (PostgreSQL, upsert by version).",
        dlq=topics.dlq(SERVICE),
        max_records=50,
    )


def registrations(settings: ServiceSettings) -> ConsumerSpec:
    return follower_spec(
        SERVICE,
        settings,
        "the dataset contracts that choose drift tests per feature type and protect personal data.",
    )


def consumer_specs(settings: ServiceSettings) -> list[ConsumerSpec]:
    return [
        windows(settings),
        labels(settings),
        candidates(settings),
        lifecycle(settings),
        registrations(settings),
    ]
