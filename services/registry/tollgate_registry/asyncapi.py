"""The registry's Kafka channels, declared for the AsyncAPI document (``make generate``) and used by the
running service: it consumes ``models.candidates`` and publishes ``models.lifecycle`` (through its outbox)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from faststream.kafka import KafkaBroker

from tollgate_core.bus import Delivery, create_broker, subscribe
from tollgate_core.settings import ServiceSettings
from tollgate_core.topics import Topics

SERVICE = "registry"

CandidateHandler = Callable[[bytes], Awaitable[None]]


def declare_candidate_subscriber(
    broker: KafkaBroker, settings: ServiceSettings, on_candidate: CandidateHandler
) -> None:
    topics = Topics(settings.topic_namespace)

    @subscribe(
        broker,
        topics.models_candidates,
        service=SERVICE,
        topics=topics,
        delivery=Delivery(group_id=settings.consumer_group(SERVICE), max_workers=1),
    )
    async def register_candidate(body: bytes) -> None:
        """Verify the artifact, evaluate the gates, store the version and its transitions; idempotent by
        event_id, committed only after the version and its lifecycle events are stored."""
        await on_candidate(body)


def build_broker(settings: ServiceSettings) -> KafkaBroker:
    async def ignore(_: bytes) -> None:
        return None

    broker = create_broker(settings, SERVICE)
    declare_candidate_subscriber(broker, settings, ignore)
    topics = Topics(settings.topic_namespace)
    broker.publisher(
        topics.models_lifecycle,
        description="Every state change of a model version, keyed by model name (transactional "
        "outbox: published after the change is stored).",
    )
    broker.publisher(
        topics.dlq(SERVICE), description="Candidate messages that could not be processed after retries."
    )
    return broker
