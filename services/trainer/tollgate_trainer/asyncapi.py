"""The trainer's Kafka channels, declared for the AsyncAPI document (``make generate``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from faststream.kafka import KafkaBroker

from tollgate_core.bus import Delivery, create_broker, subscribe
from tollgate_core.lifecycle import CandidateEvent, TrainingRequestEvent
from tollgate_core.settings import ServiceSettings
from tollgate_core.topics import Topics

SERVICE = "trainer"


def declare_request_subscriber(
    broker: KafkaBroker, settings: ServiceSettings, on_request: Callable[[bytes], Awaitable[None]]
) -> None:
    topics = Topics(settings.topic_namespace)

    @subscribe(
        broker,
        topics.training_requests,
        service=SERVICE,
        topics=topics,
        delivery=Delivery(group_id=settings.consumer_group(SERVICE, "requests"), max_workers=1),
    )
    async def training_request(body: bytes) -> None:
        """Record a training request (operator or monitor alert); the next debounced run consumes it."""
        await on_request(body)


def build_broker(settings: ServiceSettings) -> KafkaBroker:
    async def ignore(_: bytes) -> None:
        return None

    topics = Topics(settings.topic_namespace)
    broker = create_broker(settings, SERVICE)

    @broker.subscriber(
        topics.events_validated,
        group_id=settings.consumer_group(SERVICE),
        ack_policy=__import__("faststream").AckPolicy.MANUAL,
        isolation_level="read_committed",
        description="Labeled records into the training store (PostgreSQL, idempotent by event_id); "
        "offsets committed after the rows are stored.",
    )
    async def training_store(body: bytes) -> None:  # documentation only: the store runs on BatchSink
        raise NotImplementedError

    declare_request_subscriber(broker, settings, ignore)
    broker.publisher(
        topics.models_candidates,
        schema=CandidateEvent,
        description="Trained, converted, parity-checked versions with metrics, reference and lineage.",
    )
    broker.publisher(
        topics.training_requests,
        schema=TrainingRequestEvent,
        description="Training requests posted to the trainer's HTTP API by operators.",
    )
    broker.publisher(
        topics.dlq(SERVICE),
        description="Validated-event records the training store cannot read, unchanged, with headers "
        "naming the source topic, partition, offset, error and attempt.",
    )
    return broker
