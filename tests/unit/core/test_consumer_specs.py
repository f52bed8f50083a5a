"""Consumer specs: what a spec may declare, how a service's specs are bound, what each kind builds."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import TopicPartition
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

from tests.fake_kafka import FakeBroker
from tollgate_core.kafka import BatchSink, TransactionalStage
from tollgate_core.runtime import (
    CompactedFollower,
    ConsumerSpec,
    bind_all,
    build_consumer,
    build_follower,
    build_sink,
    build_stage,
    channel_title,
    declare,
)
from tollgate_core.settings import ServiceSettings


async def _noop(records: Any) -> None:
    return None


def _spec(**kw: Any) -> ConsumerSpec:
    fields: dict[str, Any] = {
        "service": "svc",
        "name": "svc-things",
        "kind": "database_sink",
        "topics": ("t.things",),
        "group": "ns.svc.things",
        "description": "Store things.",
        "dlq": "t.dlq.svc",
    }
    fields.update(kw)
    return ConsumerSpec(**fields)


def test_a_spec_states_a_known_kind_a_topic_and_a_group_unless_it_follows() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        _spec(kind="faststream")
    with pytest.raises(ValueError, match="reads no topic"):
        _spec(topics=())
    with pytest.raises(ValueError, match="no consumer group"):
        _spec(kind="compacted_follower")  # a follower reads everything: a group would split it
    with pytest.raises(ValueError, match="no consumer group"):
        _spec(group=None)
    with pytest.raises(ValueError, match="only a transactional stage"):
        _spec(outputs=(("t.out", "what"),))
    with pytest.raises(ValueError, match="max_records"):
        _spec(max_records=0)


def test_bind_all_refuses_a_spec_without_a_handler_and_a_handler_without_a_spec() -> None:
    specs = [_spec(), _spec(name="svc-other", group="ns.svc.other")]
    with pytest.raises(ValueError, match=r"without a handler: \['svc-other'\]"):
        bind_all(specs, {"svc-things": _noop})
    with pytest.raises(ValueError, match=r"without a spec: \['svc-extra'\]"):
        bind_all(specs, {"svc-things": _noop, "svc-other": _noop, "svc-extra": _noop})
    with pytest.raises(ValueError, match="repeat"):
        bind_all([_spec(), _spec()], {"svc-things": _noop})
    bound = bind_all(specs, {"svc-things": _noop, "svc-other": _noop})
    assert all(spec.handler is _noop for spec in bound.values())


def test_each_kind_builds_its_runtime_consumer() -> None:
    broker = FakeBroker()
    broker.create_topic("t.things")
    factories = {"consumer_factory": broker.consumer, "producer_factory": broker.producer}
    settings = ServiceSettings(topic_namespace="ns", instance_id="r2")
    with pytest.raises(ValueError, match="bind its handler"):
        build_consumer(_spec(), settings)
    stage = build_stage(
        _spec(kind="transactional_stage", outputs=(("t.out", "what"),)).bind(_noop), settings, **factories
    )
    assert isinstance(stage, TransactionalStage)
    # One transactional id per input partition, the same in every replica, under the prefix the ACLs grant.
    assert (
        stage.partition_transactional_id(TopicPartition("t.things", 3)) == "ns.svc.ns.svc.things-t.things-3"
    )
    sink = build_sink(_spec().bind(_noop), settings, **factories)
    assert isinstance(sink, BatchSink) and not isinstance(sink, CompactedFollower)
    follower = build_follower(_spec(kind="compacted_follower", group=None).bind(_noop), settings, **factories)
    assert isinstance(follower, CompactedFollower)
    with pytest.raises(TypeError, match="not a transactional stage"):
        build_stage(_spec().bind(_noop), settings, **factories)
    with pytest.raises(TypeError, match="not a database sink"):
        build_sink(_spec(kind="compacted_follower", group=None).bind(_noop), settings, **factories)


def test_a_declared_spec_is_a_subscriber_without_a_handler_in_the_document() -> None:
    broker = KafkaBroker("localhost:9092")
    spec = _spec(name="svc-things")
    declare(broker, spec)
    document = AsyncAPI(broker, schema_version="3.0.0").to_specification().to_jsonable()
    channel = document["channels"][channel_title(spec, "t.things")]
    assert channel_title(spec, "t.things") == "t.things:Things"
    assert channel["address"] == "t.things"
    assert channel["description"].startswith("Store things. At-least-once into an idempotent store")
    [subscriber] = broker.subscribers
    assert subscriber.calls == [] and subscriber.group_id == "ns.svc.things"
