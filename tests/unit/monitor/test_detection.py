"""The two promises of the monitor, with the default thresholds and real reference profiles:

* no false alarm over a long run drawn from the training distribution (200 windows of 1,000 rows);
* injected drift is caught within 3 windows: the first drifted window already breaches the effect-size
  threshold, and the hysteresis (3 consecutive windows) raises the alert on the third.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.monitor.stream import run_windows
from tollgate_core.contracts import DatasetContract
from tollgate_monitor.drift import Layout
from tollgate_monitor.evaluate import Thresholds

WINDOWS_TO_DETECT = 3


def test_no_false_alarm_over_200_windows_from_the_training_distribution(
    contract: DatasetContract, layout: Layout
) -> None:
    run = run_windows(contract, layout, windows=200, rows=1000, seed=5000)
    assert run.changes == []
    worst_psi = max(f["psi"] for r in run.reports for f in r.features if f["test"] == "psi")
    worst_js = max(f["js"] for r in run.reports for f in r.features if f["test"] != "psi")
    assert worst_psi < 0.2 and worst_js < 0.1
    # Not a single window was even judged drifted, let alone three in a row.
    assert not any(r.verdicts["data_drift"] or r.verdicts["prediction_drift"] for r in run.reports)
    # The same stream under a bare p-value rule ("a feature with p < 0.01"): most windows look drifted, because
    # 20 tests per window multiply chances and the reference's own sampling noise counts as "significant".
    by_p_value = sum(
        any(f["p_value"] is not None and f["p_value"] < 0.01 for f in r.features) for r in run.reports
    )
    assert by_p_value > 100


@pytest.mark.parametrize(
    "drift",
    [{"credit_utilization": 1.0}, {"employment_type": 1.5}, {"num_late_payments_12m": -1.0, "housing": 1.0}],
)
def test_injected_drift_is_caught_within_three_windows(
    contract: DatasetContract, layout: Layout, drift: dict[str, float]
) -> None:
    run = run_windows(contract, layout, windows=12, rows=1000, seed=9000, drift_from=6, drift=drift)
    raised = run.raised("data_drift")
    assert raised, "the drift was never reported"
    assert raised[0] - 6 + 1 <= WINDOWS_TO_DETECT
    assert raised == [6 + WINDOWS_TO_DETECT - 1]
    flagged = set(run.reports[6].drifted_features)
    assert flagged == set(drift), flagged  # exactly the drifted features, nothing else


def test_drift_clears_the_same_way(contract: DatasetContract, layout: Layout) -> None:
    th = Thresholds(raise_after=3, clear_after=4)
    run = run_windows(
        contract,
        layout,
        windows=12,
        rows=800,
        seed=100,
        drift_from=0,
        drift_until=5,
        drift={"credit_score": 1.2},
        th=th,
    )
    kinds = [(i, c.kind.value, c.state.value) for i, c in run.changes]
    assert "data_drift" in {k for _, k, _ in kinds}
    assert [(i, s) for i, k, s in kinds if k == "data_drift"] == [(2, "raised"), (8, "cleared")]


def test_a_tiny_shift_on_a_large_window_is_significant_but_not_an_alarm(
    contract: DatasetContract, layout: Layout
) -> None:
    """10,000 rows, a 0.1 standard-deviation shift: the chi-square p-value calls it significant, the effect
    size calls it what it is, harmless."""
    run = run_windows(
        contract, layout, windows=1, rows=10_000, seed=42, drift_from=0, drift={"credit_utilization": 0.1}
    )
    f = next(f for f in run.reports[0].features if f["feature"] == "credit_utilization")
    assert f["p_value"] < 0.01
    assert f["psi"] < 0.05 and not f["drifted"]


def test_prediction_drift_follows_input_drift(contract: DatasetContract, layout: Layout) -> None:
    run = run_windows(
        contract,
        layout,
        windows=4,
        rows=1000,
        seed=77,
        drift_from=0,
        drift={"num_credit_inquiries_6m": -1.0, "debt_to_income": 1.0},
    )
    assert run.raised("prediction_drift") == [2]
    assert np.isfinite(run.reports[0].prediction["psi"])


def test_latency_slo(contract: DatasetContract, layout: Layout) -> None:
    run = run_windows(contract, layout, windows=3, rows=600, seed=1, latency_ms=400.0)
    assert run.raised("latency") == [2]
    assert run.reports[0].latency["p99_ms"] >= 400.0
