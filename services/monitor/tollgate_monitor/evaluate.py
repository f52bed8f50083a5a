"""Judging one window: drift per feature, prediction drift, latency SLO and performance, each as a verdict
(bad, good, or unknown when the window is too small to say), then the alert events those verdicts cause."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from tollgate_core.alerts import AlertEvent, AlertKind, AlertPayload, AlertState, FeatureDrift
from tollgate_core.lifecycle import TrainingRequestEvent, TrainingRequestPayload
from tollgate_monitor.alerts import ALERT_NAMESPACE, Change, Hysteresis, event_id, severity
from tollgate_monitor.drift import Layout, feature_drift, js_distance, psi
from tollgate_monitor.performance import breaches, limits, live_metrics
from tollgate_monitor.settings import MonitorSettings
from tollgate_monitor.windows import DueWindow, latency_quantile

WINDOW_KINDS = (AlertKind.DATA_DRIFT, AlertKind.PREDICTION_DRIFT, AlertKind.PERFORMANCE, AlertKind.LATENCY)


@dataclass(frozen=True)
class Thresholds:
    psi: float = 0.2
    js: float = 0.1
    prediction_psi: float = 0.2
    min_drifted_features: int = 1
    min_rows: int = 500
    latency_p99_ms: float = 250.0
    min_labels: int = 200
    tolerance: float = 0.05
    relative_tolerance: float = 0.25
    raise_after: int = 3
    clear_after: int = 3

    @classmethod
    def from_settings(cls, s: MonitorSettings) -> Thresholds:
        return cls(
            psi=s.psi_threshold,
            js=s.js_threshold,
            prediction_psi=s.prediction_psi_threshold,
            min_drifted_features=s.min_drifted_features,
            min_rows=s.min_window_rows,
            latency_p99_ms=s.latency_p99_slo_ms,
            min_labels=s.min_labels,
            tolerance=s.performance_tolerance,
            relative_tolerance=s.performance_relative_tolerance,
            raise_after=s.raise_after,
            clear_after=s.clear_after,
        )


@dataclass(frozen=True)
class Labeled:
    """Predictions of a version whose labels arrived within a window."""

    task: str
    scores: np.ndarray
    truth: np.ndarray
    holdout: dict[str, float]
    decision_threshold: float | None = None


@dataclass
class WindowReport:
    model: str
    version: str
    start: float
    end: float
    rows: int
    buckets: int
    features: list[dict[str, Any]]
    prediction: dict[str, Any]
    latency: dict[str, Any]
    performance: dict[str, Any]
    verdicts: dict[str, bool | None]
    changes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def drifted_features(self) -> list[str]:
        return [f["feature"] for f in self.features if f["drifted"]]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _r(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 6)


def judge(layout: Layout, window: DueWindow, th: Thresholds, labeled: Labeled | None = None) -> WindowReport:
    """Every statistic and verdict of one window."""
    counts = window.counts
    enough = counts.rows >= th.min_rows
    table = feature_drift(layout, counts.numeric, counts.category, th.psi, th.js)
    drifted = int(table.drifted.sum())

    pred_counts = counts.prediction
    pred_rows = int(pred_counts[:-1].sum())
    ref = layout.prediction.reference
    live = (pred_counts[:-1] / pred_rows).reshape(1, -1) if pred_rows else np.zeros_like(ref)
    pred_psi = float(psi(ref, live)[0]) if pred_rows else float("nan")
    prediction = {
        "rows": pred_rows,
        "psi": _r(pred_psi),
        "js": _r(float(js_distance(ref, live)[0])),
        "threshold": th.prediction_psi,
        "edges": [_r(e) for e in layout.prediction.edges[0].tolist()],
        "reference": [round(float(v), 6) for v in ref[0]],
        "live": [round(float(v), 6) for v in live[0]],
    }

    lat_rows = int(counts.latency.sum())
    p99 = latency_quantile(counts.latency, 0.99)
    latency = {
        "rows": lat_rows,
        "p50_ms": latency_quantile(counts.latency, 0.5),
        "p95_ms": latency_quantile(counts.latency, 0.95),
        "p99_ms": p99,
        "slo_ms": th.latency_p99_ms,
    }

    performance: dict[str, Any] = {"labels": 0}
    perf_verdict: bool | None = None
    if labeled is not None:
        metrics = live_metrics(labeled.task, labeled.scores, labeled.truth, labeled.decision_threshold)
        found = breaches(metrics, labeled.holdout, th.tolerance, th.relative_tolerance)
        performance = {
            "labels": int(metrics.get("count", 0)),
            "metrics": {k: _r(v) for k, v in metrics.items()},
            "holdout": labeled.holdout,
            "limits": {
                k: _r(v) for k, v in limits(labeled.holdout, th.tolerance, th.relative_tolerance).items()
            },
            "breaches": [
                {"metric": b.metric, "live": _r(b.live), "holdout": b.holdout, "limit": _r(b.limit)}
                for b in found
            ],
        }
        if metrics.get("count", 0) >= th.min_labels:
            perf_verdict = bool(found)

    verdicts: dict[str, bool | None] = {
        AlertKind.DATA_DRIFT.value: drifted >= th.min_drifted_features if enough else None,
        AlertKind.PREDICTION_DRIFT.value: (pred_psi >= th.prediction_psi)
        if pred_rows >= th.min_rows
        else None,
        AlertKind.LATENCY.value: (p99 is not None and p99 > th.latency_p99_ms)
        if lat_rows >= th.min_rows
        else None,
        AlertKind.PERFORMANCE.value: perf_verdict,
    }
    return WindowReport(
        window.model,
        window.version,
        window.start,
        window.end,
        counts.rows,
        window.buckets,
        table.as_rows(),
        prediction,
        latency,
        performance,
        verdicts,
    )


def observe(report: WindowReport, states: dict[str, Hysteresis], th: Thresholds) -> list[Change]:
    """Feed a window's verdicts into the hysteresis of its series; returns the alerts that changed."""
    changes = []
    for kind in WINDOW_KINDS:
        state = states.setdefault(kind.value, Hysteresis())
        change = state.observe(
            report.verdicts.get(kind.value),
            raise_after=th.raise_after,
            clear_after=th.clear_after,
            kind=kind,
            model=report.model,
            version=report.version,
            window_end=report.end,
        )
        if change is not None:
            changes.append(change)
            report.changes.append(
                {"kind": change.kind.value, "state": change.state.value, "alert_id": change.alert_id}
            )
    return changes


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def _summary(kind: AlertKind, state: AlertState, report: WindowReport, windows: int) -> str:
    span = f"{windows} consecutive window{'s' if windows != 1 else ''}"
    if state is AlertState.CLEARED:
        return f"{kind.value.replace('_', ' ')} gone for {span}"
    if kind is AlertKind.DATA_DRIFT:
        top = sorted((f for f in report.features if f["drifted"]), key=lambda f: -(f["effect"] or 0))[:3]
        named = ", ".join(
            f"{f['feature']} ({'PSI' if f['test'] == 'psi' else 'JS'} {f['effect']:.2f})" for f in top
        )
        return f"data drift on {named} for {span}"
    if kind is AlertKind.PREDICTION_DRIFT:
        return f"prediction drift (PSI {report.prediction['psi']:.2f}) for {span}"
    if kind is AlertKind.LATENCY:
        return f"p99 latency {report.latency['p99_ms']:.1f} ms above the {report.latency['slo_ms']:.0f} ms SLO for {span}"
    found = report.performance.get("breaches", [])
    named = ", ".join(f"{b['metric']} {b['live']:.3f} (holdout {b['holdout']:.3f})" for b in found)
    return f"performance below holdout: {named} for {span}"


def alert_event(
    change: Change, report: WindowReport, stage: str, producer: str, schema: str, now: datetime
) -> AlertEvent:
    features = [
        FeatureDrift(
            feature=f["feature"],
            test=f["test"],
            effect=f["effect"] if f["effect"] is not None else 0.0,
            threshold=f["threshold"],
            p_value=f["p_value"],
            drifted=f["drifted"],
        )
        for f in report.features
        if change.kind is AlertKind.DATA_DRIFT and f["drifted"]
    ]
    metrics: dict[str, float] = {"rows": float(report.rows)}
    if change.kind is AlertKind.PREDICTION_DRIFT and report.prediction["psi"] is not None:
        metrics["prediction_psi"] = float(report.prediction["psi"])
    if change.kind is AlertKind.LATENCY and report.latency["p99_ms"] is not None:
        metrics.update(p99_ms=float(report.latency["p99_ms"]), slo_ms=float(report.latency["slo_ms"]))
    if change.kind is AlertKind.PERFORMANCE:
        metrics.update(
            {k: float(v) for k, v in report.performance.get("metrics", {}).items() if v is not None}
        )
    payload = AlertPayload(
        alert_id=change.alert_id,
        model=report.model,
        version=report.version,
        stage=stage,
        kind=change.kind,
        state=change.state,
        severity=severity(change.kind, stage),
        summary=_summary(change.kind, change.state, report, change.windows),
        windows=max(change.windows, 1),
        window_start=_ts(report.start),
        window_end=_ts(report.end),
        features=features,
        metrics=metrics,
    )
    return AlertEvent(
        event_id=event_id(change.alert_id, change.state),
        event_type=f"alert_{change.state.value}",
        schema_=schema,
        occurred_at=now,
        producer=producer,
        payload=payload,
    )


def training_request(
    alert: AlertEvent, contract: str, schema: str, producer: str, now: datetime
) -> TrainingRequestEvent:
    p = alert.payload
    return TrainingRequestEvent(
        event_id=uuid.uuid5(ALERT_NAMESPACE, f"{p.alert_id}\x1fretrain"),
        event_type="training_requested",
        schema_=schema,
        occurred_at=now,
        producer=producer,
        payload=TrainingRequestPayload(
            model=p.model,
            contract=contract,
            reason=f"{p.summary} (version {p.version})",
            requested_by="monitor",
            alert_id=p.alert_id,
        ),
    )
