"""The registry's use cases: take in a candidate, promote, approve, reject, roll back, end canary periods,
and answer what is stored. Transport-free: the Kafka handler, the HTTP API and the canary loop only call in.

Every use case runs in one :class:`~tollgate_registry.ports.ModelTransaction` (the model's lock held): read
the model's versions, plan the changes with the pure state machine (``state.py``), then store the changes,
their transition rows and one ``models.lifecycle`` event per change together. So two API calls on one model
cannot race, and a crash leaves either all of a change (state and event) or none of it.

Candidates (``models.candidates``), in this order:

1. Redelivered event id → nothing happens (the event id is claimed in the same transaction).
2. A version already stored under the same (model, version) from another event → ignored and logged: a
   version's record never changes once written.
3. Model not in the catalog → stored as rejected (gate ``catalog``), ``rejected`` published.
4. ``offered`` is false (the trainer's parity check failed) → stored as rejected (gate ``parity``),
   ``rejected`` published. Its artifact is not read.
5. Artifact missing, its bytes not matching the digest, or its size not the declared one → stored as
   rejected (gate ``integrity``), ``refused`` published. The registry reads the bytes through the
   content-addressed store, which recomputes the sha256; it never loads the model.
6. Otherwise ``registered``, then the gates (``gates.py``): the first failing gate names the ``rejected``
   event's reason; if all pass, ``staged`` (or ``promoted`` for a model's first version, see ``state.py``).

Every lifecycle event says, besides its own version's change, what serves after it (``production_version``,
``staging_version`` with ``canary_weight`` / ``shadow``), so a follower can act on any single event.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from tollgate_core.artifacts import (
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    ArtifactStore,
)
from tollgate_core.lifecycle import (
    ApprovalRecord,
    CandidateEvent,
    CandidatePayload,
    GateResult,
    LifecycleEvent,
    LifecyclePayload,
    Stage,
    Transition,
)
from tollgate_core.models import ModelSpec, Rollout
from tollgate_registry import state, tiers
from tollgate_registry.gates import Baseline, check_gates, evaluate_gates, parity_gate, rejection_reason
from tollgate_registry.ports import NewVersion, Repository, VersionDetail, VersionRecord
from tollgate_registry.state import Change, IllegalTransition, VersionState

log = logging.getLogger(__name__)

PRODUCER = "registry"


class UnknownModel(LookupError):
    def __init__(self, model: str) -> None:
        super().__init__(f"unknown model {model!r}: not in the model catalog and no version registered")
        self.model = model


class UnknownVersion(LookupError):
    def __init__(self, model: str, version: str) -> None:
        super().__init__(f"model {model!r} has no version {version!r}")
        self.model = model
        self.version = version


class Outcome(StrEnum):
    """What became of a candidate event."""

    DUPLICATE_EVENT = "duplicate_event"
    DUPLICATE_VERSION = "duplicate_version"
    REFUSED = "refused"
    REJECTED = "rejected"
    STAGED = "staged"
    PROMOTED = "promoted"


@dataclass(frozen=True)
class Applied:
    """A change as it was stored and announced."""

    change: Change
    event: LifecycleEvent


@dataclass(frozen=True)
class ActionResult:
    model: str
    applied: list[Applied]
    production_version: str | None
    staging_version: str | None
    approvals: list[ApprovalRecord] = field(default_factory=list)
    """On an approval: the version's approvals so far (its risk tier may need more before it serves)."""
    approvals_required: int | None = None


class ReportMismatch(Exception):
    """The approver approved another gate report than the version's (HTTP 409)."""


@dataclass(frozen=True)
class ModelView:
    model: str
    spec: ModelSpec | None
    versions: list[VersionRecord]

    @property
    def states(self) -> dict[str, VersionState]:
        return {r.version: r.state for r in self.versions}

    def find(self, stage: Stage) -> VersionRecord | None:
        found = (
            state.production_of(self.states) if stage is Stage.PRODUCTION else state.staging_of(self.states)
        )
        return None if found is None else next(r for r in self.versions if r.version == found.version)

    @property
    def rollback_target(self) -> str | None:
        target = state.rollback_target(self.states)
        return target.version if target else None


Clock = Callable[[], datetime]
ChangeObserver = Callable[[str, Change], None]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ModelRegistry:
    def __init__(
        self,
        repository: Repository,
        catalog: Mapping[str, ModelSpec],
        store: ArtifactStore,
        *,
        lifecycle_schema: str,
        clock: Clock = _utcnow,
        on_change: ChangeObserver | None = None,
    ) -> None:
        for spec in catalog.values():
            check_gates(spec.model, spec.gates)
        self.repository = repository
        # Not a copy: a live registration (tollgate_core.registrations.LiveCatalog) updates it in place.
        self.catalog = catalog
        self.store = store
        self.lifecycle_schema = lifecycle_schema
        self.clock = clock
        self.on_change = on_change

    # ---- candidates -------------------------------------------------------------------------------

    async def verify_artifact(self, candidate: CandidatePayload) -> str | None:
        """None when the stored bytes match the candidate's digest and size, else why not."""
        digest = candidate.artifact.digest
        try:
            data = await asyncio.to_thread(self.store.get, digest)
        except ArtifactIntegrityError as exc:
            return (
                f"artifact integrity check failed: stored bytes hash to {exc.actual}, expected {exc.expected}"
            )
        except ArtifactNotFoundError:
            return f"artifact {digest} is not in the artifact store"
        except (ArtifactError, ValueError, OSError) as exc:
            return f"artifact {digest} could not be read: {exc}"
        if len(data) != candidate.artifact.size_bytes:
            declared = candidate.artifact.size_bytes
            return f"artifact {digest} has {len(data)} bytes, the candidate declares {declared}"
        return None

    async def on_candidate(self, event: CandidateEvent) -> Outcome:
        candidate = event.payload
        spec = self.catalog.get(candidate.model)
        refusal = await self.verify_artifact(candidate) if spec is not None and candidate.offered else None
        async with self.repository.model_transaction(candidate.model) as tx:
            if not await tx.claim_event(event.event_id, candidate.version):
                log.info("candidate event %s seen before: nothing to do", event.event_id)
                return Outcome.DUPLICATE_EVENT
            records = await tx.versions()
            if any(r.version == candidate.version for r in records):
                log.warning(
                    "model %s version %s is already registered; candidate event %s ignored",
                    candidate.model,
                    candidate.version,
                    event.event_id,
                )
                return Outcome.DUPLICATE_VERSION
            now = self.clock()
            states = {r.version: r.state for r in records}
            gates, changes, outcome = self._decide(candidate, spec, refusal, records, states, now)
            passed = all(g.passed for g in gates)
            await tx.insert_version(
                NewVersion(candidate=candidate, event_id=event.event_id, gates=gates, gates_passed=passed),
                now,
            )
            first = VersionState(version=candidate.version, stage=changes[0].to_stage, seq=len(records) + 1)
            new_record = VersionRecord.of_candidate(candidate, first, passed, now)
            applied = self._events(candidate.model, [*records, new_record], changes, now, gates)
            await tx.apply([(a.change, a.event) for a in applied], now)
        self._observe(candidate.model, changes)
        return outcome

    def _decide(
        self,
        candidate: CandidatePayload,
        spec: ModelSpec | None,
        refusal: str | None,
        records: Sequence[VersionRecord],
        states: Mapping[str, VersionState],
        now: datetime,
    ) -> tuple[list[GateResult], list[Change], Outcome]:
        version = candidate.version
        if spec is None:
            gate = GateResult(
                gate="catalog", passed=False, detail=f"model {candidate.model!r} is not in the model catalog"
            )
            return [gate], [state.plan_reject_on_arrival(version, rejection_reason([gate]))], Outcome.REJECTED
        if not candidate.offered:
            gate = parity_gate(candidate)
            reason = rejection_reason([gate]) + " (not offered by the trainer)"
            return [gate], [state.plan_reject_on_arrival(version, reason)], Outcome.REJECTED
        if refusal is not None:
            gate = GateResult(gate="integrity", passed=False, detail=refusal)
            return [gate], [state.plan_refuse(version, refusal)], Outcome.REFUSED
        integrity = GateResult(
            gate="integrity", passed=True, detail=f"sha256 verified ({candidate.artifact.size_bytes} bytes)"
        )
        production = state.production_of(states)
        by_version = {r.version: r for r in records}
        baseline = (
            None
            if production is None
            else Baseline(production.version, by_version[production.version].metrics)
        )
        recent = [
            Baseline(r.version, r.metrics)
            for r in sorted(records, key=lambda r: -r.state.seq)
            if r.gates_passed
        ]
        gates = [integrity, *evaluate_gates(candidate, spec.gates, baseline, recent)]
        register = state.plan_register(version)
        registered = state.apply(states, register)
        if not all(g.passed for g in gates):
            rejected = state.plan_gate_rejection(registered, version, rejection_reason(gates))
            return gates, [register, *rejected], Outcome.REJECTED
        accepted = state.plan_accept(
            registered, version, spec.rollout, now, needs_approval=tiers.needs_approval(spec)
        )
        outcome = Outcome.PROMOTED if accepted[0].to_stage is Stage.PRODUCTION else Outcome.STAGED
        return gates, [register, *accepted], outcome

    # ---- actions ----------------------------------------------------------------------------------

    async def promote(self, model: str, version: str, to: Stage, actor: str, reason: str) -> ActionResult:
        tiers.check_promotion(self.catalog.get(model), version, to)
        rollout = self.rollout(model)
        return await self._act(
            model, version, lambda s, now: state.plan_promote(s, version, to, rollout, actor, reason, now)
        )

    async def approve(
        self, model: str, version: str, actor: str, reason: str, report_digest: str | None = None
    ) -> ActionResult:
        """Record ``actor``'s approval of the version's gate report; once the model's risk tier has the
        approvals it needs, the staging version enters production. ``report_digest``, when given, must be
        the digest of the version's gate report (what the approver was shown)."""
        spec = self.catalog.get(model)
        detail = await self.version(model, version)
        digest = tiers.gate_report_digest(detail)
        if report_digest is not None and report_digest != digest:
            raise ReportMismatch(
                f"version {version}'s gate report has digest {digest}, not {report_digest}: "
                "review the current report before approving"
            )
        required = tiers.approvals_required(spec)
        async with self.repository.model_transaction(model) as tx:
            records = await tx.versions()
            states = {r.version: r.state for r in records}
            changes = state.plan_approve(states, version, actor, reason)  # refuses what is not staging
            prior = await tx.approvals(version)
            tiers.check_approval(spec, version, actor, detail.candidate.lineage.requested_by, prior)
            now = self.clock()
            approval = ApprovalRecord(by=actor, at=now, reason=reason, report_digest=digest)
            await tx.add_approval(version, approval)
            approvals = [*prior, approval]
            if len(approvals) < required:
                changes = state.plan_partial_approval(
                    states, version, actor, reason, len(approvals), required
                )
            applied = self._events(model, records, changes, now, [], approvals)
            if applied:
                await tx.apply([(a.change, a.event) for a in applied], now)
        self._observe(model, changes)
        return _result(model, states, changes, applied, approvals, required)

    async def reject(self, model: str, version: str, actor: str, reason: str) -> ActionResult:
        return await self._act(model, version, lambda s, _: state.plan_reject(s, version, actor, reason))

    async def rollback(self, model: str, actor: str, reason: str) -> ActionResult:
        return await self._act(model, None, lambda s, _: state.plan_rollback(s, actor, reason))

    async def promote_due_canaries(self) -> int:
        """Promote every staging version whose canary period is over; returns how many were promoted."""
        promoted = 0
        for model, version in await self.repository.due_canaries(self.clock()):
            rollout = self.rollout(model)

            def plan(
                s: Mapping[str, VersionState], now: datetime, v: str = version, r: Rollout = rollout
            ) -> list[Change]:
                return state.plan_canary_promotion(s, v, r, now)

            result = await self._act(model, version, plan)
            promoted += bool(result.applied)
        return promoted

    def rollout(self, model: str) -> Rollout:
        spec = self.catalog.get(model)
        return spec.rollout if spec is not None else Rollout()

    async def _act(
        self,
        model: str,
        version: str | None,
        plan: Callable[[Mapping[str, VersionState], datetime], list[Change]],
    ) -> ActionResult:
        async with self.repository.model_transaction(model) as tx:
            records = await tx.versions()
            if not records and model not in self.catalog:
                raise UnknownModel(model)
            states = {r.version: r.state for r in records}
            if version is not None and version not in states:
                raise UnknownVersion(model, version)
            now = self.clock()
            changes = plan(states, now)
            applied = self._events(model, records, changes, now, [])
            if applied:
                await tx.apply([(a.change, a.event) for a in applied], now)
        self._observe(model, changes)
        return _result(model, states, changes, applied)

    # ---- events -----------------------------------------------------------------------------------

    def _events(
        self,
        model: str,
        records: Sequence[VersionRecord],
        changes: Sequence[Change],
        now: datetime,
        new_version_gates: list[GateResult],
        approvals: Sequence[ApprovalRecord] = (),
    ) -> list[Applied]:
        """One lifecycle event per change, each saying what serves once it is applied; an approval's event
        carries every approval that let the version in."""
        rollout = self.rollout(model)
        by_version = {r.version: r for r in records}
        new_versions = {c.version for c in changes if c.from_stage is None}
        current = {r.version: r.state for r in records if r.version not in new_versions}
        applied = []
        for change in changes:
            current = state.apply(current, change)
            production, staging = state.production_of(current), state.staging_of(current)
            canary_weight, shadow = staging_traffic(rollout, staging is not None)
            record = by_version[change.version]
            payload = LifecyclePayload(
                model=model,
                version=change.version,
                transition=change.transition,
                from_stage=change.from_stage,
                to_stage=change.to_stage,
                reason=change.reason,
                actor=change.actor,
                artifact=record.artifact,
                contract=record.contract,
                task=record.task,
                gates=new_version_gates if change.version in new_versions else [],
                canary_weight=canary_weight,
                shadow=shadow,
                production_version=production.version if production else None,
                staging_version=staging.version if staging else None,
                approvals=list(approvals) if change.transition is Transition.APPROVED else [],
            )
            event = LifecycleEvent(
                event_id=uuid.uuid4(),
                event_type=change.transition.value,
                schema_=self.lifecycle_schema,
                occurred_at=now,
                producer=PRODUCER,
                payload=payload,
            )
            applied.append(Applied(change=change, event=event))
        return applied

    def _observe(self, model: str, changes: Sequence[Change]) -> None:
        for change in changes:
            log.info(
                "%s %s: %s (%s → %s) by %s: %s",
                model,
                change.version,
                change.transition.value,
                change.from_stage.value if change.from_stage else "new",
                change.to_stage.value,
                change.actor,
                change.reason,
            )
            if self.on_change is not None:
                self.on_change(model, change)

    # ---- queries ----------------------------------------------------------------------------------

    async def model_names(self) -> list[str]:
        return sorted(set(self.catalog) | set(await self.repository.model_names()))

    async def model(self, model: str) -> ModelView:
        records = await self.repository.versions(model)
        spec = self.catalog.get(model)
        if spec is None and not records:
            raise UnknownModel(model)
        return ModelView(model=model, spec=spec, versions=records)

    async def version(self, model: str, version: str) -> VersionDetail:
        detail = await self.repository.version_detail(model, version)
        if detail is None:
            await self.model(model)  # 404 for the model first, when it is the model that is unknown
            raise UnknownVersion(model, version)
        return detail


def staging_traffic(rollout: Rollout, has_staging: bool) -> tuple[float | None, bool]:
    """``(canary_weight, shadow)`` of a model's staging version: its share of traffic, or shadow mode;
    ``(None, False)`` when the model has no staging version."""
    if not has_staging:
        return None, False
    return (None, True) if rollout.shadow else (rollout.canary_weight, False)


def _replay(states: Mapping[str, VersionState], changes: Sequence[Change]) -> dict[str, VersionState]:
    after = dict(states)
    for change in changes:
        after = state.apply(after, change)
    return after


def _result(
    model: str,
    states: Mapping[str, VersionState],
    changes: Sequence[Change],
    applied: list[Applied],
    approvals: list[ApprovalRecord] | None = None,
    approvals_required: int | None = None,
) -> ActionResult:
    """What an action did, and which versions serve once its changes are applied to ``states``."""
    after = _replay(states, changes)
    production, staging = state.production_of(after), state.staging_of(after)
    return ActionResult(
        model=model,
        applied=applied,
        production_version=production.version if production else None,
        staging_version=staging.version if staging else None,
        approvals=approvals if approvals is not None else [],
        approvals_required=approvals_required,
    )


__all__ = [
    "ActionResult",
    "Applied",
    "IllegalTransition",
    "ModelRegistry",
    "ModelView",
    "Outcome",
    "ReportMismatch",
    "UnknownModel",
    "UnknownVersion",
    "staging_traffic",
]
