"""The scorer's Kafka channels, declared for the AsyncAPI document (``make generate``): its consumers from
their specs (``tollgate_scorer.consumers``: the scoring stage and the lifecycle follower), and the inference
log it publishes (one event per inference, from an idempotent producer)."""

from __future__ import annotations

from faststream.kafka import KafkaBroker

from tollgate_core.bus import declared_broker
from tollgate_core.topics import Topics
from tollgate_scorer import SERVICE
from tollgate_scorer.consumers import consumer_specs
from tollgate_scorer.settings import ScorerSettings


def build_broker(settings: ScorerSettings) -> KafkaBroker:
    topics = Topics(settings.topic_namespace)
    broker = declared_broker(settings, SERVICE, consumer_specs(settings))
    broker.publisher(
        topics.inference_log,
        description="One event per inference (HTTP, OIP or Kafka; champion, canary or shadow), PII protected; "
        "spooled locally while Kafka is unreachable.",
    )
    return broker
