"""What the registry's core needs from storage, as small interfaces with plain records.

:class:`Repository` has one PostgreSQL implementation (``postgres.py``, what runs) and one in-memory twin
(``memory.py``, for fast unit tests of the core and the HTTP API). A :class:`ModelTransaction` holds one
model's lock: everything done through it — claiming the candidate event, storing a version, recording
transitions and the lifecycle events that announce them — commits together or not at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from tollgate_core.lifecycle import (
    ApprovalRecord,
    Artifact,
    CandidatePayload,
    GateResult,
    LifecycleEvent,
    Stage,
    Transition,
)
from tollgate_registry.state import Change, VersionState


@dataclass(frozen=True)
class VersionRecord:
    """A stored version without its bulky parts (reference profile, lineage): enough to list and publish."""

    model: str
    state: VersionState
    task: Literal["classification", "regression"]
    contract: str
    artifact: Artifact
    metrics: dict[str, float]
    gates_passed: bool
    registered_at: datetime
    stage_changed_at: datetime

    @classmethod
    def of_candidate(
        cls, candidate: CandidatePayload, state: VersionState, gates_passed: bool, at: datetime
    ) -> VersionRecord:
        """A new version's record: what its candidate says, registered (and in ``state``) since ``at``."""
        return cls(
            model=candidate.model,
            state=state,
            task=candidate.task,
            contract=candidate.lineage.contract,
            artifact=candidate.artifact,
            metrics=dict(candidate.metrics),
            gates_passed=gates_passed,
            registered_at=at,
            stage_changed_at=at,
        )

    @property
    def version(self) -> str:
        return self.state.version

    @property
    def stage(self) -> Stage:
        return self.state.stage


@dataclass(frozen=True)
class TransitionRecord:
    """One stored state change: who, when, why, from which stage to which."""

    id: int
    model: str
    version: str
    transition: Transition
    from_stage: Stage | None
    to_stage: Stage
    actor: str
    reason: str
    at: datetime
    event_id: uuid.UUID


@dataclass(frozen=True)
class VersionDetail:
    record: VersionRecord
    candidate: CandidatePayload
    gates: list[GateResult]
    candidate_event_id: uuid.UUID
    transitions: list[TransitionRecord] = field(default_factory=list)
    approvals: list[ApprovalRecord] = field(default_factory=list)


@dataclass(frozen=True)
class NewVersion:
    candidate: CandidatePayload
    event_id: uuid.UUID
    gates: list[GateResult]
    gates_passed: bool


class ModelTransaction(Protocol):
    """One model's versions under its lock (see :meth:`Repository.model_transaction`)."""

    async def claim_event(self, event_id: uuid.UUID, version: str) -> bool:
        """Record a candidate event id; False when it was recorded before (a redelivery)."""
        ...

    async def versions(self) -> list[VersionRecord]: ...

    async def insert_version(self, new: NewVersion, at: datetime) -> None:
        """Store a new version (stage: the ``to_stage`` of the first change applied to it)."""
        ...

    async def apply(self, changes: Sequence[tuple[Change, LifecycleEvent]], at: datetime) -> None:
        """Store each change (stage, transition row) and queue its lifecycle event, in the given order."""
        ...

    async def approvals(self, version: str) -> list[ApprovalRecord]:
        """The version's approvals, oldest first."""
        ...

    async def add_approval(self, version: str, approval: ApprovalRecord) -> None: ...


class Repository(Protocol):
    def model_transaction(self, model: str) -> AbstractAsyncContextManager[ModelTransaction]:
        """A transaction holding the model's lock, so two transitions of one model never interleave."""
        ...

    async def model_names(self) -> list[str]:
        """Models with at least one stored version."""
        ...

    async def versions(self, model: str) -> list[VersionRecord]:
        """The model's versions, oldest registration first."""
        ...

    async def version_detail(self, model: str, version: str) -> VersionDetail | None: ...

    async def due_canaries(self, now: datetime) -> list[tuple[str, str]]:
        """(model, version) of staging versions whose canary period ended by ``now``."""
        ...
