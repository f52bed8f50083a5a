"""scikit-learn pipelines built from a dataset contract, in a shape that converts exactly to ONNX.

Input signature of every exported model (the scorer builds its arrays from this):

- ``numeric``: ``tensor(double)``, shape ``[N, k]``: the number, integer and boolean features in contract
  order (booleans 1.0 / 0.0, null = NaN). Absent when the contract has no such feature.
- ``category``: ``tensor(string)``, shape ``[N, m]``: the category features in contract order
  (null = ``""``; an unknown value is encoded as all zeros). Absent when the contract has none.

Outputs: classifiers give ``label`` (``tensor(int64)``, ``[N]``, the class index) and ``probabilities``
(``[N, C]``, one column per class in the order of the signature's ``classes``; float for tree models,
double for linear ones); regressors give ``prediction`` (``[N, 1]``). No ZipMap: plain tensors only.

Why two blocks and not one input per feature: measured with onnxruntime 1.31 on one thread, synthetic-risk
(20 features), the same fitted models score one row in about 30 us with two inputs against 45-60 us with
20 inputs (1.5-2x for all three families), and 1.8x faster when building the arrays from a record is
included; at 1000 rows the model dominates and the two forms are within 5%. Two arrays are also simpler
for a server to build than twenty.
``tests/bench/bench_training.py --signatures`` repeats the measurement.

Why double for the numeric block: JSON numbers are doubles, and linear models stay in double end to end,
so their probabilities match scikit-learn's to about 1e-16. Tree models start with a cast to float32,
inside the scikit-learn pipeline as well as in the ONNX graph: scikit-learn's own trees compare float32
values (HistGradientBoosting compares whatever it is given), and the float thresholds in the graph are
chosen so that the same float32 value takes the same branch (skl2onnx does it for forests,
:mod:`tollgate_trainer.export` for boosting). Both sides then walk identical paths, and the only
difference left is float32 summation of leaf values (about 1e-7).

Families: ``logistic_regression`` (LogisticRegression; its regression variant is Ridge, the linear model
of the same kind), ``random_forest`` and ``hist_gradient_boosting`` (classifier or regressor by the
contract's task). Every family gets a fixed ``random_state`` from the training seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tollgate_core.contracts import DatasetContract
from tollgate_core.models import ModelFamily
from tollgate_trainer.features import MISSING_CATEGORY, FeatureLayout

Task = Literal["classification", "regression"]
MODEL_FAMILIES: tuple[ModelFamily, ...] = get_args(ModelFamily)
TREE_FAMILIES: frozenset[str] = frozenset({"random_forest", "hist_gradient_boosting"})

_ESTIMATORS: dict[tuple[str, str], type[BaseEstimator]] = {
    ("logistic_regression", "classification"): LogisticRegression,
    ("logistic_regression", "regression"): Ridge,
    ("random_forest", "classification"): RandomForestClassifier,
    ("random_forest", "regression"): RandomForestRegressor,
    ("hist_gradient_boosting", "classification"): HistGradientBoostingClassifier,
    ("hist_gradient_boosting", "regression"): HistGradientBoostingRegressor,
}

# Defaults chosen for tabular data of 10^3..10^6 rows; a forest is depth-limited so its ONNX artifact stays
# in the tens of megabytes, and boosting does not stop early so that a run depends on the seed only.
DEFAULT_HYPERPARAMETERS: dict[tuple[str, str], dict[str, Any]] = {
    ("logistic_regression", "classification"): {"C": 1.0, "max_iter": 1000},
    ("logistic_regression", "regression"): {"alpha": 1.0},
    ("random_forest", "classification"): {
        "n_estimators": 100,
        "max_depth": 12,
        "min_samples_leaf": 10,
        "n_jobs": -1,
    },
    ("random_forest", "regression"): {
        "n_estimators": 100,
        "max_depth": 12,
        "min_samples_leaf": 10,
        "n_jobs": -1,
    },
    ("hist_gradient_boosting", "classification"): {
        "max_iter": 200,
        "learning_rate": 0.1,
        "max_leaf_nodes": 31,
        "early_stopping": False,
    },
    ("hist_gradient_boosting", "regression"): {
        "max_iter": 200,
        "learning_rate": 0.1,
        "max_leaf_nodes": 31,
        "early_stopping": False,
    },
}


class NumericImputer(SimpleImputer):  # type: ignore[misc]  # scikit-learn ships no type stubs
    """SimpleImputer for the numeric block, exported as ``Where(IsNaN(x), statistics, x)``.

    onnxruntime's ``Imputer`` kernel is float-only, so the stock conversion cannot run in double; this
    subclass only changes how it is exported (see :mod:`tollgate_trainer.export`).
    """


class Float32Cast(TransformerMixin, BaseEstimator):  # type: ignore[misc]  # scikit-learn ships no type stubs
    """Rounds values to float32, as the ONNX graph of a tree model does first.

    With it, scikit-learn's trees see exactly the values the ONNX trees see, so parity holds on every row,
    including rows that sit on a split threshold.
    """

    def fit(self, X: Any, y: Any = None) -> Float32Cast:
        self.n_features_in_ = int(np.shape(X)[1])
        return self

    def transform(self, X: Any) -> np.ndarray:
        return np.asarray(X, dtype=np.float32)


def task_of(contract: DatasetContract) -> Task:
    return contract.label.task


def hyperparameters_for(
    family: ModelFamily, task: Task, overrides: Mapping[str, Any] | None, seed: int
) -> dict[str, Any]:
    """Defaults, then overrides, then the seed: the exact estimator arguments of a run."""
    if (family, task) not in _ESTIMATORS:
        raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(MODEL_FAMILIES)}")
    params = {**DEFAULT_HYPERPARAMETERS[(family, task)], **(overrides or {})}
    params["random_state"] = seed
    return params


def make_estimator(family: ModelFamily, task: Task, params: Mapping[str, Any]) -> BaseEstimator:
    estimator = _ESTIMATORS[(family, task)]()
    try:
        estimator.set_params(**params)
    except ValueError as exc:
        raise ValueError(f"invalid hyperparameters for {family} ({task}): {exc}") from None
    return estimator


def build_pipeline(
    contract: DatasetContract,
    family: ModelFamily,
    hyperparameters: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> Pipeline:
    """An unfitted pipeline for ``contract``; its input is :meth:`FeatureLayout.model_frame`'s frame.

    Columns are selected by position (numeric block first, then categories): skl2onnx maps positions onto
    the ``numeric`` and ``category`` inputs, which is what gives the exported model two inputs.
    """
    task = task_of(contract)
    layout = FeatureLayout.from_contract(contract)
    tree = family in TREE_FAMILIES
    numeric_idx = [i for i, n in enumerate(layout.numeric) if n not in layout.boolean]
    boolean_idx = [i for i, n in enumerate(layout.numeric) if n in layout.boolean]
    category_idx = list(range(len(layout.numeric), len(layout.columns)))

    def numeric_steps(strategy: str, scale: bool) -> list[tuple[str, Any]]:
        steps: list[tuple[str, Any]] = [("float32", Float32Cast())] if tree else []
        steps.append(("impute", NumericImputer(strategy=strategy, keep_empty_features=True)))
        if scale and not tree:
            steps.append(("scale", StandardScaler()))
        return steps

    transformers: list[tuple[str, Any, list[int]]] = []
    if numeric_idx:
        transformers.append(("numeric", Pipeline(numeric_steps("median", scale=True)), numeric_idx))
    if boolean_idx:
        transformers.append(("boolean", Pipeline(numeric_steps("most_frequent", scale=False)), boolean_idx))
    if category_idx:
        category = Pipeline(
            [
                (
                    "impute",
                    SimpleImputer(
                        missing_values=MISSING_CATEGORY, strategy="most_frequent", keep_empty_features=True
                    ),
                ),
                (
                    "onehot",
                    OneHotEncoder(
                        categories=[list(c) for c in layout.categories],
                        handle_unknown="ignore",
                        sparse_output=False,
                    ),
                ),
            ]
        )
        transformers.append(("category", category, category_idx))
    preprocess = ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)
    params = hyperparameters_for(family, task, hyperparameters, seed)
    return Pipeline([("preprocess", preprocess), ("model", make_estimator(family, task, params))])
