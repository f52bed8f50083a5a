"""Live performance metrics agree with scikit-learn; breaches are judged against the holdout."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, log_loss, mean_absolute_error, roc_auc_score

from tollgate_monitor.performance import (
    HIGHER_IS_BETTER,
    LOWER_IS_BETTER,
    breaches,
    classification_metrics,
    live_metrics,
    regression_metrics,
)


def test_classification_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    truth = (rng.random(500) < 0.3).astype(float)
    scores = np.clip(0.3 + 0.4 * (truth - 0.3) + rng.normal(0, 0.2, 500), 0.01, 0.99)
    scores[:20] = 0.5  # ties count half, as in sklearn
    got = classification_metrics(scores, truth)
    assert got["roc_auc"] == pytest.approx(roc_auc_score(truth, scores))
    assert got["log_loss"] == pytest.approx(log_loss(truth, scores))
    assert got["accuracy"] == pytest.approx(accuracy_score(truth, scores >= 0.5))


def test_regression_metrics_match_sklearn() -> None:
    truth = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([1.5, 2.0, 2.0, 5.0])
    got = regression_metrics(pred, truth)
    assert got["mae"] == pytest.approx(mean_absolute_error(truth, pred))
    assert got["rmse"] == pytest.approx(np.sqrt(np.mean((pred - truth) ** 2)))


def test_breaches_use_absolute_drops_and_relative_rises() -> None:
    holdout = {"roc_auc": 0.90, "accuracy": 0.85, "log_loss": 0.30}
    assert breaches({"roc_auc": 0.86, "accuracy": 0.84, "log_loss": 0.36}, holdout, 0.05, 0.25) == []
    found = breaches({"roc_auc": 0.80, "accuracy": 0.84, "log_loss": 0.40}, holdout, 0.05, 0.25)
    assert [b.metric for b in found] == ["roc_auc", "log_loss"]


def test_live_accuracy_decides_at_the_versions_threshold() -> None:
    scores = np.array([0.1, 0.25, 0.3, 0.6, 0.05])
    truth = np.array([0.0, 1.0, 1.0, 1.0, 0.0])
    assert live_metrics("classification", scores, truth)["accuracy"] == pytest.approx(0.6)
    assert live_metrics("classification", scores, truth, 0.2)["accuracy"] == pytest.approx(1.0)


def test_live_limits_take_their_directions_from_the_metric_catalog() -> None:
    from tollgate_core.metrics import Direction, direction

    assert all(direction(m) is Direction.HIGHER_IS_BETTER for m in HIGHER_IS_BETTER)
    assert all(direction(m) is Direction.LOWER_IS_BETTER for m in LOWER_IS_BETTER)
