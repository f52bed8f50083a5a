"""Payload of ``monitor.alerts``: an alert raised or cleared by the monitor for one model version."""

from __future__ import annotations

from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from tollgate_core.events import Envelope


class AlertKind(StrEnum):
    DATA_DRIFT = "data_drift"
    PREDICTION_DRIFT = "prediction_drift"
    PERFORMANCE = "performance"
    STALENESS = "staleness"
    LATENCY = "latency"
    AUDIT_TAMPERING = "audit_tampering"  # raised by the audit-log: a chain moved that its writer did not move


class AlertState(StrEnum):
    RAISED = "raised"
    CLEARED = "cleared"


class FeatureDrift(BaseModel):
    model_config = ConfigDict(extra="forbid")

    feature: str
    test: str = Field(description="psi | jensen_shannon | wasserstein | chi_square ...")
    effect: float = Field(description="Effect size the decision is made on.")
    threshold: float
    p_value: float | None = Field(
        None, description="Reported for information; never the decision on its own."
    )
    drifted: bool


class AlertPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alert_id: str = Field(description="Stable id of this alert episode: raised and cleared events share it.")
    model: str
    version: str
    stage: str = Field(description="Stage of the version when the alert changed state (production, staging).")
    kind: AlertKind
    state: AlertState
    severity: str = Field(pattern="^(info|warning|critical)$")
    summary: str
    windows: int = Field(
        ge=1, description="Consecutive windows the condition held (or was absent, to clear)."
    )
    window_start: AwareDatetime
    window_end: AwareDatetime
    features: list[FeatureDrift] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)


class AlertEvent(Envelope[AlertPayload]):
    """``monitor.alerts.v1``."""
