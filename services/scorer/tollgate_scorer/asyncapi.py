"""The scorer's Kafka channels, declared for the AsyncAPI document (``make generate``).

* ``scoring.requests`` → ``scoring.results`` (+ ``dlq.scorer``): a transactional stage, offsets committed
  with the results.
* ``models.lifecycle``: read whole by every replica, without a consumer group and without commits (the
  scorer folds the topic from its beginning on every start; see ``tollgate_scorer.follower``).
* ``inference.log``: one event per inference, from an idempotent producer.
"""

from __future__ import annotations

from faststream import AckPolicy
from faststream.kafka import KafkaBroker

from tollgate_core.bus import create_broker
from tollgate_core.kafka import StageSpec, declare_stage
from tollgate_core.settings import ServiceSettings
from tollgate_core.topics import Topics
from tollgate_scorer.settings import ScorerSettings
from tollgate_scorer.stage import SERVICE


def stage_spec(settings: ServiceSettings) -> StageSpec:
    topics = Topics(settings.topic_namespace)
    return StageSpec(
        service=SERVICE,
        group_id=settings.consumer_group(SERVICE),
        sources=(topics.scoring_requests,),
        outputs=(
            (topics.scoring_results, "One result per request: outputs, version and route, or why it failed."),
            (topics.dlq(SERVICE), "Messages that are not scoring requests."),
        ),
        dlq=topics.dlq(SERVICE),
        description="Score Kafka requests in batches; exactly-once (Kafka transactions).",
    )


def build_broker(settings: ScorerSettings) -> KafkaBroker:
    topics = Topics(settings.topic_namespace)
    broker = create_broker(settings, SERVICE)
    declare_stage(broker, stage_spec(settings))

    async def follow_lifecycle(body: bytes) -> None:  # documentation only: the broker is never started
        raise NotImplementedError

    broker.subscriber(
        topics.models_lifecycle,
        ack_policy=AckPolicy.MANUAL,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        description="Folded from the beginning on every start, then followed: which versions serve, with "
        "canary weight or shadow. No consumer group, nothing committed.",
    )(follow_lifecycle)
    broker.publisher(
        topics.inference_log,
        description="One event per inference (HTTP, OIP or Kafka; champion, canary or shadow), PII protected; "
        "spooled locally while Kafka is unreachable.",
    )
    return broker
