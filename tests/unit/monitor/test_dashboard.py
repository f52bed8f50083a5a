"""The dashboard page renders from window reports alone (the browser test is in tests/e2e)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from tests.unit.monitor.stream import run_windows
from tollgate_core.contracts import DatasetContract
from tollgate_core.reference import ReferenceProfile
from tollgate_monitor.dashboard import (
    HEATMAP_ROWS,
    IMPORTANCE_FEATURES,
    ModelView,
    heat_colour,
    heatmap,
    importance_svg,
    model_section,
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


def _importance(*ranked: tuple[str, float]) -> dict[str, Any]:
    return {
        "method": "permutation",
        "metric": "log_loss",
        "baseline": 0.3,
        "rows": 400,
        "repeats": 5,
        "seed": 0,
        "features": [{"feature": f, "importance": v, "spread": abs(v) / 10} for f, v in ranked],
    }


def test_each_version_in_service_has_its_feature_importance_bars() -> None:
    many = [(f"feature_{i:02d}", 1.0 / (i + 1)) for i in range(IMPORTANCE_FEATURES + 3)]
    view = ModelView(
        model="risk",
        versions=[
            {"version": "1", "stage": "archived", "importance": _importance(("old", 1.0))},
            {"version": "3", "stage": "staging", "canary_weight": 0.2, "importance": None},
            {
                "version": "2",
                "stage": "production",
                "importance": _importance(*many, ("<b>noise</b>", -0.01)),
            },
        ],
        windows=[],
        shown_version="2",
        alerts=[],
        active=[],
    )
    section = model_section(view)
    production = section.index("Feature importance <span>v2 production")
    staging = section.index("Feature importance <span>v3 staging")
    assert production < staging and "v1 archived" not in section and ">old<" not in section
    bars = re.findall(r'class="bar-importance"><title>([^:<]+):', section)
    assert bars == [f for f, _ in many[:IMPORTANCE_FEATURES]]  # the most important first, the rest counted
    assert "4 more features" in section and "&lt;b&gt;noise" not in section and "<b>noise" not in section
    assert "Not measured for this version." in section[staging:]
    assert "increase of log_loss when shuffled (baseline 0.3; 400 holdout rows &times; 5 repeats" in section
    assert "<script" not in section


def test_a_negative_importance_draws_no_bar_and_names_are_escaped() -> None:
    svg = importance_svg(_importance(("<x>", 0.2), ("noise", -0.05)))
    assert "&lt;x&gt;" in svg and "<x>" not in svg
    widths = [float(w) for w in re.findall(r'<rect x="\d+" y="[0-9.]+" width="([0-9.]+)"', svg)]
    assert widths[0] > 0 and widths[1] == 0
