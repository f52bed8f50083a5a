"""The scorer's Kafka consumers, declared once: the running service starts them from these specs and the
AsyncAPI document (``make generate``) declares them from these specs.

* ``scoring.requests`` → ``scoring.results`` (+ ``dlq.scorer``): a transactional stage, offsets committed
  with the results.
* ``registrations``: a compacted follower of the contracts registered live (requests are read against them).
* ``models.lifecycle``: a compacted follower, read whole by every replica on every start, without a consumer
  group and without commits (see ``tollgate_scorer.follower``).
"""

from __future__ import annotations

from tollgate_core.registrations import follower_spec
from tollgate_core.runtime import ConsumerSpec
from tollgate_core.settings import ServiceSettings
from tollgate_core.topics import Topics
from tollgate_scorer import SERVICE


def stage(settings: ServiceSettings) -> ConsumerSpec:
    topics = Topics(settings.topic_namespace)
    return ConsumerSpec(
        service=SERVICE,
        name=SERVICE,
        kind="transactional_stage",
        topics=(topics.scoring_requests,),
        group=settings.consumer_group(SERVICE),
        description="Score Kafka requests in batches.",
        dlq=topics.dlq(SERVICE),
        outputs=(
            (topics.scoring_results, "One result per request: outputs, version and route, or why it failed."),
            (
                topics.dlq(SERVICE),
                "Messages that are not scoring requests, and lifecycle records that are "
                "not lifecycle events.",
            ),
        ),
        max_records=5000,
    )


def lifecycle(settings: ServiceSettings) -> ConsumerSpec:
    topics = Topics(settings.topic_namespace)
    return ConsumerSpec(
        service=SERVICE,
        name=f"{SERVICE}-lifecycle",
        kind="compacted_follower",
        topics=(topics.models_lifecycle,),
        group=None,
        description="Which versions serve, with canary weight or shadow: folded from the beginning on "
        "every start (the final state of each model applied once), then followed.",
        dlq=topics.dlq(SERVICE),
        max_records=500,
    )


def registrations(settings: ServiceSettings) -> ConsumerSpec:
    return follower_spec(
        SERVICE,
        settings,
        "the dataset contracts requests are read against (a served version whose contract changes is "
        "reloaded with it and swapped in).",
    )


def consumer_specs(settings: ServiceSettings) -> list[ConsumerSpec]:
    return [stage(settings), lifecycle(settings), registrations(settings)]
