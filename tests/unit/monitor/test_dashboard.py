"""The dashboard page renders from window reports alone (the browser test is in tests/e2e)."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.unit.monitor.stream import run_windows
from tollgate_core.contracts import DatasetContract
from tollgate_core.reference import ReferenceProfile
from tollgate_monitor.dashboard import (
    HEATMAP_ROWS,
    ModelView,
    heat_colour,
    heatmap,
    ranked_features,
    render_page,
)
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


def _windows(n_features: int, drifted: dict[str, float]) -> list[dict[str, object]]:
    def feature(i: int) -> dict[str, object]:
        name = f"f{i:03d}"
        effect = drifted.get(name, 0.001 * (i % 7))
        return {"feature": name, "test": "psi", "effect": effect, "threshold": 0.2, "drifted": effect > 0.2}

    return [
        {"end": 1_700_000_000.0 + 600 * k, "features": [feature(i) for i in range(n_features)]}
        for k in range(3)
    ]


def test_a_hundred_features_show_the_most_drifted_first_and_fold_the_rest() -> None:
    windows = _windows(100, {"f042": 0.9, "f077": 0.5, "f013": 0.19})
    assert ranked_features(windows)[:3] == ["f042", "f077", "f013"]
    html = heatmap(windows)
    open_part, folded = html.split("<details", 1)
    assert open_part.count("<rect") == HEATMAP_ROWS * 3 and "f042" in open_part
    assert "85 more features, less drifted" in folded and folded.count("<rect") == 85 * 3
    assert html.index("f042") < html.index("f077") < html.index("f013")


def test_the_feature_filter_keeps_matching_rows() -> None:
    windows = _windows(100, {"f042": 0.9})
    html = heatmap(windows, match="F04")
    assert "<details" not in html and html.count("<rect") == 10 * 3
    assert "No feature name contains" in heatmap(windows, match="zzz")


def test_the_page_filters_features_and_escapes_the_filter(
    contract: DatasetContract, reference: ReferenceProfile
) -> None:
    run = run_windows(contract, Layout.from_reference(reference), windows=2, rows=200, seed=1)
    view = ModelView(
        model="m",
        versions=[],
        windows=[r.to_json() for r in run.reports],
        shown_version="1",
        alerts=[],
        active=[],
    )
    page = render_page([view], datetime(2026, 1, 1, tzinfo=UTC), feature_filter="<x>")
    assert 'value="&lt;x&gt;"' in page and "<x>" not in page
    name = contract.feature_names[0]
    page = render_page([view], datetime(2026, 1, 1, tzinfo=UTC), feature_filter=name)
    heat = page.split('aria-label="drift per feature over windows">', 1)[1].split("</svg>", 1)[0]
    assert name in heat and all(other not in heat for other in contract.feature_names if name not in other)
