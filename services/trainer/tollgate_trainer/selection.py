"""Champion selection and the simple baselines a model must beat.

Selection: every configuration of the catalog's grid (``training.selection``) is fitted on the older rows of
the training split and measured on its newest rows — a validation split, out of time like the holdout, which
stays untouched for the independent evaluation of the model that ships. Trials run in catalog order within
the trial, time and row budgets; each is recorded (parameters, validation metrics, seconds, the digest of its
ONNX export). The best by the selection metric wins; ties go to the earlier trial, so a simpler
configuration listed first is preferred.

Baselines: the majority class (or the mean, for regression) and a linear model, trained on the same training
rows and measured on the same holdout as the candidate. The registry's ``cost of sophistication`` gate
compares them with the candidate (``tollgate_registry.gates``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.dummy import DummyClassifier, DummyRegressor

from tollgate_core.artifacts import sha256_digest
from tollgate_core.contracts import DatasetContract
from tollgate_core.metrics import Direction, direction
from tollgate_core.models import LINEAR_FAMILY, ModelFamily, SelectionPolicy
from tollgate_trainer.evaluate import evaluate, out_of_time_split
from tollgate_trainer.export import export_onnx
from tollgate_trainer.features import LabelEncoding, TrainingDataError
from tollgate_trainer.pipeline import build_pipeline, hyperparameters_for, task_of


@dataclass(frozen=True)
class Trial:
    """One configuration tried: its exact estimator arguments, validation metrics, fit-and-measure time and
    the sha256 of its ONNX export."""

    number: int
    family: ModelFamily
    hyperparameters: dict[str, Any]
    overrides: dict[str, Any]
    metrics: dict[str, float]
    seconds: float
    digest: str


@dataclass(frozen=True)
class Selection:
    """What a selection did: every trial, which won, and how many the budget left out."""

    metric: str
    trials: list[Trial]
    chosen: int
    skipped: int
    fit_rows: int
    validation_rows: int
    budget_seconds: float
    max_rows: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def champion(self) -> Trial:
        return self.trials[self.chosen]


def _better(metric: str, value: float, best: float) -> bool:
    if direction(metric) is Direction.HIGHER_IS_BETTER:
        return value > best
    return value < best


def _output(pipeline: Any, x: pd.DataFrame, task: str) -> np.ndarray:
    return np.asarray(pipeline.predict_proba(x) if task == "classification" else pipeline.predict(x))


def select_configuration(
    contract: DatasetContract,
    raw_train: pd.DataFrame,
    x_train: pd.DataFrame,
    y_train: np.ndarray,
    encoding: LabelEncoding | None,
    policy: SelectionPolicy,
    seed: int,
    threads: int | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Selection:
    """Try every configuration of ``policy`` on a validation split of the training rows; the best wins."""
    task = task_of(contract)
    raw_train = raw_train.reset_index(drop=True)
    x_train = x_train.reset_index(drop=True)
    rows = np.arange(len(raw_train))
    if len(rows) > policy.max_rows:  # the row budget: the newest max_rows rows
        rows = out_of_time_split(raw_train, contract, policy.max_rows / len(rows)).holdout
    inner = out_of_time_split(
        raw_train.iloc[rows].reset_index(drop=True), contract, policy.validation_fraction
    )
    fit_rows, validation_rows = rows[inner.train], rows[inner.holdout]
    y_fit, y_val = y_train[fit_rows], y_train[validation_rows]
    if task == "classification" and len(np.unique(y_fit)) < 2:
        raise TrainingDataError("the rows before the selection's validation split have one class")
    positive = encoding.positive_index if encoding is not None else None

    trials: list[Trial] = []
    start = clock()
    planned = [(c.family, overrides) for c in policy.configurations for overrides in c.grid()]
    if threads is not None:  # a forest's own worker count, as for the run's model (train.train_model)
        planned = [
            (family, {"n_jobs": threads, **o} if family == "random_forest" else o) for family, o in planned
        ]
    for family, overrides in planned:
        if trials and clock() - start >= policy.max_seconds:
            break
        began = clock()
        pipeline = build_pipeline(contract, family, overrides, seed)
        pipeline.fit(x_train.iloc[fit_rows], y_fit)
        measured = evaluate(y_val, _output(pipeline, x_train.iloc[validation_rows], task), task, positive)
        seconds = clock() - began
        trials.append(
            Trial(
                number=len(trials) + 1,
                family=family,
                hyperparameters=hyperparameters_for(family, task, overrides, seed),
                overrides=dict(overrides),
                metrics={k: v for k, v in measured.metrics.items() if math.isfinite(v)},
                seconds=seconds,
                digest=sha256_digest(export_onnx(pipeline, contract, encoding).onnx),
            )
        )
    chosen: int | None = None
    for i, trial in enumerate(trials):
        value = trial.metrics.get(policy.metric)
        if value is None:
            continue
        if chosen is None or _better(policy.metric, value, trials[chosen].metrics[policy.metric]):
            chosen = i
    if chosen is None:
        raise TrainingDataError(f"no trial could be measured on {policy.metric} (validation split)")
    return Selection(
        metric=policy.metric,
        trials=trials,
        chosen=chosen,
        skipped=len(planned) - len(trials),
        fit_rows=len(fit_rows),
        validation_rows=len(validation_rows),
        budget_seconds=policy.max_seconds,
        max_rows=policy.max_rows,
    )


def baseline_metrics(
    contract: DatasetContract,
    family: ModelFamily,
    x_train: pd.DataFrame,
    y_train: np.ndarray,
    x_holdout: pd.DataFrame,
    y_holdout: np.ndarray,
    encoding: LabelEncoding | None,
    seed: int,
    threshold: float | None = None,
) -> dict[str, dict[str, float]]:
    """Holdout metrics of the simple models trained on the candidate's rows: ``majority`` (classification)
    or ``mean`` (regression), and ``linear`` unless the candidate is linear itself."""
    task = task_of(contract)
    positive = encoding.positive_index if encoding is not None else None
    simple: dict[str, Any] = {}
    if task == "classification":
        simple["majority"] = DummyClassifier(strategy="prior").fit(x_train, y_train)
    else:
        simple["mean"] = DummyRegressor(strategy="mean").fit(x_train, y_train)
    if family != LINEAR_FAMILY:
        simple["linear"] = build_pipeline(contract, LINEAR_FAMILY, {}, seed).fit(x_train, y_train)
    result = {}
    for name, model in simple.items():
        metrics = evaluate(
            y_holdout, _output(model, x_holdout, task), task, positive, None, threshold
        ).metrics
        result[name] = {k: v for k, v in metrics.items() if math.isfinite(v)}
    return result
