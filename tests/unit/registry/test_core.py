"""The registry's use cases over a repository and the in-memory artifact store: what is stored and which
lifecycle events are queued, for candidates and for operator actions.

Every test takes its world from the ``make_world`` fixture: here over the in-memory repository; the same tests
run over the PostgreSQL repository in ``tests/integration/test_registry_repository.py`` (one test, two backends).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

from tests.unit.registry.candidates import MODEL, candidate, candidate_event, spec
from tollgate_core.artifacts import InMemoryArtifactStore
from tollgate_core.lifecycle import LifecycleEvent, Stage
from tollgate_core.models import ModelSpec
from tollgate_registry.core import ModelRegistry, Outcome, UnknownModel, UnknownVersion
from tollgate_registry.memory import InMemoryRepository
from tollgate_registry.ports import Repository
from tollgate_registry.state import IllegalTransition


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


Published = Callable[[], Awaitable[list[LifecycleEvent]]]


class World:
    """The registry's core over ``repo``; ``published`` reads back every lifecycle event it queued, in order."""

    def __init__(self, repo: Repository, published: Published, *specs: ModelSpec) -> None:
        self.repo = repo
        self.published = published
        self.store = InMemoryArtifactStore()
        self.clock = Clock()
        self.core = ModelRegistry(
            self.repo,
            {s.model: s for s in specs or (spec(),)},
            self.store,
            lifecycle_schema="models.lifecycle.v1",
            clock=self.clock,
        )
        self.seen = 0

    async def offer(self, version: str, **kwargs: object) -> Outcome:
        return await self.core.on_candidate(candidate_event(candidate(version, store=self.store, **kwargs)))  # type: ignore[arg-type]

    async def new_events(self) -> list[LifecycleEvent]:
        published = await self.published()
        events = published[self.seen :]
        self.seen = len(published)
        return events

    async def moves(self) -> list[tuple[str, str, str]]:
        return [(e.payload.version, e.event_type, e.payload.to_stage.value) for e in await self.new_events()]

    async def stages(self, model: str = MODEL) -> dict[str, str]:
        return {r.version: r.stage.value for r in await self.repo.versions(model)}

    async def transition_count(self, model: str = MODEL) -> int:
        total = 0
        for record in await self.repo.versions(model):
            detail = await self.repo.version_detail(model, record.version)
            assert detail is not None
            total += len(detail.transitions)
        return total


MakeWorld = Callable[..., Awaitable[World]]


@pytest.fixture
def make_world() -> MakeWorld:
    async def make(*specs: ModelSpec) -> World:
        repo = InMemoryRepository()

        async def published() -> list[LifecycleEvent]:
            return list(repo.published)

        return World(repo, published, *specs)

    return make


async def test_first_candidate_is_registered_then_promoted_with_its_gates_on_the_events(
    make_world: MakeWorld,
) -> None:
    world = await make_world()
    assert await world.offer("1") is Outcome.PROMOTED
    events = await world.new_events()
    assert [(e.event_type, e.payload.from_stage, e.payload.to_stage) for e in events] == [
        ("registered", None, Stage.CANDIDATE),
        ("promoted", Stage.CANDIDATE, Stage.PRODUCTION),
    ]
    for e in events:
        assert e.schema_ == "models.lifecycle.v1" and e.producer == "registry"
        assert e.payload.artifact.digest == candidate("1").artifact.digest
        assert e.payload.contract == "credit-default.v1" and e.payload.task == "classification"
        assert [g.gate for g in e.payload.gates][:2] == ["integrity", "parity"]
    assert events[1].payload.production_version == "1" and events[1].payload.staging_version is None
    assert events[0].payload.production_version is None
    detail = await world.core.version(MODEL, "1")
    assert detail.record.gates_passed and all(g.passed for g in detail.gates)
    assert [t.transition.value for t in detail.transitions] == ["registered", "promoted"]
    assert [t.event_id for t in detail.transitions] == [e.event_id for e in events]


async def test_second_candidate_canaries_then_is_promoted_when_the_period_ends(make_world: MakeWorld) -> None:
    world = await make_world()
    await world.offer("1")
    await world.new_events()
    assert await world.offer("2", roc_auc=0.87) is Outcome.STAGED
    registered, staged = await world.new_events()
    assert staged.event_type == "staged" and staged.payload.canary_weight == 0.2 and not staged.payload.shadow
    assert (staged.payload.production_version, staged.payload.staging_version) == ("1", "2")
    assert registered.payload.canary_weight is None  # no staging version yet at that point
    world.clock.advance(29)
    assert await world.core.promote_due_canaries() == 0
    world.clock.advance(1)
    assert await world.core.promote_due_canaries() == 1
    promoted, archived = await world.new_events()
    assert (promoted.event_type, promoted.payload.version, promoted.payload.actor) == (
        "promoted",
        "2",
        "canary",
    )
    assert (archived.event_type, archived.payload.version, archived.payload.to_stage) == (
        "archived",
        "1",
        Stage.ARCHIVED,
    )
    assert promoted.payload.production_version == archived.payload.production_version == "2"
    assert await world.stages() == {"1": "archived", "2": "production"}
    assert await world.core.promote_due_canaries() == 0


async def test_a_worse_candidate_is_rejected_naming_the_failing_gate(make_world: MakeWorld) -> None:
    world = await make_world()
    await world.offer("1", roc_auc=0.86)
    await world.new_events()
    assert await world.offer("2", roc_auc=0.82) is Outcome.REJECTED
    _, rejected = await world.new_events()
    assert rejected.event_type == "rejected" and rejected.payload.to_stage is Stage.REJECTED
    assert rejected.payload.reason.startswith(
        "gate regression:roc_auc failed: roc_auc 0.8200 beyond limit 0.8400"
    )
    assert rejected.payload.production_version == "1"
    failing = [g.gate for g in rejected.payload.gates if not g.passed]
    assert failing == ["regression:roc_auc"]
    detail = await world.core.version(MODEL, "2")
    assert not detail.record.gates_passed and detail.record.stage is Stage.REJECTED


async def test_rejected_versions_do_not_count_for_slow_degradation_but_accepted_ones_do(
    make_world: MakeWorld,
) -> None:
    world = await make_world(spec(canary_seconds=0))
    for version, auc in (("1", 0.90), ("2", 0.885), ("3", 0.87)):
        await world.offer(version, roc_auc=auc)
        await world.core.promote_due_canaries()
    assert (
        await world.offer("4", roc_auc=0.855) is Outcome.REJECTED
    )  # within 0.02 of 0.87, but 0.045 below 0.90
    assert [e.payload.reason for e in await world.new_events()][-1].startswith(
        "gate degradation:roc_auc failed"
    )


async def test_tampered_missing_or_mis_sized_artifacts_are_refused_and_stored_as_rejected(
    make_world: MakeWorld,
) -> None:
    world = await make_world()
    tampered = candidate("1", store=world.store)
    world.store.blobs[tampered.artifact.digest] = b"evil bytes"
    assert await world.core.on_candidate(candidate_event(tampered)) is Outcome.REFUSED
    [refused] = await world.new_events()
    assert refused.event_type == "refused" and refused.payload.from_stage is None
    assert refused.payload.to_stage is Stage.REJECTED
    assert refused.payload.reason.startswith("artifact integrity check failed: stored bytes hash to ")
    assert [(g.gate, g.passed) for g in refused.payload.gates] == [("integrity", False)]
    assert await world.stages() == {"1": "rejected"}

    missing = candidate("2")  # never put in the store
    assert await world.core.on_candidate(candidate_event(missing)) is Outcome.REFUSED
    assert "is not in the artifact store" in (await world.new_events())[0].payload.reason
    assert await world.offer("3", size_bytes=3) is Outcome.REFUSED
    assert "the candidate declares 3" in (await world.new_events())[0].payload.reason
    # Nothing serves, so the next good version is still the first production version.
    assert await world.offer("4") is Outcome.PROMOTED


async def test_not_offered_and_unknown_models_are_rejected_on_arrival(make_world: MakeWorld) -> None:
    world = await make_world()
    assert await world.offer("1", offered=False) is Outcome.REJECTED
    [rejected] = await world.new_events()
    assert rejected.payload.from_stage is None
    assert rejected.payload.reason.startswith(
        "gate parity failed: max |p_onnx - p_sklearn| 0.2 exceeds 1e-05"
    )
    assert rejected.payload.reason.endswith("(not offered by the trainer)")
    assert await world.offer("1", model="no-such-model") is Outcome.REJECTED
    [unknown] = await world.new_events()
    assert unknown.payload.reason == "gate catalog failed: model 'no-such-model' is not in the model catalog"
    assert "no-such-model" in await world.core.model_names()


async def test_redelivery_and_a_second_event_for_the_same_version_change_nothing(
    make_world: MakeWorld,
) -> None:
    world = await make_world()
    event = candidate_event(candidate("1", store=world.store))
    assert await world.core.on_candidate(event) is Outcome.PROMOTED
    await world.new_events()
    assert await world.core.on_candidate(event) is Outcome.DUPLICATE_EVENT
    assert await world.offer("1", roc_auc=0.99) is Outcome.DUPLICATE_VERSION
    assert await world.new_events() == []
    assert (await world.core.version(MODEL, "1")).record.metrics["roc_auc"] == 0.86
    assert await world.transition_count() == 2


async def test_rollback_restores_the_previous_production_version_with_the_reason(
    make_world: MakeWorld,
) -> None:
    world = await make_world(spec(canary_seconds=0))
    await world.offer("1")
    await world.offer("2", roc_auc=0.87)
    await world.core.promote_due_canaries()
    await world.new_events()
    result = await world.core.rollback(MODEL, "carol", "error rate up after release")
    assert (result.production_version, result.staging_version) == ("1", None)
    assert [(a.change.version, a.change.transition.value) for a in result.applied] == [
        ("1", "rolled_back"),
        ("2", "archived"),
    ]
    restored, archived = await world.new_events()
    assert restored.payload.reason == "rollback from version 2: error rate up after release"
    assert restored.payload.actor == "carol" and restored.payload.production_version == "1"
    assert archived.payload.reason == "rolled back to version 1: error rate up after release"
    assert await world.stages() == {"1": "production", "2": "archived"}
    with pytest.raises(IllegalTransition, match="no previous production version"):
        await world.core.rollback(MODEL, "carol", "again")
    assert await world.new_events() == []


async def test_approval_records_who_and_why_and_only_one_of_two_racing_approvals_wins(
    make_world: MakeWorld,
) -> None:
    world = await make_world(spec(mode="approval"))
    await world.offer("1")
    assert await world.offer("2", roc_auc=0.87) is Outcome.STAGED
    world.clock.advance(3600)
    assert await world.core.promote_due_canaries() == 0  # approval mode: no automatic promotion
    await world.new_events()
    results = await asyncio.gather(
        world.core.approve(MODEL, "2", "dana", "reviewed the canary report"),
        world.core.approve(MODEL, "2", "erin", "me too"),
        return_exceptions=True,
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, IllegalTransition)]
    assert len(ok) == 1 and len(refused) == 1
    assert "only a staging version can be approved; this one is production" in str(refused[0])
    approved, archived = await world.new_events()
    assert (approved.event_type, approved.payload.actor, approved.payload.reason) == (
        "approved",
        "dana",
        "reviewed the canary report",
    )
    assert archived.payload.version == "1"


async def test_shadow_rollout_is_announced_as_shadow_without_a_weight(make_world: MakeWorld) -> None:
    world = await make_world(spec(shadow=True))
    await world.offer("1")
    await world.offer("2")
    staged = (await world.new_events())[-1]
    assert staged.payload.shadow and staged.payload.canary_weight is None
    assert "in shadow" in staged.payload.reason


async def test_unknown_models_and_versions_and_refused_actions_leave_everything_unchanged(
    make_world: MakeWorld,
) -> None:
    world = await make_world()
    await world.offer("1")
    await world.new_events()
    with pytest.raises(UnknownModel):
        await world.core.rollback("nope", "x", "y")
    with pytest.raises(UnknownVersion):
        await world.core.reject(MODEL, "9", "x", "y")
    with pytest.raises(UnknownVersion):
        await world.core.version(MODEL, "9")
    with pytest.raises(UnknownModel):
        await world.core.version("nope", "1")
    before = (await world.stages(), await world.transition_count())
    with pytest.raises(IllegalTransition):
        await world.core.reject(MODEL, "1", "x", "y")
    assert (await world.stages(), await world.transition_count()) == before and await world.new_events() == []


async def test_manual_promotion_to_staging_then_production_in_canary_mode(make_world: MakeWorld) -> None:
    world = await make_world()
    await world.offer("1")
    await world.offer("2")
    await world.core.promote(MODEL, "2", Stage.PRODUCTION, "ops", "ship it early")
    await world.new_events()
    result = await world.core.promote(MODEL, "1", Stage.STAGING, "ops", "compare again")
    assert (result.production_version, result.staging_version) == ("2", "1")
    [staged] = await world.new_events()
    assert staged.payload.from_stage is Stage.ARCHIVED and staged.payload.canary_weight == 0.2
    await world.core.reject(MODEL, "1", "ops", "still worse")
    assert await world.stages() == {"1": "rejected", "2": "production"}
