"""Out-of-time split, metrics, calibration and the fairness gap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.unit.trainer.cases import CREDIT, DELIVERY
from tollgate_trainer.evaluate import (
    classification_metrics,
    evaluate,
    expected_calibration_error,
    fairness_gap,
    out_of_time_split,
    regression_metrics,
    segment_keys,
)


def test_holdout_is_the_newest_rows_by_event_time() -> None:
    times = pd.date_range("2024-01-01", periods=10, freq="h", tz="UTC")
    shuffled = [7, 2, 9, 0, 5, 1, 8, 3, 6, 4]
    raw = pd.DataFrame({"placed_at": [times[i].isoformat() for i in shuffled]})
    split = out_of_time_split(raw, DELIVERY, holdout_fraction=0.3)
    assert split.ordered_by == "placed_at"
    assert sorted(shuffled[i] for i in split.holdout) == [7, 8, 9]
    assert sorted(split.train.tolist() + split.holdout.tolist()) == list(range(10))


def test_rows_without_a_time_count_as_oldest() -> None:
    raw = pd.DataFrame({"placed_at": [None, "2024-01-02T00:00:00Z", None, "2024-01-01T00:00:00Z"]})
    split = out_of_time_split(raw, DELIVERY, holdout_fraction=0.25)
    assert split.holdout.tolist() == [1]


def test_without_event_time_the_holdout_is_the_last_arrivals() -> None:
    split = out_of_time_split(pd.DataFrame({"x": range(10)}), CREDIT, holdout_fraction=0.2)
    assert split.ordered_by == "arrival"
    assert split.train.tolist() == list(range(8)) and split.holdout.tolist() == [8, 9]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_holdout_fraction_must_leave_both_sides(fraction: float) -> None:
    with pytest.raises(ValueError):
        out_of_time_split(pd.DataFrame({"x": range(10)}), CREDIT, holdout_fraction=fraction)


def test_binary_metrics_on_a_known_case() -> None:
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.6, 0.4, 0.9])
    metrics = classification_metrics(y, np.c_[1 - p1, p1], positive_index=1)
    assert metrics["roc_auc"] == pytest.approx(0.75)
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert metrics["f1"] == pytest.approx(0.5)
    assert metrics["brier"] == pytest.approx(np.mean((p1 - y) ** 2))
    assert metrics["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.4, 0.9])))
    assert metrics["count"] == 4


def test_positive_index_selects_the_scored_class() -> None:
    y = np.array([0, 0, 0, 1])
    proba = np.tile([0.9, 0.1], (4, 1))  # always predicts class 0
    assert classification_metrics(y, proba, positive_index=1)["f1"] == 0.0
    assert classification_metrics(y, proba, positive_index=0)["f1"] == pytest.approx(2 * 0.75 / 1.75)
    assert classification_metrics(y, proba, positive_index=0)["brier"] == pytest.approx(
        np.mean((0.9 - (y == 0)) ** 2)
    )


def test_multiclass_metrics() -> None:
    y = np.array([0, 1, 2, 2])
    proba = np.array([[0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.1, 0.2, 0.7], [0.3, 0.3, 0.4]])
    metrics = classification_metrics(y, proba, positive_index=None)
    assert metrics["accuracy"] == 1.0 and metrics["f1"] == 1.0 and metrics["roc_auc"] == pytest.approx(1.0)


def test_expected_calibration_error() -> None:
    score = np.full(10, 0.8)
    assert expected_calibration_error(np.array([1] * 8 + [0] * 2), score) == pytest.approx(0.0)
    assert expected_calibration_error(np.zeros(10, dtype=int), score) == pytest.approx(0.8)
    assert expected_calibration_error(np.array([], dtype=int), np.array([])) == 0.0


def test_regression_metrics() -> None:
    metrics = regression_metrics(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 6.0]))
    assert metrics["rmse"] == pytest.approx(1.0) and metrics["mae"] == pytest.approx(0.5)


def test_segments_and_fairness_gap() -> None:
    y = np.array([0, 1, 0, 1, 1, 1])
    p1 = np.array([0.2, 0.8, 0.6, 0.4, 0.9, 0.7])
    segments = segment_keys(pd.Series(["a", "a", "b", "b", None, None], dtype=object))
    result = evaluate(y, np.c_[1 - p1, p1], "classification", 1, segments)
    assert set(result.segment_metrics) == {"a", "b", "null"}
    assert result.segment_metrics["a"]["accuracy"] == 1.0 and result.segment_metrics["b"]["accuracy"] == 0.0
    # ROC AUC is undefined on the single-class "null" segment: left out there, and out of its gap.
    assert "roc_auc" not in result.segment_metrics["null"]
    assert result.fairness_gap["roc_auc"] == pytest.approx(1.0)
    assert result.fairness_gap["accuracy"] == pytest.approx(1.0)
    assert "count" not in result.fairness_gap


def test_boolean_segments_use_reference_keys() -> None:
    assert segment_keys(pd.Series([True, False, None], dtype=object)).tolist() == ["true", "false", "null"]


def test_fairness_gap_needs_two_segments() -> None:
    assert fairness_gap({"a": {"rmse": 1.0}, "b": {"rmse": 3.0, "r2": 0.5}}) == {"rmse": 2.0}
