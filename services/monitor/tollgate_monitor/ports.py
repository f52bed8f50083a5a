"""What the monitor's use cases (:mod:`tollgate_monitor.core`) need from the outside, declared as small
interfaces: the storage of versions, checkpoints, windows, labels and alerts (PostgreSQL in
:mod:`tollgate_monitor.store`, in memory in :mod:`tollgate_monitor.memory`) and a publisher of dead letters
(the Kafka producer in :mod:`tollgate_monitor.app`), plus the rows they exchange."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np

from tollgate_core.alerts import AlertEvent
from tollgate_core.kafka import OutRecord
from tollgate_core.lifecycle import CandidatePayload, LifecyclePayload, TrainingRequestEvent


class StaleCheckpoint(RuntimeError):
    """Another replica advanced this partition's checkpoint: the state held here is out of date."""


@dataclass(frozen=True)
class PredictionRow:
    request_id: str
    model: str
    version: str
    contract: str
    entity_id: str | None
    score: float | None
    predicted: str | None
    occurred_at: datetime


@dataclass(frozen=True)
class LabelRow:
    contract: str
    entity_id: str | None
    request_id: str | None
    label: str
    truth: float | None
    labeled_at: datetime


@dataclass(frozen=True)
class VersionInfo:
    model: str
    version: str
    contract: str | None
    task: str | None
    reference: dict[str, Any] | None
    metrics: dict[str, float]
    stage: str


@dataclass(frozen=True)
class Retrain:
    """A training request to publish unless the model asked for one within the cooldown."""

    event: TrainingRequestEvent
    cooldown_s: float


@dataclass(frozen=True, slots=True)
class BatchWrite:
    """Everything one partition's batch changes, written at once by :meth:`MonitorStorage.commit_batch`."""

    topic: str
    partition: int
    expected_offset: int  # the checkpoint's offset the batch started from (negative: no checkpoint yet)
    state: dict[str, Any]  # the partition's state after the batch (its new checkpoint)
    predictions: Sequence[PredictionRow]
    windows: Sequence[dict[str, Any]]  # reports of the windows the batch closed
    alerts: Sequence[AlertEvent]
    alerts_topic: str
    retrains: Sequence[Retrain]  # training requests, published unless debounced
    requests_topic: str


class MonitorStorage(Protocol):
    """The monitor's state. Everything one batch changes is written by :meth:`commit_batch` at once."""

    async def upsert_candidate(self, p: CandidatePayload) -> None:
        """Store a version's reference profile, task and holdout metrics (upsert by version)."""

    async def upsert_lifecycle(self, p: LifecyclePayload, at: datetime) -> None:
        """Record a version's stage; an older event than the stored one changes nothing."""

    async def version(self, model: str, version: str) -> VersionInfo | None: ...

    async def stages(self) -> dict[tuple[str, str], str]:
        """The stage of every known version."""

    async def production_versions(self) -> Sequence[Mapping[str, Any]]:
        """Production versions: ``model``, ``version``, ``trained_at``, ``stage_changed_at`` and
        ``last_label`` (when the newest label was joined to one of its predictions)."""

    async def load_partition(self, topic: str, partition: int) -> dict[str, Any] | None:
        """A partition's checkpointed state, None before its first batch."""

    async def commit_batch(self, batch: BatchWrite) -> int:
        """Write one partition's batch atomically (checkpoint compare-and-set on ``batch.expected_offset``,
        predictions, window reports, alerts and debounced training requests to publish); returns the
        training requests queued. Raises :class:`StaleCheckpoint` when the checkpoint moved."""

    async def set_alert(self, alert: AlertEvent, topic: str, expected_state: str) -> bool:
        """Change a series' alert state only if it is still ``expected_state``, and queue the event."""

    async def alert_state(self, model: str, version: str, kind: str) -> tuple[str, str | None]:
        """The state and alert id of a series' alert of one kind (``("cleared", None)`` when unknown)."""

    async def join_labels(self, rows: Sequence[LabelRow]) -> int:
        """Attach labels to predictions still waiting for one; returns the predictions labeled."""

    async def labeled(
        self, model: str, version: str, start: float, end: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and truths of the version's predictions labeled within ``[start, end)``."""

    async def expire_predictions(self, ttl_s: float) -> int:
        """Forget predictions older than ``ttl_s``; returns how many."""


class DeadLetters(Protocol):
    """Where records that cannot be read go, before the offsets that cover them commit."""

    async def publish(self, records: Sequence[OutRecord]) -> None: ...
