"""The lifecycle of a model version as a pure state machine: given the stages of a model's versions, what
does a registration, promotion, approval, rejection, rollback or canary expiry change? Each ``plan_*``
function returns the :class:`Change` list (in publication order) or raises :class:`IllegalTransition`; the
caller stores the changes and publishes one lifecycle event per change, in one transaction.

Allowed moves (:data:`ALLOWED`)::

    (new)      → candidate    registered   artifact verified, gates about to be evaluated
    (new)      → rejected     refused      artifact missing or its bytes do not match the digest
                              rejected     not offered (parity failed), or model not in the catalog
    candidate  → staging      staged       gates passed and a production version exists
    candidate  → production   promoted     gates passed and there is no production version yet
    candidate  → rejected     rejected     a gate failed, or an operator rejected it
    staging    → production   promoted     the canary period passed (actor "canary"), or a manual promotion
                              approved     an approval (who, when and why are recorded)
    staging    → rejected     rejected     an operator rejected it
    staging    → archived     archived     superseded by a newer staging version
    production → archived     archived     superseded by a new production version, or rolled back from
    archived   → production   rolled_back  restored by a rollback
                              promoted     manual promotion of an older version (canary mode only)
    archived   → staging      staged       manual: canary an older version again
    rejected is final: a rejected version never serves; train a new one.

Decisions:

* At most one production and one staging version per model. A new staging version supersedes the old one
  (archived first, so no event shows two staging versions).
* The first version that passes its gates goes straight to production, whatever the rollout mode: a model
  with no production version has nothing to canary against and nothing would serve otherwise. Unless its
  risk tier needs approvals (medium, high): then it waits in staging for them like any later version.
* An approval that leaves the version short of the approvals its tier needs changes no stage; it is
  recorded and published alone, as an ``approved`` event from staging to staging
  (:func:`plan_partial_approval`).
* Rollout mode ``approval``: only :func:`plan_approve` (or a rollback) moves a version into production;
  a manual ``promote`` to production is refused with the reason. Mode ``canary``: the canary period
  ends with an automatic promotion (:func:`plan_canary_promotion`); an approval or a manual promotion
  ends it early.
* When a version enters production, the event saying so is published before the event archiving the one
  it replaces, so a follower of the topic never sees a model without a production version.
* Rollback target: the archived version that entered production most recently (``production_rank``) and
  has not itself been rolled back from. Rolling back twice therefore walks back through the production
  history (v3 → v2 → v1) instead of bouncing between two versions. A staging version is left as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from tollgate_core.lifecycle import Stage, Transition
from tollgate_core.models import Rollout

REGISTRY_ACTOR = "registry"
CANARY_ACTOR = "canary"

ALLOWED: Mapping[Stage | None, frozenset[Stage]] = {
    None: frozenset({Stage.CANDIDATE, Stage.REJECTED}),
    Stage.CANDIDATE: frozenset({Stage.STAGING, Stage.PRODUCTION, Stage.REJECTED}),
    Stage.STAGING: frozenset({Stage.PRODUCTION, Stage.REJECTED, Stage.ARCHIVED}),
    Stage.PRODUCTION: frozenset({Stage.ARCHIVED}),
    Stage.ARCHIVED: frozenset({Stage.PRODUCTION, Stage.STAGING}),
    Stage.REJECTED: frozenset(),
}


@dataclass(frozen=True)
class VersionState:
    """What the state machine needs to know about one version."""

    version: str
    stage: Stage
    seq: int = 0
    """Registration order within the model."""
    production_rank: int | None = None
    """Order in which versions last entered production (higher = more recent)."""
    rolled_back: bool = False
    """Rolled back from: not a rollback target until it serves again."""
    canary_until: datetime | None = None
    """When a staging version in canary mode is due for promotion."""


@dataclass(frozen=True)
class Change:
    """One state change of one version: stored as a transition and published as one lifecycle event."""

    version: str
    transition: Transition
    from_stage: Stage | None
    to_stage: Stage
    reason: str
    actor: str
    production_rank: int | None = None
    canary_until: datetime | None = None
    rolled_back: bool = False


Versions = Mapping[str, VersionState]


class IllegalTransition(Exception):
    """The requested change is not allowed from the version's current stage (HTTP 409)."""

    def __init__(self, version: str, from_stage: Stage | None, to_stage: Stage | None, why: str) -> None:
        origin = from_stage.value if from_stage else "(new)"
        target = to_stage.value if to_stage else "(any stage)"
        super().__init__(f"version {version} cannot go from {origin} to {target}: {why}")
        self.version = version
        self.from_stage = from_stage
        self.to_stage = to_stage
        self.why = why


def _change(
    state: VersionState | None,
    version: str,
    to: Stage,
    transition: Transition,
    reason: str,
    actor: str,
    *,
    production_rank: int | None = None,
    canary_until: datetime | None = None,
    rolled_back: bool = False,
) -> Change:
    origin = state.stage if state else None
    if to not in ALLOWED[origin]:
        if origin is Stage.REJECTED:
            why = "rejected versions are final; train a new version"
        else:
            allowed = ", ".join(sorted(s.value for s in ALLOWED[origin])) or "nothing"
            why = f"{origin.value if origin else 'a new version'} may only move to {allowed}"
        raise IllegalTransition(version, origin, to, why)
    return Change(
        version=version,
        transition=transition,
        from_stage=origin,
        to_stage=to,
        reason=reason,
        actor=actor,
        production_rank=production_rank,
        canary_until=canary_until,
        rolled_back=rolled_back,
    )


def advance(before: VersionState, change: Change) -> VersionState:
    """One version's state after ``change``: stage, production rank, rollback mark and canary deadline."""
    return replace(
        before,
        stage=change.to_stage,
        production_rank=change.production_rank
        if change.production_rank is not None
        else before.production_rank,
        rolled_back=change.rolled_back or (before.rolled_back and change.to_stage is not Stage.PRODUCTION),
        canary_until=change.canary_until if change.to_stage is Stage.STAGING else None,
    )


def apply(versions: Versions, change: Change) -> dict[str, VersionState]:
    """The versions after ``change`` (used to say, per event, what serves after it)."""
    after = dict(versions)
    before = after.get(change.version) or VersionState(
        version=change.version, stage=change.to_stage, seq=max((v.seq for v in after.values()), default=0) + 1
    )
    after[change.version] = advance(before, change)
    return after


def production_of(versions: Versions) -> VersionState | None:
    live = [v for v in versions.values() if v.stage is Stage.PRODUCTION]
    return max(live, key=lambda v: v.production_rank or 0, default=None)


def staging_of(versions: Versions) -> VersionState | None:
    return next((v for v in versions.values() if v.stage is Stage.STAGING), None)


def rollback_target(versions: Versions) -> VersionState | None:
    candidates = [
        v
        for v in versions.values()
        if v.stage is Stage.ARCHIVED and v.production_rank is not None and not v.rolled_back
    ]
    return max(candidates, key=lambda v: v.production_rank or 0, default=None)


def _next_rank(versions: Versions) -> int:
    return max((v.production_rank or 0 for v in versions.values()), default=0) + 1


def _get(versions: Versions, version: str) -> VersionState:
    try:
        return versions[version]
    except KeyError:
        raise LookupError(version) from None


def _superseded(current: VersionState | None, state: VersionState, reason: str, actor: str) -> list[Change]:
    """The archiving of ``current``, the stage's holder, when ``state`` takes its place (nothing if none)."""
    if current is None or current.version == state.version:
        return []
    return [_change(current, current.version, Stage.ARCHIVED, Transition.ARCHIVED, reason, actor)]


def _enter_production(
    versions: Versions, state: VersionState, transition: Transition, reason: str, actor: str
) -> list[Change]:
    """``state`` into production, then its predecessor out (superseded)."""
    changes = [
        _change(
            state,
            state.version,
            Stage.PRODUCTION,
            transition,
            reason,
            actor,
            production_rank=_next_rank(versions),
        )
    ]
    changes += _superseded(
        production_of(versions), state, f"superseded by version {state.version} ({transition.value})", actor
    )
    return changes


def _enter_staging(
    versions: Versions, state: VersionState, rollout: Rollout, reason: str, actor: str, now: datetime
) -> list[Change]:
    """The current staging version out (superseded), then ``state`` into staging."""
    changes = _superseded(
        staging_of(versions), state, f"superseded by staging version {state.version}", actor
    )
    due = now + timedelta(seconds=rollout.canary_seconds) if rollout.mode == "canary" else None
    changes.append(
        _change(state, state.version, Stage.STAGING, Transition.STAGED, reason, actor, canary_until=due)
    )
    return changes


def plan_register(version: str) -> Change:
    return _change(
        None,
        version,
        Stage.CANDIDATE,
        Transition.REGISTERED,
        "artifact verified; evaluating gates",
        REGISTRY_ACTOR,
    )


def plan_refuse(version: str, reason: str) -> Change:
    return _change(None, version, Stage.REJECTED, Transition.REFUSED, reason, REGISTRY_ACTOR)


def plan_reject_on_arrival(version: str, reason: str) -> Change:
    return _change(None, version, Stage.REJECTED, Transition.REJECTED, reason, REGISTRY_ACTOR)


def plan_gate_rejection(versions: Versions, version: str, reason: str) -> list[Change]:
    return [
        _change(_get(versions, version), version, Stage.REJECTED, Transition.REJECTED, reason, REGISTRY_ACTOR)
    ]


def plan_accept(
    versions: Versions, version: str, rollout: Rollout, now: datetime, *, needs_approval: bool = False
) -> list[Change]:
    """A registered candidate passed its gates: production if nothing serves yet (and its risk tier needs
    no approval), otherwise staging."""
    state = _get(versions, version)
    if production_of(versions) is None and needs_approval:
        return _enter_staging(
            versions,
            state,
            rollout,
            "gates passed; first version of the model, staged: its risk tier needs approval before it serves",
            REGISTRY_ACTOR,
            now,
        )
    if production_of(versions) is None:
        return _enter_production(
            versions,
            state,
            Transition.PROMOTED,
            "gates passed; first version of the model (no production version to canary against)",
            REGISTRY_ACTOR,
        )
    how = "in shadow" if rollout.shadow else f"as canary with {rollout.canary_weight:.0%} of traffic"
    if rollout.mode == "canary":
        then = f"production after {rollout.canary_seconds:g}s"
    else:
        then = "production on approval"
    return _enter_staging(
        versions, state, rollout, f"gates passed; staged {how}, {then}", REGISTRY_ACTOR, now
    )


def plan_promote(
    versions: Versions, version: str, to: Stage, rollout: Rollout, actor: str, reason: str, now: datetime
) -> list[Change]:
    """A manual promotion to staging or production."""
    state = _get(versions, version)
    if to not in (Stage.STAGING, Stage.PRODUCTION):
        raise IllegalTransition(version, state.stage, to, "promotion goes to staging or production")
    if state.stage is to:
        raise IllegalTransition(version, state.stage, to, f"it is already in {to.value}")
    if to is Stage.STAGING:
        if state.stage is Stage.PRODUCTION:
            raise IllegalTransition(
                version, state.stage, to, "it serves in production; promote another version or roll back"
            )
        return _enter_staging(versions, state, rollout, reason, actor, now)
    if rollout.mode == "approval":
        raise IllegalTransition(
            version,
            state.stage,
            to,
            "this model's rollout mode is approval: promote it to staging, then approve it "
            "(POST .../approve with who and why)",
        )
    return _enter_production(versions, state, Transition.PROMOTED, reason, actor)


def _approvable(versions: Versions, version: str) -> VersionState:
    """The version an approval is for; only a staging version can be approved."""
    state = _get(versions, version)
    if state.stage is not Stage.STAGING:
        raise IllegalTransition(
            version,
            state.stage,
            Stage.PRODUCTION,
            f"only a staging version can be approved; this one is {state.stage.value}",
        )
    return state


def plan_approve(versions: Versions, version: str, actor: str, reason: str) -> list[Change]:
    """An approval: the staging version into production, with who and why recorded."""
    state = _approvable(versions, version)
    return _enter_production(versions, state, Transition.APPROVED, reason, actor)


def plan_partial_approval(
    versions: Versions, version: str, actor: str, reason: str, given: int, required: int
) -> list[Change]:
    """An approval that is not the last one the version's risk tier needs: recorded and published alone,
    the version stays in staging (who approved is the event's actor, why its reason)."""
    state = _approvable(versions, version)
    return [
        Change(
            version=version,
            transition=Transition.APPROVED,
            from_stage=Stage.STAGING,
            to_stage=Stage.STAGING,
            reason=f"approval {given} of {required}, production after {required}: {reason}",
            actor=actor,
            canary_until=state.canary_until,
        )
    ]


def plan_reject(versions: Versions, version: str, actor: str, reason: str) -> list[Change]:
    """A manual rejection of a candidate or staging version (production is left by rollback instead)."""
    state = _get(versions, version)
    if state.stage is Stage.PRODUCTION:
        raise IllegalTransition(
            version,
            state.stage,
            Stage.REJECTED,
            "a production version is replaced by a rollback or a promotion, not rejected",
        )
    if state.stage not in (Stage.CANDIDATE, Stage.STAGING):
        raise IllegalTransition(
            version, state.stage, Stage.REJECTED, "only candidate and staging versions can be rejected"
        )
    return [_change(state, version, Stage.REJECTED, Transition.REJECTED, reason, actor)]


def plan_rollback(versions: Versions, actor: str, reason: str) -> list[Change]:
    """Production back to the previous production version; the current one is archived as rolled back."""
    current = production_of(versions)
    if current is None:
        raise IllegalTransition("(none)", None, Stage.PRODUCTION, "the model has no production version")
    target = rollback_target(versions)
    if target is None:
        raise IllegalTransition(
            current.version,
            Stage.PRODUCTION,
            Stage.ARCHIVED,
            "there is no previous production version to roll back to",
        )
    return [
        _change(
            target,
            target.version,
            Stage.PRODUCTION,
            Transition.ROLLED_BACK,
            f"rollback from version {current.version}: {reason}",
            actor,
            production_rank=_next_rank(versions),
        ),
        _change(
            current,
            current.version,
            Stage.ARCHIVED,
            Transition.ARCHIVED,
            f"rolled back to version {target.version}: {reason}",
            actor,
            rolled_back=True,
        ),
    ]


def plan_canary_promotion(versions: Versions, version: str, rollout: Rollout, now: datetime) -> list[Change]:
    """Promote a staging version whose canary period is over; nothing if it is no longer due (it was
    rejected, superseded or promoted meanwhile), so running this twice is harmless. The model's current
    rollout decides: if its mode became ``approval`` meanwhile, the version waits for an approval."""
    state = versions.get(version)
    if (
        rollout.mode != "canary"
        or state is None
        or state.stage is not Stage.STAGING
        or state.canary_until is None
        or state.canary_until > now
    ):
        return []
    return _enter_production(
        versions,
        state,
        Transition.PROMOTED,
        f"canary period of {rollout.canary_seconds:g}s passed without rejection",
        CANARY_ACTOR,
    )
