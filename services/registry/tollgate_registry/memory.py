"""In-memory twin of the PostgreSQL repository, for unit tests of the core and the HTTP API.

Same contract: a model transaction holds the model's lock and works on a private copy of the model's
versions, swapped in only when the block ends without an exception (so a refused transition changes
nothing). ``published`` lists the lifecycle events in the order the outbox would publish them.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime

from tollgate_core.lifecycle import ApprovalRecord, GateResult, LifecycleEvent, Stage
from tollgate_registry.ports import NewVersion, TransitionRecord, VersionDetail, VersionRecord
from tollgate_registry.state import Change, VersionState, advance


@dataclass
class _Stored:
    record: VersionRecord
    new: NewVersion


class _Transaction:
    def __init__(self, repo: InMemoryRepository, model: str) -> None:
        self.repo = repo
        self.model = model
        # Copies: a transaction that fails must leave the repository's rows untouched.
        self.rows: dict[str, _Stored] = {v: _Stored(s.record, s.new) for v, s in repo.rows[model].items()}
        self.claims: dict[uuid.UUID, tuple[str, str]] = {}
        self.transitions: list[TransitionRecord] = []
        self.events: list[LifecycleEvent] = []
        self.new_approvals: list[tuple[str, ApprovalRecord]] = []

    async def approvals(self, version: str) -> list[ApprovalRecord]:
        stored = self.repo.approvals.get((self.model, version), [])
        return [*stored, *(a for v, a in self.new_approvals if v == version)]

    async def add_approval(self, version: str, approval: ApprovalRecord) -> None:
        if any(a.by == approval.by for a in await self.approvals(version)):
            raise AssertionError(f"{approval.by} approved {self.model} {version} twice")  # the primary key
        self.new_approvals.append((version, approval))

    async def claim_event(self, event_id: uuid.UUID, version: str) -> bool:
        if event_id in self.repo.claims or event_id in self.claims:
            return False
        self.claims[event_id] = (self.model, version)
        return True

    async def versions(self) -> list[VersionRecord]:
        return sorted((s.record for s in self.rows.values()), key=lambda r: r.state.seq)

    async def insert_version(self, new: NewVersion, at: datetime) -> None:
        c = new.candidate
        state = VersionState(version=c.version, stage=Stage.CANDIDATE, seq=next(self.repo.seq))
        self.rows[c.version] = _Stored(VersionRecord.of_candidate(c, state, new.gates_passed, at), new)

    async def apply(self, changes: Sequence[tuple[Change, LifecycleEvent]], at: datetime) -> None:
        for change, event in changes:
            stored = self.rows[change.version]
            stored.record = replace(
                stored.record, state=advance(stored.record.state, change), stage_changed_at=at
            )
            self.transitions.append(
                TransitionRecord(
                    id=next(self.repo.transition_ids),
                    model=self.model,
                    version=change.version,
                    transition=change.transition,
                    from_stage=change.from_stage,
                    to_stage=change.to_stage,
                    actor=change.actor,
                    reason=change.reason,
                    at=at,
                    event_id=event.event_id,
                )
            )
            self.events.append(event)
        self._check_invariants()

    def _check_invariants(self) -> None:
        """What the database's unique indexes enforce: one production and one staging version per model."""
        for stage in (Stage.PRODUCTION, Stage.STAGING):
            holders = [v for v, s in self.rows.items() if s.record.stage is stage]
            if len(holders) > 1:
                raise AssertionError(f"{self.model}: several {stage.value} versions {holders}")

    def commit(self) -> None:
        self.repo.rows[self.model] = self.rows
        self.repo.claims.update(self.claims)
        self.repo.transitions.extend(self.transitions)
        self.repo.published.extend(self.events)
        for version, approval in self.new_approvals:
            self.repo.approvals.setdefault((self.model, version), []).append(approval)


class InMemoryRepository:
    def __init__(self) -> None:
        self.rows: defaultdict[str, dict[str, _Stored]] = defaultdict(dict)
        self.claims: dict[uuid.UUID, tuple[str, str]] = {}
        self.transitions: list[TransitionRecord] = []
        self.published: list[LifecycleEvent] = []
        self.approvals: dict[tuple[str, str], list[ApprovalRecord]] = {}
        self.seq = itertools.count(1)
        self.transition_ids = itertools.count(1)
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    @asynccontextmanager
    async def model_transaction(self, model: str) -> AsyncIterator[_Transaction]:
        async with self._locks[model]:
            tx = _Transaction(self, model)
            yield tx
            tx.commit()

    async def model_names(self) -> list[str]:
        return sorted(m for m, rows in self.rows.items() if rows)

    async def versions(self, model: str) -> list[VersionRecord]:
        return sorted((s.record for s in self.rows.get(model, {}).values()), key=lambda r: r.state.seq)

    async def version_detail(self, model: str, version: str) -> VersionDetail | None:
        stored = self.rows.get(model, {}).get(version)
        if stored is None:
            return None
        gates: list[GateResult] = list(stored.new.gates)
        return VersionDetail(
            record=stored.record,
            candidate=stored.new.candidate,
            gates=gates,
            candidate_event_id=stored.new.event_id,
            transitions=[t for t in self.transitions if t.model == model and t.version == version],
            approvals=list(self.approvals.get((model, version), [])),
        )

    async def due_canaries(self, now: datetime) -> list[tuple[str, str]]:
        return [
            (model, version)
            for model, rows in self.rows.items()
            for version, stored in rows.items()
            if stored.record.stage is Stage.STAGING
            and stored.record.state.canary_until is not None
            and stored.record.state.canary_until <= now
        ]
