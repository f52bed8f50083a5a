"""Staleness of production versions (model age, time since the last joined label), against a fake store:
raised once, not repeated, cleared once fresh labels arrive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tollgate_core.alerts import AlertEvent
from tollgate_monitor.app import Monitor, positive_key
from tollgate_monitor.settings import MonitorSettings

NOW = datetime(2026, 6, 1, tzinfo=UTC)


class FakeStore:
    def __init__(self, last_label: datetime | None) -> None:
        self.last_label = last_label
        self.states: dict[tuple[str, str, str], tuple[str, str | None]] = {}
        self.published: list[AlertEvent] = []

    async def production_versions(self) -> list[dict[str, Any]]:
        return [
            {
                "model": "m",
                "version": "3",
                "trained_at": NOW - timedelta(days=2),
                "stage_changed_at": NOW - timedelta(days=1),
                "last_label": self.last_label,
            }
        ]

    async def alert_state(self, model: str, version: str, kind: str) -> tuple[str, str | None]:
        return self.states.get((model, version, kind), ("cleared", None))

    async def set_alert(self, alert: AlertEvent, topic: str, expected_state: str) -> bool:
        p = alert.payload
        key = (p.model, p.version, p.kind.value)
        if self.states.get(key, ("cleared", None))[0] != expected_state:
            return False
        self.states[key] = (p.state.value, p.alert_id)
        self.published.append(alert)
        return True


async def test_staleness_raises_once_and_clears_when_labels_return() -> None:
    monitor = Monitor(MonitorSettings(max_label_gap_seconds=3 * 86400, max_model_age_seconds=30 * 86400))
    store = FakeStore(last_label=NOW - timedelta(days=5))
    monitor.store = store  # type: ignore[assignment]
    raised = await monitor.check_staleness(NOW)
    assert [(a.payload.kind.value, a.payload.state.value) for a in raised] == [("staleness", "raised")]
    assert "no label for 120.0 h" in raised[0].payload.summary and raised[0].payload.severity == "warning"
    assert await monitor.check_staleness(NOW + timedelta(minutes=1)) == []  # still stale: nothing new
    store.last_label = NOW
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

    monitor = Monitor(MonitorSettings())
    synthetic = monitor.contracts.get("synthetic-risk.v1")
    assert synthetic is not None
    label = synthetic.label.model_copy(update={"type": FieldType.INTEGER, "positive_class": None})
    contract = synthetic.model_copy(update={"label": label})
    doc = {"occurred_at": NOW.isoformat(), "payload": {"request_id": "r-1"}, "entity_id": "e-1"}
    rows = [monitor._label_row(contract, doc, value) for value in (1, 1.0, 0, 0.0)]
    assert [(r.label, r.truth) for r in rows] == [("1", 1.0), ("1", 1.0), ("0", 0.0), ("0", 0.0)]
