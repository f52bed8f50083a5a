"""The monitor's Kafka channels, declared for the AsyncAPI document (``make generate``) and used by the
running service for its two low-volume subscribers (candidates and lifecycle)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from faststream import AckPolicy
from faststream.kafka import KafkaBroker

from tollgate_core.alerts import AlertEvent
from tollgate_core.bus import Delivery, create_broker, subscribe
from tollgate_core.lifecycle import TrainingRequestEvent
from tollgate_core.settings import ServiceSettings
from tollgate_core.topics import Topics

SERVICE = "monitor"

Handler = Callable[[bytes], Awaitable[None]]


def declare_version_subscribers(
    broker: KafkaBroker, settings: ServiceSettings, on_candidate: Handler, on_lifecycle: Handler
) -> None:
    topics = Topics(settings.topic_namespace)

    @subscribe(
        broker,
        topics.models_candidates,
        service=SERVICE,
        topics=topics,
        delivery=Delivery(group_id=settings.consumer_group(SERVICE, "candidates"), max_workers=1),
    )
    async def learn_reference(body: bytes) -> None:
        """Store each version's reference profile and holdout metrics (PostgreSQL, upsert by version)."""
        await on_candidate(body)

    @subscribe(
        broker,
        topics.models_lifecycle,
        service=SERVICE,
        topics=topics,
        delivery=Delivery(group_id=settings.consumer_group(SERVICE, "lifecycle"), max_workers=1),
    )
    async def follow_stages(body: bytes) -> None:
        """Store each version's stage (production, staging, ...): alerts and retraining depend on it."""
        await on_lifecycle(body)


def build_broker(settings: ServiceSettings) -> KafkaBroker:
    async def ignore(_: bytes) -> None:
        return None

    topics = Topics(settings.topic_namespace)
    broker = create_broker(settings, SERVICE)
    declare_version_subscribers(broker, settings, ignore, ignore)

    async def windows(body: bytes) -> None:  # documentation only: the windows run on BatchSink
        raise NotImplementedError

    async def labels(body: bytes) -> None:  # documentation only: the label join runs on BatchSink
        raise NotImplementedError

    broker.subscriber(
        topics.inference_log,
        group_id=settings.consumer_group(SERVICE, "windows"),
        ack_policy=AckPolicy.MANUAL,
        isolation_level="read_committed",
        description="Inference records counted into per-version windows; the window state, its offset and "
        "the alerts it raised are checkpointed in PostgreSQL per partition before offsets are committed.",
    )(windows)
    broker.subscriber(
        topics.events_validated,
        group_id=settings.consumer_group(SERVICE, "labels"),
        ack_policy=AckPolicy.MANUAL,
        isolation_level="read_committed",
        description="Labeled records joined to earlier predictions by request id or entity id (idempotent "
        "update); offsets committed after the join.",
    )(labels)
    broker.publisher(
        topics.monitor_alerts,
        schema=AlertEvent,
        description="Alerts raised and cleared (transactional outbox), keyed by model name.",
    )
    broker.publisher(
        topics.training_requests,
        schema=TrainingRequestEvent,
        description="Debounced training requests for drift or performance alerts on production "
        "versions (transactional outbox).",
    )
    broker.publisher(topics.dlq(SERVICE), description="Records that could not be read, with their origin.")
    return broker
