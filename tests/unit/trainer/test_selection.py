"""Champion selection over the catalog's configurations, and the simple baselines a model must beat.

Two generated data sets with a known answer: on an interaction of two features (the label is their sign
agreement, XOR-like) no linear model can do better than chance and a tree ensemble wins; on a weak linear
signal with few rows a linear model wins (the trees overfit the noise).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from tollgate_core.contracts import DatasetContract
from tollgate_core.models import Configuration, SelectionPolicy
from tollgate_trainer.features import TrainingDataError
from tollgate_trainer.train import TrainingConfig, TrainingResult, train_model

FEATURES = 5
CONTRACT = DatasetContract.model_validate(
    {
        "contract": "selection-probe",
        "version": 1,
        "entity_id": {"name": "id", "type": "string"},
        "label": {"name": "y", "type": "boolean", "task": "classification", "positive_class": True},
        "features": [
            {"name": f"x{i}", "type": "number", "minimum": -10, "maximum": 10} for i in range(FEATURES)
        ],
        "attributes": [{"name": "at", "type": "string"}],
        "event_time": "at",
    }
)

CONFIGURATIONS = [
    Configuration(family="logistic_regression", hyperparameters={"C": [0.1, 1.0]}),
    Configuration(family="random_forest", hyperparameters={"n_estimators": [30], "max_depth": [2, 8]}),
    Configuration(family="hist_gradient_boosting", hyperparameters={"max_iter": [40]}),
]
POLICY = SelectionPolicy(configurations=CONFIGURATIONS, metric="roc_auc")


def _records(x: np.ndarray, y: np.ndarray) -> list[dict[str, Any]]:
    return [
        {"id": f"r-{i}", "y": bool(y[i]), "at": f"2026-01-01T00:00:00.{i:06d}Z"}
        | {f"x{j}": float(x[i, j]) for j in range(FEATURES)}
        for i in range(len(y))
    ]


@cache
def interaction_records() -> list[dict[str, Any]]:
    """y = (x0 > 0) == (x1 > 0), with 5 % of labels flipped: invisible to a linear model."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(3000, FEATURES))
    y = (x[:, 0] > 0) == (x[:, 1] > 0)
    flip = rng.random(len(y)) < 0.05
    return _records(x, y ^ flip)


@cache
def linear_records() -> list[dict[str, Any]]:
    """A linear signal spread evenly over every feature: what the trees learn of it is steps, and noise."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1500, FEATURES))
    logit = 0.5 * x.sum(axis=1)
    y = rng.random(len(x)) < 1 / (1 + np.exp(-logit))
    return _records(x, y)


@cache
def selected(data: str) -> TrainingResult:
    records = interaction_records() if data == "interaction" else linear_records()
    config = TrainingConfig(selection=POLICY, baselines=True, threads=1, seed=1)
    return train_model(CONTRACT, records, config)


def test_a_tree_ensemble_wins_on_an_interaction_and_every_trial_is_recorded() -> None:
    result = selected("interaction")
    selection = result.selection
    assert selection is not None
    assert [t.family for t in selection.trials] == [
        "logistic_regression",
        "logistic_regression",
        "random_forest",
        "random_forest",
        "hist_gradient_boosting",
    ]
    assert [t.number for t in selection.trials] == [1, 2, 3, 4, 5] and selection.skipped == 0
    for trial in selection.trials:
        assert set(trial.metrics) >= {"roc_auc", "f1", "log_loss"}
        assert trial.seconds > 0 and len(trial.digest) == 64
        assert trial.hyperparameters["random_state"] == 1
    assert [t.overrides for t in selection.trials[:2]] == [{"C": 0.1}, {"C": 1.0}]
    assert selection.trials[3].overrides == {"max_depth": 8, "n_estimators": 30, "n_jobs": 1}
    champion = selection.champion
    assert champion.family != "logistic_regression", [
        (t.family, t.metrics["roc_auc"]) for t in selection.trials
    ]
    assert champion.metrics["roc_auc"] == max(t.metrics["roc_auc"] for t in selection.trials)
    linear_best = max(t.metrics["roc_auc"] for t in selection.trials[:2])
    assert champion.metrics["roc_auc"] > linear_best + 0.2  # a linear model sees nothing here
    # The run's model is the champion's configuration, measured on the untouched holdout.
    assert result.family == champion.family
    assert result.hyperparameters == champion.hyperparameters
    assert result.train_rows + result.holdout_rows == 3000
    assert selection.fit_rows + selection.validation_rows == result.train_rows
    assert result.parity.passed


def test_a_linear_model_wins_on_a_linear_signal() -> None:
    selection = selected("linear").selection
    assert selection is not None and len(selection.trials) == 5
    assert selection.champion.family == "logistic_regression", [
        (t.family, t.overrides, round(t.metrics["roc_auc"], 3)) for t in selection.trials
    ]


def test_baselines_are_measured_on_the_candidates_holdout() -> None:
    tree, linear = selected("interaction"), selected("linear")
    assert set(tree.baselines) == {"majority", "linear"}
    assert set(linear.baselines) == {"majority"}  # a linear candidate is its own linear baseline
    assert tree.baselines["majority"]["roc_auc"] == pytest.approx(0.5)
    assert tree.metrics["roc_auc"] > tree.baselines["linear"]["roc_auc"] + 0.2
    assert linear.metrics["roc_auc"] > linear.baselines["majority"]["roc_auc"] + 0.1


def test_the_time_budget_stops_the_grid_but_one_trial_always_runs() -> None:
    policy = SelectionPolicy(configurations=CONFIGURATIONS, metric="roc_auc", max_seconds=1e-9)
    result = train_model(CONTRACT, linear_records(), TrainingConfig(selection=policy, threads=1))
    assert result.selection is not None
    assert len(result.selection.trials) == 1 and result.selection.skipped == 4


def test_the_row_budget_keeps_the_newest_rows() -> None:
    policy = SelectionPolicy(configurations=CONFIGURATIONS[:1], metric="roc_auc", max_rows=200)
    result = train_model(CONTRACT, interaction_records(), TrainingConfig(selection=policy, threads=1))
    assert result.selection is not None
    assert result.selection.fit_rows + result.selection.validation_rows == 200


def test_a_lower_is_better_metric_picks_the_smallest() -> None:
    policy = SelectionPolicy(configurations=CONFIGURATIONS, metric="log_loss")
    result = train_model(CONTRACT, interaction_records(), TrainingConfig(selection=policy, threads=1))
    assert result.selection is not None
    losses = [t.metrics["log_loss"] for t in result.selection.trials]
    assert result.selection.champion.metrics["log_loss"] == min(losses)


def test_the_catalog_bounds_the_grid_and_names_known_metrics() -> None:
    with pytest.raises(ValidationError, match="hold 5 trials, more than max_trials 4"):
        SelectionPolicy(configurations=CONFIGURATIONS, metric="roc_auc", max_trials=4)
    with pytest.raises(ValidationError, match="did you mean 'average_precision'"):
        SelectionPolicy(configurations=CONFIGURATIONS, metric="pr_auc")
    with pytest.raises(ValidationError, match="no value to try for C"):
        Configuration(family="logistic_regression", hyperparameters={"C": []})
    with pytest.raises(ValidationError):
        Configuration(family="xgboost")  # type: ignore[arg-type]


def test_a_metric_no_trial_reports_is_an_error() -> None:
    policy = SelectionPolicy(configurations=CONFIGURATIONS[:1], metric="rmse")  # a regression metric
    with pytest.raises(TrainingDataError, match="no trial could be measured on rmse"):
        train_model(CONTRACT, linear_records(), TrainingConfig(selection=policy, threads=1))
