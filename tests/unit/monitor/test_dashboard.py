"""The dashboard page renders from window reports alone (the browser test is in tests/e2e)."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.unit.monitor.stream import run_windows
from tollgate_core.contracts import DatasetContract
from tollgate_core.reference import ReferenceProfile
from tollgate_monitor.dashboard import ModelView, heat_colour, render_page
from tollgate_monitor.drift import Layout


def test_page_has_every_chart_feature_and_alert(
    contract: DatasetContract, reference: ReferenceProfile
) -> None:
    run = run_windows(
        contract,
        Layout.from_reference(reference),
        windows=5,
        rows=500,
        seed=3,
        drift_from=2,
        drift={"credit_utilization": 1.0},
    )
    alert = {
        "window_end": datetime(2026, 1, 1, tzinfo=UTC),
        "version": "1",
        "kind": "data_drift",
        "state": "raised",
        "severity": "critical",
        "summary": "data drift on credit_utilization (PSI 0.93) for 3 windows",
    }
    view = ModelView(
        model="risk",
        versions=[
            {"version": "1", "stage": "production", "canary_weight": None},
            {"version": "2", "stage": "staging", "canary_weight": 0.2},
        ],
        windows=[r.to_json() for r in run.reports],
        shown_version="1",
        alerts=[alert],
        active=[alert],
    )
    page = render_page([view], datetime(2026, 1, 1, tzinfo=UTC))
    assert page.count("<svg") >= 5 and "<script" not in page and "http" not in page.split("<body>")[1]
    for name in contract.feature_names:
        assert name in page
    assert "v1 production" in page and "v2 staging · 20%" in page and "1 active alert" in page
    assert "data drift on credit_utilization" in page


def test_heat_colour_scale() -> None:
    assert heat_colour(None) == "#eef1f5"
    assert heat_colour(0.0) == "#ecfdf5" and heat_colour(1.0) == "#f59e0b" and heat_colour(5.0) == "#dc2626"
