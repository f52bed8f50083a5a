"""Following the registry: the lifecycle fold, and loading versions into the route table."""

from __future__ import annotations

import pytest

from tests.unit.scorer.support import CONTRACT, MODEL, PII_KEY, lifecycle_event, trained
from tollgate_core.artifacts import InMemoryArtifactStore
from tollgate_core.contracts import ContractRegistry
from tollgate_core.lifecycle import LifecycleEvent
from tollgate_scorer.follower import DesiredRoute, LifecycleState, VersionRef
from tollgate_scorer.manager import ModelManager
from tollgate_scorer.model import SessionConfig
from tollgate_scorer.routing import ModelTable


def fold(state: LifecycleState, raw: bytes) -> DesiredRoute | None:
    return state.apply(LifecycleEvent.model_validate_json(raw).payload)


def ref(version: str) -> VersionRef:
    return VersionRef(MODEL, version, trained(version).digest, CONTRACT.schema_id, "classification")


def test_fold_follows_what_each_event_says_serves() -> None:
    state = LifecycleState()
    first = fold(state, lifecycle_event("1", production="1"))
    assert first == DesiredRoute(MODEL, ref("1"), None, 0.0, False)
    staged = fold(
        state,
        lifecycle_event(
            "2", production="1", staging="2", canary_weight=0.2, transition="staged", to_stage="staging"
        ),
    )
    assert staged == DesiredRoute(MODEL, ref("1"), ref("2"), 0.2, False)
    assert (
        fold(state, lifecycle_event("2", production="1", staging="2", canary_weight=0.2)) is None
    )  # no change
    promoted = fold(state, lifecycle_event("2", production="2"))
    assert promoted == DesiredRoute(MODEL, ref("2"), None, 0.0, False)
    rolled_back = fold(state, lifecycle_event("1", production="1", transition="rolled_back"))
    assert rolled_back is not None and rolled_back.production == ref(
        "1"
    )  # an older version's artifact is known
    shadow = fold(
        state,
        lifecycle_event(
            "3", production="1", staging="3", shadow=True, transition="staged", to_stage="staging"
        ),
    )
    assert shadow == DesiredRoute(MODEL, ref("1"), ref("3"), 0.0, True)


def test_unknown_production_version_is_not_guessed() -> None:
    state = LifecycleState()
    route = fold(state, lifecycle_event("2", production="7", staging="2", canary_weight=0.5))
    assert route is not None and route.production is None and route.staging == ref("2")


def manager(store: InMemoryArtifactStore) -> tuple[ModelManager, ModelTable]:
    table = ModelTable()
    return ModelManager(
        table, store, ContractRegistry.from_directory(), SessionConfig(), PII_KEY, warmup_rounds=1
    ), table


async def test_versions_are_loaded_and_swapped_in_one_assignment() -> None:
    store = InMemoryArtifactStore()
    for version in "12":
        store.put(trained(version).onnx)
    models, table = manager(store)
    await models.apply(DesiredRoute(MODEL, ref("1"), ref("2"), 0.25, False))
    route = table.get(MODEL)
    assert route is not None and route.production is not None and route.staging is not None
    assert (route.production.version, route.staging.version, route.canary_buckets) == ("1", "2", 2500)
    in_flight = route
    await models.apply(DesiredRoute(MODEL, ref("2"), None, 0.0, False))
    promoted = table.get(MODEL)
    assert promoted is not None and promoted.production is in_flight.staging  # loaded once, reused
    assert in_flight.production is not None and in_flight.production.version == "1"  # old route untouched
    assert models.loads[MODEL] == 2 and models.swaps[MODEL] == 2 and MODEL not in models.errors


async def test_corrupt_or_missing_artifacts_are_refused_and_production_keeps_serving() -> None:
    store = InMemoryArtifactStore()
    store.put(trained("1").onnx)
    models, table = manager(store)
    await models.apply(DesiredRoute(MODEL, ref("1"), None, 0.0, False))
    store.put(trained("2").onnx)
    store.blobs[trained("2").digest] = trained("2").onnx[:-1] + b"\x00"  # tampered on disk
    await models.apply(DesiredRoute(MODEL, ref("2"), None, 0.0, False))
    route = table.get(MODEL)
    assert route is not None and route.production is not None and route.production.version == "1"
    assert "version 2" in models.errors[MODEL] and "sha256" in models.errors[MODEL]
    await models.apply(DesiredRoute(MODEL, ref("1"), ref("3"), 0.5, False))  # never stored
    route = table.get(MODEL)
    assert route is not None and route.staging is None and route.canary_buckets == 0
    assert "version 3" in models.errors[MODEL] and models.load_failures[MODEL] == 2


async def test_non_onnx_and_wrong_contract_are_refused() -> None:
    store = InMemoryArtifactStore()
    digest = store.put(b"\x80\x04not an onnx model")  # e.g. a pickle: never deserialised
    models, table = manager(store)
    await models.apply(
        DesiredRoute(
            MODEL, VersionRef(MODEL, "9", digest, CONTRACT.schema_id, "classification"), None, 0.0, False
        )
    )
    assert "not a loadable ONNX model" in models.errors[MODEL]
    store.put(trained("1").onnx)
    await models.apply(
        DesiredRoute(
            MODEL,
            VersionRef(MODEL, "1", trained("1").digest, "synthetic-risk.v1", "classification"),
            None,
            0.0,
            False,
        )
    )
    assert "synthetic-risk.v1" in models.errors[MODEL]
    route = table.get(MODEL)
    assert route is not None and route.production is None


@pytest.mark.parametrize("empty", [DesiredRoute(MODEL, None, None, 0.0, False)])
async def test_nothing_to_serve_creates_no_route(empty: DesiredRoute) -> None:
    models, table = manager(InMemoryArtifactStore())
    await models.apply(empty)
    assert table.get(MODEL) is None


async def test_the_follower_folds_the_topic_dead_letters_what_is_not_an_event_and_applies_once() -> None:
    """On the runtime (fake broker): everything up to the end is folded before anything is applied, each
    model's final route is applied once, a record that is not a lifecycle event goes to the scorer's DLQ
    with its headers and the fold goes on; after catching up, new events are applied as they come."""
    import asyncio

    from tests.fake_kafka import FakeBroker
    from tollgate_core.settings import ServiceSettings
    from tollgate_core.topics import Topics
    from tollgate_scorer import consumers
    from tollgate_scorer.follower import LifecycleFollower

    settings = ServiceSettings()
    topics = Topics(settings.topic_namespace)
    broker = FakeBroker()
    broker.create_topic(topics.models_lifecycle)
    broker.create_topic(topics.dlq("scorer"))
    for raw in (
        lifecycle_event("1", production="1"),
        b"{not json",
        lifecycle_event("2", production="1", staging="2", canary_weight=0.2, to_stage="staging"),
        lifecycle_event("2", production="2"),
    ):
        broker.append(topics.models_lifecycle, 0, (MODEL.encode(), raw, []))
    applied: list[DesiredRoute] = []

    async def apply(route: DesiredRoute) -> None:
        applied.append(route)

    follower = LifecycleFollower(
        spec=consumers.lifecycle(settings),
        settings=settings,
        apply=apply,
        consumer_factory=broker.consumer,
        producer_factory=broker.producer,
    )
    await follower.start()
    try:
        assert follower.caught_up
        assert applied == [DesiredRoute(MODEL, ref("2"), None, 0.0, False)]  # the final state, once
        assert (follower.events, follower.invalid) == (4, 1)
        [dead] = broker.records(topics.dlq("scorer"))
        headers = dict(dead.headers)
        assert dead.value == b"{not json"
        assert headers["tollgate-dlq-source-topic"] == topics.models_lifecycle.encode()
        assert headers["tollgate-dlq-source-offset"] == b"1"
        assert headers["tollgate-dlq-service"] == b"scorer"
        assert headers["tollgate-dlq-error-type"] == b"ValidationError"
        task = asyncio.create_task(follower.run())
        broker.append(topics.models_lifecycle, 0, (MODEL.encode(), lifecycle_event("1", production="1"), []))
        for _ in range(500):
            if len(applied) == 2:
                break
            await asyncio.sleep(0.01)
        assert applied[-1] == DesiredRoute(MODEL, ref("1"), None, 0.0, False)
    finally:
        await follower.stop()
    await asyncio.wait_for(task, 10)
