"""The version lifecycle as a pure state machine: which moves are allowed and what each action changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tollgate_core.lifecycle import Stage, Transition
from tollgate_core.models import Rollout
from tollgate_registry import state
from tollgate_registry.state import Change, IllegalTransition, VersionState

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CANARY = Rollout(mode="canary", canary_weight=0.2, canary_seconds=30)
APPROVAL = Rollout(mode="approval")


def run(versions: dict[str, VersionState], changes: list[Change]) -> dict[str, VersionState]:
    for change in changes:
        versions = state.apply(versions, change)
    return versions


def register(versions: dict[str, VersionState], version: str) -> dict[str, VersionState]:
    return run(versions, [state.plan_register(version)])


def accept(
    versions: dict[str, VersionState], version: str, rollout: Rollout = CANARY
) -> tuple[dict[str, VersionState], list[Change]]:
    versions = register(versions, version)
    changes = state.plan_accept(versions, version, rollout, NOW)
    return run(versions, changes), changes


def moves(changes: list[Change]) -> list[tuple[str, str, str | None, str]]:
    return [
        (c.version, c.transition.value, c.from_stage.value if c.from_stage else None, c.to_stage.value)
        for c in changes
    ]


def stages(versions: dict[str, VersionState]) -> dict[str, str]:
    return {v: s.stage.value for v, s in versions.items()}


def test_the_first_passing_version_goes_straight_to_production() -> None:
    versions, changes = accept({}, "1")
    assert moves(changes) == [("1", "promoted", "candidate", "production")]
    assert "first version" in changes[0].reason
    assert state.production_of(versions).version == "1"  # type: ignore[union-attr]
    # Also in approval mode: nothing would serve otherwise.
    _, changes = accept({}, "1", APPROVAL)
    assert moves(changes) == [("1", "promoted", "candidate", "production")]


def test_a_later_passing_version_is_staged_with_a_canary_deadline_superseding_the_old_staging() -> None:
    versions, _ = accept({}, "1")
    versions, changes = accept(versions, "2")
    assert moves(changes) == [("2", "staged", "candidate", "staging")]
    assert changes[0].canary_until == NOW + timedelta(seconds=30)
    assert "20% of traffic" in changes[0].reason
    versions, changes = accept(versions, "3")
    assert moves(changes) == [
        ("2", "archived", "staging", "archived"),
        ("3", "staged", "candidate", "staging"),
    ]
    assert stages(versions) == {"1": "production", "2": "archived", "3": "staging"}


def test_approval_mode_stages_without_deadline_and_refuses_manual_production_promotion() -> None:
    versions, _ = accept({}, "1", APPROVAL)
    versions, changes = accept(versions, "2", APPROVAL)
    assert changes[-1].canary_until is None and "production on approval" in changes[-1].reason
    with pytest.raises(
        IllegalTransition,
        match="version 2 cannot go from staging to production: this model's rollout mode is approval",
    ):
        state.plan_promote(versions, "2", Stage.PRODUCTION, APPROVAL, "ops", "why", NOW)
    changes = state.plan_approve(versions, "2", "alice", "looks good")
    assert moves(changes) == [
        ("2", "approved", "staging", "production"),
        ("1", "archived", "production", "archived"),
    ]
    assert changes[0].actor == "alice" and changes[0].reason == "looks good"


def test_canary_promotion_happens_only_when_due_and_only_once() -> None:
    versions, _ = accept({}, "1")
    versions, _ = accept(versions, "2")
    assert state.plan_canary_promotion(versions, "2", CANARY, NOW + timedelta(seconds=29)) == []
    changes = state.plan_canary_promotion(versions, "2", CANARY, NOW + timedelta(seconds=30))
    assert moves(changes) == [
        ("2", "promoted", "staging", "production"),
        ("1", "archived", "production", "archived"),
    ]
    assert changes[0].actor == "canary"
    assert state.plan_canary_promotion(versions, "2", APPROVAL, NOW + timedelta(hours=1)) == []
    versions = run(versions, changes)
    assert state.plan_canary_promotion(versions, "2", CANARY, NOW + timedelta(hours=1)) == []


def test_rollback_walks_back_through_the_production_history() -> None:
    versions: dict[str, VersionState] = {}
    for v in ("1", "2", "3"):
        versions = register(versions, v)
        versions = run(versions, state.plan_promote(versions, v, Stage.PRODUCTION, CANARY, "ops", "go", NOW))
    assert stages(versions) == {"1": "archived", "2": "archived", "3": "production"}
    changes = state.plan_rollback(versions, "bob", "latency")
    assert moves(changes) == [
        ("2", "rolled_back", "archived", "production"),
        ("3", "archived", "production", "archived"),
    ]
    assert changes[0].reason == "rollback from version 3: latency"
    versions = run(versions, changes)
    versions = run(versions, state.plan_rollback(versions, "bob", "still bad"))
    assert stages(versions) == {"1": "production", "2": "archived", "3": "archived"}
    with pytest.raises(IllegalTransition, match="no previous production version to roll back to"):
        state.plan_rollback(versions, "bob", "again")
    # A version that serves again becomes a rollback target again.
    versions = run(versions, state.plan_promote(versions, "3", Stage.PRODUCTION, CANARY, "ops", "fixed", NOW))
    assert state.rollback_target(versions).version == "1"  # type: ignore[union-attr]


def test_rollback_without_production() -> None:
    with pytest.raises(IllegalTransition, match="has no production version"):
        state.plan_rollback({}, "bob", "why")


def test_rollback_leaves_a_staging_version_alone() -> None:
    versions, _ = accept({}, "1")
    versions = register(versions, "2")
    versions = run(versions, state.plan_promote(versions, "2", Stage.PRODUCTION, CANARY, "ops", "go", NOW))
    versions, _ = accept(versions, "3")
    versions = run(versions, state.plan_rollback(versions, "bob", "bad"))
    assert stages(versions) == {"1": "production", "2": "archived", "3": "staging"}


@pytest.mark.parametrize(
    ("stage", "action", "message"),
    [
        (Stage.REJECTED, "promote-production", "rejected versions are final"),
        (Stage.REJECTED, "promote-staging", "rejected versions are final"),
        (Stage.PRODUCTION, "promote-production", "it is already in production"),
        (Stage.PRODUCTION, "promote-staging", "it serves in production"),
        (Stage.PRODUCTION, "reject", "replaced by a rollback or a promotion"),
        (Stage.ARCHIVED, "reject", "only candidate and staging versions can be rejected"),
        (Stage.ARCHIVED, "approve", "only a staging version can be approved; this one is archived"),
        (Stage.CANDIDATE, "approve", "only a staging version can be approved; this one is candidate"),
    ],
)
def test_illegal_moves_say_from_where_to_where_and_why(stage: Stage, action: str, message: str) -> None:
    versions = {
        "7": VersionState(version="7", stage=stage, production_rank=1 if stage is Stage.PRODUCTION else None)
    }
    with pytest.raises(IllegalTransition) as caught:
        if action.startswith("promote"):
            to = Stage.PRODUCTION if action.endswith("production") else Stage.STAGING
            state.plan_promote(versions, "7", to, CANARY, "ops", "why", NOW)
        elif action == "reject":
            state.plan_reject(versions, "7", "ops", "why")
        else:
            state.plan_approve(versions, "7", "ops", "why")
    assert f"version 7 cannot go from {stage.value} to " in str(caught.value)
    assert message in str(caught.value)


def test_manual_moves_that_are_allowed() -> None:
    versions, _ = accept({}, "1")
    versions, _ = accept(versions, "2")
    # Canary an archived version again, superseding the current staging one.
    versions = run(versions, state.plan_promote(versions, "2", Stage.PRODUCTION, CANARY, "ops", "early", NOW))
    changes = state.plan_promote(versions, "1", Stage.STAGING, CANARY, "ops", "compare again", NOW)
    assert moves(changes) == [("1", "staged", "archived", "staging")]
    versions = run(versions, changes)
    changes = state.plan_reject(versions, "1", "ops", "worse in canary")
    assert moves(changes) == [("1", "rejected", "staging", "rejected")]


def test_the_allowed_table_matches_the_plans() -> None:
    assert state.ALLOWED[Stage.REJECTED] == frozenset()
    assert Stage.PRODUCTION not in state.ALLOWED[None]
    for origin, targets in state.ALLOWED.items():
        assert origin not in targets


def test_refusals_and_arrival_rejections_are_new_versions_going_to_rejected() -> None:
    assert moves([state.plan_refuse("9", "digest mismatch")]) == [("9", "refused", None, "rejected")]
    assert moves([state.plan_reject_on_arrival("9", "parity")]) == [("9", "rejected", None, "rejected")]
    assert state.plan_register("9").transition is Transition.REGISTERED
