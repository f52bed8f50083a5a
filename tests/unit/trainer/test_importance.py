"""Global feature importance (tollgate_trainer.importance): permutation importance on the ONNX model.

A generated data set where one feature carries the label, a category carries part of it and another
number is noise: the signal ranks first, the category second (its one-hot columns counted as one contract
feature), the noise near 0; the same seed gives the same importances; the rows measured are bounded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tollgate_core.contracts import DatasetContract
from tollgate_trainer.features import FeatureLayout, LabelEncoding, raw_frame
from tollgate_trainer.importance import ImportanceSettings, permutation_importance
from tollgate_trainer.train import TrainingConfig, TrainingResult, train_model


def contract(task: str) -> DatasetContract:
    label = (
        {"name": "bad", "type": "boolean", "task": "classification", "positive_class": True}
        if task == "classification"
        else {"name": "amount", "type": "number", "task": "regression"}
    )
    return DatasetContract.model_validate(
        {
            "contract": f"importance-{task}",
            "version": 1,
            "entity_id": {"name": "id", "type": "string"},
            "label": label,
            "features": [
                {"name": "noise", "type": "number"},
                {"name": "colour", "type": "category", "categories": ["red", "green", "blue"]},
                {"name": "signal", "type": "number"},
            ],
        }
    )


def records(task: str, n: int = 1500, seed: int = 7) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    signal, noise = rng.normal(size=n), rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], size=n)
    effect = np.select([colour == "red", colour == "green"], [0.8, 0.0], -0.8)
    value = 3.0 * signal + effect + rng.normal(scale=0.3, size=n)
    label: list[Any] = (value > 0).tolist() if task == "classification" else (value * 10 + 50).tolist()
    name = "bad" if task == "classification" else "amount"
    return [
        {
            "id": f"r{i}",
            "noise": float(noise[i]),
            "colour": str(colour[i]),
            "signal": float(signal[i]),
            name: label[i],
        }
        for i in range(n)
    ]


_TRAINED: dict[str, TrainingResult] = {}


def trained(task: str) -> TrainingResult:
    if task not in _TRAINED:
        _TRAINED[task] = train_model(
            contract(task), records(task), TrainingConfig(family="logistic_regression", threads=1)
        )
    return _TRAINED[task]


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_the_signal_ranks_first_the_category_second_and_the_noise_is_near_zero(task: str) -> None:
    importance = trained(task).feature_importance
    assert importance is not None
    assert importance.metric == ("log_loss" if task == "classification" else "rmse")
    # One entry per contract feature: the category's one-hot columns are one feature.
    assert [e.feature for e in importance.features] == ["signal", "colour", "noise"]
    signal, colour, noise = importance.features
    assert signal.importance > 5 * colour.importance > 0
    assert abs(noise.importance) < 0.05 * signal.importance
    assert all(e.spread >= 0 for e in importance.features) and signal.spread < signal.importance
    assert importance.repeats == 5 and importance.rows == 300 and importance.baseline > 0


def test_the_same_seed_gives_the_same_importances_and_another_seed_other_shuffles() -> None:
    result = trained("classification")
    c = contract("classification")
    rows = records("classification", n=600, seed=11)
    raw = raw_frame(c, rows)
    layout = FeatureLayout.from_contract(c)
    labels = raw["bad"].tolist()
    y = LabelEncoding.fit(c.label, labels, c.label.positive_class).encode(labels)
    x = layout.model_frame(raw)

    def measure(seed: int, rows_measured: int = 2000) -> Any:
        settings = ImportanceSettings(rows=rows_measured, repeats=3, seed=seed)
        return permutation_importance(result.onnx, layout, x, y, "classification", settings)

    first, again, other = measure(0), measure(0), measure(1)
    assert first == again
    assert [e.importance for e in first.features] != [e.importance for e in other.features]
    assert first.features[0].feature == other.features[0].feature == "signal"
    bounded = measure(0, rows_measured=100)
    assert bounded.rows == 100 and bounded.baseline != first.baseline  # a seeded sample of 100 rows
    assert measure(0, rows_measured=100) == bounded


def test_a_holdout_of_one_row_is_not_measured() -> None:
    result = trained("classification")
    c = contract("classification")
    raw = raw_frame(c, records("classification", n=1))
    layout = FeatureLayout.from_contract(c)
    y = np.asarray([1 if raw["bad"].iloc[0] else 0])
    assert permutation_importance(result.onnx, layout, layout.model_frame(raw), y, "classification") is None


def test_the_settings_refuse_what_measures_nothing() -> None:
    with pytest.raises(ValueError, match="at least 2 rows and 1 repeat"):
        ImportanceSettings(rows=1)
    with pytest.raises(ValueError, match="at least 2 rows and 1 repeat"):
        ImportanceSettings(repeats=0)
