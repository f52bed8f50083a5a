"""Alert state per (model, version, kind): hysteresis, so that alerts neither flap nor fire on one window.

A condition (drift, prediction drift, performance, latency) is observed once per evaluated window as bad,
good or unknown (too few rows or labels to say). An alert is raised after ``raise_after`` consecutive bad
windows and cleared after ``clear_after`` consecutive good ones; unknown windows change nothing. Alert ids
are derived from the series and the window that raised them, so replaying the same input after a crash
raises the same alert, not a second one.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from typing import Any

from tollgate_core.alerts import AlertKind, AlertState

ALERT_NAMESPACE = uuid.UUID("7f1c0a52-3d4e-4b8a-9a51-2b0e6f4d9c11")

# Kinds whose alert on a production version asks the trainer for a new version.
RETRAIN_KINDS = frozenset({AlertKind.DATA_DRIFT, AlertKind.PREDICTION_DRIFT, AlertKind.PERFORMANCE})


def alert_id(model: str, version: str, kind: str, raised_at_window_end: float) -> str:
    return str(uuid.uuid5(ALERT_NAMESPACE, f"{model}\x1f{version}\x1f{kind}\x1f{raised_at_window_end:.3f}"))


def event_id(alert: str, state: AlertState) -> uuid.UUID:
    """The envelope event id of an alert's raised or cleared event: stable under replay."""
    return uuid.uuid5(ALERT_NAMESPACE, f"{alert}\x1f{state.value}")


@dataclass(frozen=True)
class Change:
    """An alert that just changed state."""

    kind: AlertKind
    state: AlertState
    alert_id: str
    windows: int  # consecutive windows that made the change


@dataclass
class Hysteresis:
    raised: bool = False
    bad: int = 0
    good: int = 0
    alert_id: str | None = None

    def observe(
        self,
        bad: bool | None,
        *,
        raise_after: int,
        clear_after: int,
        kind: AlertKind,
        model: str,
        version: str,
        window_end: float,
    ) -> Change | None:
        """Record one window's verdict; return the change of state it caused, if any."""
        if bad is None:
            return None
        if bad:
            self.bad += 1
            self.good = 0
        else:
            self.good += 1
            self.bad = 0
        if not self.raised and self.bad >= raise_after:
            self.raised = True
            self.alert_id = alert_id(model, version, kind.value, window_end)
            return Change(kind, AlertState.RAISED, self.alert_id, self.bad)
        if self.raised and self.good >= clear_after:
            assert self.alert_id is not None
            cleared = Change(kind, AlertState.CLEARED, self.alert_id, self.good)
            self.raised = False
            self.alert_id = None
            return cleared
        return None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Hysteresis:
        return cls(**doc)


def severity(kind: AlertKind, stage: str) -> str:
    if kind in RETRAIN_KINDS and stage == "production":
        return "critical"
    if kind is AlertKind.STALENESS:
        return "info" if stage != "production" else "warning"
    return "warning"


def wants_retraining(kind: AlertKind, state: AlertState, stage: str) -> bool:
    """Only a newly raised drift or performance alert on the production version asks for retraining."""
    return state is AlertState.RAISED and kind in RETRAIN_KINDS and stage == "production"
