"""The monitor's storage in memory (:class:`tollgate_monitor.ports.MonitorStorage`), for fast unit tests of
:mod:`tollgate_monitor.core`; the service runs on :class:`tollgate_monitor.store.MonitorStore`. It keeps the
same rules as the PostgreSQL store: the checkpoint's compare-and-set, predictions kept once per request id,
labels joined once, alerts recorded once per event id, the retraining cooldown. What would go to the outbox is
collected in :attr:`InMemoryMonitorStore.published` as (topic, event) pairs."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from tollgate_core.alerts import AlertEvent
from tollgate_core.events import utcnow
from tollgate_core.kafka import OutRecord
from tollgate_core.lifecycle import CandidatePayload, LifecyclePayload, TrainingRequestEvent
from tollgate_monitor.ports import BatchWrite, LabelRow, PredictionRow, StaleCheckpoint, VersionInfo


@dataclass
class StoredVersion:
    info: VersionInfo
    trained_at: datetime | None = None
    stage_changed_at: datetime | None = None


@dataclass
class StoredPrediction:
    row: PredictionRow
    label: str | None = None
    truth: float | None = None
    labeled_at: datetime | None = None


class InMemoryMonitorStore:
    def __init__(self) -> None:
        self.versions: dict[tuple[str, str], StoredVersion] = {}
        self.partitions: dict[tuple[str, int], tuple[int, dict[str, Any]]] = {}
        self.predictions: dict[tuple[str, str, str], StoredPrediction] = {}
        self.windows: dict[tuple[str, str, float], dict[str, Any]] = {}
        self.alert_events: dict[Any, AlertEvent] = {}
        self.alert_states: dict[tuple[str, str, str], tuple[str, str | None]] = {}
        self.last_retrain: dict[str, datetime] = {}
        self.published: list[tuple[str, AlertEvent | TrainingRequestEvent]] = []

    # ------------------------------------------------------------------------------------------ versions

    def _stored(self, model: str, version: str, contract: str | None, task: str | None) -> StoredVersion:
        found = self.versions.get((model, version))
        if found is None:
            info = VersionInfo(model, version, contract, task, None, {}, "candidate")
            found = self.versions[(model, version)] = StoredVersion(info)
        return found

    async def upsert_candidate(self, p: CandidatePayload) -> None:
        stored = self._stored(p.model, p.version, p.reference.contract, p.task)
        reference = p.reference.model_dump(mode="json")
        stored.info = replace(
            stored.info,
            contract=p.reference.contract,
            task=p.task,
            reference=reference,
            metrics=dict(p.metrics),
        )
        stored.trained_at = p.trained_at

    async def upsert_lifecycle(self, p: LifecyclePayload, at: datetime) -> None:
        stored = self._stored(p.model, p.version, p.contract, p.task)
        if stored.stage_changed_at is not None and stored.stage_changed_at > at:
            return  # an older event than the one stored (redelivery)
        stored.info = replace(
            stored.info,
            stage=p.to_stage.value,
            contract=stored.info.contract or p.contract,
            task=stored.info.task or p.task,
        )
        stored.stage_changed_at = at

    async def version(self, model: str, version: str) -> VersionInfo | None:
        found = self.versions.get((model, version))
        return None if found is None else found.info

    async def stages(self) -> dict[tuple[str, str], str]:
        return {key: v.info.stage for key, v in self.versions.items()}

    async def production_versions(self) -> list[dict[str, Any]]:
        out = []
        for (model, version), v in self.versions.items():
            if v.info.stage != "production":
                continue
            labeled = [
                p.labeled_at
                for p in self.predictions.values()
                if p.row.model == model and p.row.version == version and p.labeled_at is not None
            ]
            out.append(
                {
                    "model": model,
                    "version": version,
                    "trained_at": v.trained_at,
                    "stage_changed_at": v.stage_changed_at,
                    "last_label": max(labeled, default=None),
                }
            )
        return out

    # ---------------------------------------------------------------------------------------- checkpoints

    async def load_partition(self, topic: str, partition: int) -> dict[str, Any] | None:
        found = self.partitions.get((topic, partition))
        return None if found is None else copy.deepcopy(found[1])

    async def commit_batch(self, batch: BatchWrite) -> int:
        key = (batch.topic, batch.partition)
        stored = self.partitions.get(key)
        if (
            (stored is not None)
            if batch.expected_offset < 0
            else (stored is None or stored[0] != batch.expected_offset)
        ):
            raise StaleCheckpoint(
                f"{batch.topic}[{batch.partition}] checkpoint moved past offset {batch.expected_offset}"
            )
        self.partitions[key] = (int(batch.state["last_offset"]), copy.deepcopy(batch.state))
        for p in batch.predictions:
            self.predictions.setdefault((p.request_id, p.model, p.version), StoredPrediction(p))
        for w in batch.windows:
            self.windows[(w["model"], w["version"], w["end"])] = copy.deepcopy(w)
        for alert in batch.alerts:
            self._record_alert(alert, batch.alerts_topic)
        queued = 0
        for retrain in batch.retrains:
            model, now = retrain.event.payload.model, utcnow()
            last = self.last_retrain.get(model)
            if last is None or last <= now - timedelta(seconds=retrain.cooldown_s):
                self.last_retrain[model] = now
                self.published.append((batch.requests_topic, retrain.event))
                queued += 1
        return queued

    def _record_alert(self, alert: AlertEvent, topic: str) -> bool:
        if alert.event_id in self.alert_events:
            return False  # already recorded (and published) by an earlier attempt
        p = alert.payload
        self.alert_events[alert.event_id] = alert
        self.alert_states[(p.model, p.version, p.kind.value)] = (p.state.value, p.alert_id)
        self.published.append((topic, alert))
        return True

    async def set_alert(self, alert: AlertEvent, topic: str, expected_state: str) -> bool:
        p = alert.payload
        if self.alert_states.get((p.model, p.version, p.kind.value), ("cleared", None))[0] != expected_state:
            return False
        return self._record_alert(alert, topic)

    async def alert_state(self, model: str, version: str, kind: str) -> tuple[str, str | None]:
        return self.alert_states.get((model, version, kind), ("cleared", None))

    # ------------------------------------------------------------------------------------------- labels

    async def join_labels(self, rows: Sequence[LabelRow]) -> int:
        joined = 0
        for label in rows:
            for p in self.predictions.values():
                if p.label is not None or p.row.contract != label.contract:
                    continue
                if (label.request_id is not None and p.row.request_id == label.request_id) or (
                    label.request_id is None and p.row.entity_id == label.entity_id
                ):
                    p.label, p.truth, p.labeled_at = label.label, label.truth, label.labeled_at
                    joined += 1
        return joined

    async def labeled(
        self, model: str, version: str, start: float, end: float
    ) -> tuple[np.ndarray, np.ndarray]:
        low, high = datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)
        found = [
            p
            for p in self.predictions.values()
            if p.row.model == model
            and p.row.version == version
            and p.labeled_at is not None
            and low <= p.labeled_at < high
        ]
        scores = np.array([np.nan if p.row.score is None else p.row.score for p in found], dtype=np.float64)
        truth = np.array([np.nan if p.truth is None else p.truth for p in found], dtype=np.float64)
        return scores, truth

    async def expire_predictions(self, ttl_s: float) -> int:
        oldest = utcnow() - timedelta(seconds=ttl_s)
        gone = [key for key, p in self.predictions.items() if p.row.occurred_at < oldest]
        for key in gone:
            del self.predictions[key]
        return len(gone)


class CollectedDeadLetters:
    """:class:`tollgate_monitor.ports.DeadLetters` kept in a list."""

    def __init__(self) -> None:
        self.records: list[OutRecord] = []

    async def publish(self, records: Sequence[OutRecord]) -> None:
        self.records.extend(records)
