"""The explanation reference an artifact carries in its ONNX metadata (``tollgate.explanation``).

The scorer explains single decisions without scikit-learn (:mod:`tollgate_scorer.explain`); what it cannot
read from the graph itself is the training reference, so the trainer writes it here, from the training
rows, next to the serving signature:

- ``reference``: one point in the model's raw input layout, per input block: the mean of each numeric
  column over the training rows (nulls left out, as in the reference profile's feature means; booleans are
  1.0 / 0.0, so their mean is the share of true) and the most frequent value of each category column. The
  attributions of a tree model are measured against this point.
- ``linear`` (linear families only): the preprocessed input of the model's linear layer, described column
  by column: ``columns`` names the contract feature each column comes from (a one-hot category gives
  several columns), ``input_mean`` is the mean of the column over the training rows after the pipeline's
  preprocessing (imputation, scaling, one-hot). Attributions of a linear model are exact:
  coefficient x (x - input_mean) per column, summed per feature.

Only aggregates are stored, never a training row: an artifact may be copied where the data may not go.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from tollgate_trainer.features import CATEGORY_INPUT, MISSING_CATEGORY, NUMERIC_INPUT, FeatureLayout

EXPLANATION_METADATA_KEY = "tollgate.explanation"
LINEAR_FAMILIES = frozenset({"logistic_regression"})


def explanation_spec(
    pipeline: Pipeline, layout: FeatureLayout, x_train: pd.DataFrame, family: str
) -> dict[str, Any]:
    """The reference point (and, for a linear family, its preprocessed columns and their means)."""
    inputs: dict[str, list[Any]] = {}
    if layout.numeric:
        block = x_train[list(layout.numeric)].to_numpy(dtype=np.float64)
        inputs[NUMERIC_INPUT] = [_mean(block[:, j]) for j in range(block.shape[1])]
    if layout.category:
        inputs[CATEGORY_INPUT] = [_mode(x_train[name], cats) for name, cats in _categories(layout)]
    spec: dict[str, Any] = {"reference": inputs}
    if family in LINEAR_FAMILIES:
        preprocess = pipeline.steps[0][1]
        transformed = np.asarray(preprocess.transform(x_train), dtype=np.float64)
        spec["linear"] = {
            "columns": preprocessed_columns(pipeline, layout),
            "input_mean": [float(v) for v in transformed.mean(axis=0)],
        }
    return spec


def spec_json(spec: dict[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), allow_nan=False)


def preprocessed_columns(pipeline: Pipeline, layout: FeatureLayout) -> list[str]:
    """The contract feature of every column the pipeline's preprocessing puts out, in output order."""
    preprocess = pipeline.steps[0][1]
    width = sum(s.stop - s.start for s in preprocess.output_indices_.values())
    names: list[str] = [""] * width
    columns = layout.columns
    for name, transformer, indices in preprocess.transformers_:
        if name == "remainder" or transformer == "drop":
            continue
        out = preprocess.output_indices_[name]
        if out.stop == out.start:
            continue
        steps = dict(transformer.steps) if isinstance(transformer, Pipeline) else {}
        onehot = steps.get("onehot")
        if onehot is not None:
            features = [columns[i] for i, cats in zip(indices, onehot.categories_, strict=True) for _ in cats]
        else:
            features = [columns[i] for i in indices]
        names[out] = features
    if any(not n for n in names):
        raise ValueError("the preprocessing puts out a column that comes from no contract feature")
    return names


def _categories(layout: FeatureLayout) -> list[tuple[str, tuple[str, ...]]]:
    return list(zip(layout.category, layout.categories, strict=True))


def _mean(column: np.ndarray) -> float | None:
    present = column[~np.isnan(column)]
    if len(present) == 0:
        return None
    value = float(present.mean())
    return value if math.isfinite(value) else None


def _mode(column: pd.Series, allowed: tuple[str, ...]) -> str:
    """The most frequent present value; ties go to the first in the contract's order."""
    values = [str(v) for v in column.tolist() if v is not None and str(v) != MISSING_CATEGORY]
    if not values:
        return MISSING_CATEGORY
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    order = {c: i for i, c in enumerate(allowed)}
    return min(counts, key=lambda v: (-counts[v], order.get(v, len(order)), v))
