"""Staleness of production versions (model age, time since the last joined label), against the in-memory store:
raised once, not repeated, cleared once fresh labels arrive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from tollgate_monitor.core import MonitorCore, positive_key
from tollgate_monitor.memory import (
    CollectedDeadLetters,
    InMemoryMonitorStore,
    StoredPrediction,
    StoredVersion,
)
from tollgate_monitor.ports import PredictionRow, VersionInfo
from tollgate_monitor.settings import MonitorSettings

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def core(settings: MonitorSettings, store: InMemoryMonitorStore) -> MonitorCore:
    return MonitorCore(settings, store, CollectedDeadLetters(), CollectorRegistry())


def label_joined(store: InMemoryMonitorStore, request_id: str, at: datetime) -> None:
    """A prediction of the production version whose label was joined at ``at``."""
    row = PredictionRow(request_id, "m", "3", "synthetic-risk.v1", None, 0.5, "true", at)
    store.predictions[(request_id, "m", "3")] = StoredPrediction(row, "true", 1.0, at)


def production_store(last_label: datetime) -> InMemoryMonitorStore:
    store = InMemoryMonitorStore()
    info = VersionInfo("m", "3", "synthetic-risk.v1", "classification", None, {}, "production")
    store.versions[("m", "3")] = StoredVersion(
        info, trained_at=NOW - timedelta(days=2), stage_changed_at=NOW - timedelta(days=1)
    )
    label_joined(store, "r-1", last_label)
    return store


async def test_staleness_raises_once_and_clears_when_labels_return() -> None:
    store = production_store(last_label=NOW - timedelta(days=5))
    monitor = core(MonitorSettings(max_label_gap_seconds=3 * 86400, max_model_age_seconds=30 * 86400), store)
    raised = await monitor.check_staleness(NOW)
    assert [(a.payload.kind.value, a.payload.state.value) for a in raised] == [("staleness", "raised")]
    assert "no label for 120.0 h" in raised[0].payload.summary and raised[0].payload.severity == "warning"
    assert await monitor.check_staleness(NOW + timedelta(minutes=1)) == []  # still stale: nothing new
    label_joined(store, "r-2", NOW)
    cleared = await monitor.check_staleness(NOW + timedelta(minutes=2))
    assert [a.payload.state.value for a in cleared] == ["cleared"]
    assert cleared[0].payload.alert_id == raised[0].payload.alert_id


def test_positive_class_of_binary_labels() -> None:
    from tollgate_core.contracts import ContractRegistry

    contracts = ContractRegistry.from_directory()
    synthetic = contracts.get("synthetic-risk.v1")
    assert synthetic is not None and positive_key(synthetic) == "true"


def test_an_integer_label_sent_as_a_whole_float_is_the_positive_class() -> None:
    from tollgate_core.contracts import FieldType

    monitor = core(MonitorSettings(), InMemoryMonitorStore())
    synthetic = monitor.contracts.get("synthetic-risk.v1")
    assert synthetic is not None
    label = synthetic.label.model_copy(update={"type": FieldType.INTEGER, "positive_class": None})
    contract = synthetic.model_copy(update={"label": label})
    doc = {"occurred_at": NOW.isoformat(), "payload": {"request_id": "r-1"}, "entity_id": "e-1"}
    rows = [monitor._label_row(contract, doc, value) for value in (1, 1.0, 0, 0.0)]
    assert [(r.label, r.truth) for r in rows] == [("1", 1.0), ("1", 1.0), ("0", 0.0), ("0", 0.0)]
