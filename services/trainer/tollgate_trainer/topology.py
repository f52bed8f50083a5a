"""The trainer's Kafka channels, declared for the AsyncAPI document (``make generate``): its consumers from
their specs (``tollgate_trainer.consumers``), and what it publishes."""

from __future__ import annotations

from faststream.kafka import KafkaBroker

from tollgate_core.bus import declared_broker
from tollgate_core.lifecycle import CandidateEvent, TrainingRequestEvent
from tollgate_core.settings import ServiceSettings
from tollgate_core.submissions import SubmissionAttemptEvent
from tollgate_core.topics import Topics
from tollgate_trainer import SERVICE
from tollgate_trainer.consumers import consumer_specs


def build_broker(settings: ServiceSettings) -> KafkaBroker:
    topics = Topics(settings.topic_namespace)
    broker = declared_broker(settings, SERVICE, consumer_specs(settings))
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
        topics.models_submissions,
        schema=SubmissionAttemptEvent,
        description="Every attempt to submit a model (POST /v1/models/{model}/submissions), refused with "
        "its reasons or accepted with its version, naming the principal; through the outbox, before the "
        "answer.",
    )
    broker.publisher(
        topics.dlq(SERVICE),
        description="Records the trainer cannot read (validated events, training requests), unchanged, "
        "with headers naming the source topic, partition, offset, error and attempt.",
    )
    return broker
