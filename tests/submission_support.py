"""Models built "outside the platform" for the submission tests: scikit-learn pipelines fitted in the test on
the contract's columns and exported with skl2onnx the way the trainer exports (a ``numeric`` double block
and a ``category`` string block in contract order, no ZipMap), plus their skops files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import skops.io
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tollgate_core.contracts import DatasetContract, FieldType


def _frame(contract: DatasetContract, records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Numeric features (booleans as 0/1) then category features, in contract order; nulls as 0 and ''."""
    numeric = [f for f in contract.features if f.type is not FieldType.CATEGORY]
    category = [f for f in contract.features if f.type is FieldType.CATEGORY]
    columns: dict[str, Any] = {}
    for f in numeric:
        columns[f.name] = [0.0 if r.get(f.name) is None else float(r[f.name]) for r in records]
    for f in category:
        columns[f.name] = ["" if r.get(f.name) is None else str(r[f.name]) for r in records]
    return pd.DataFrame(columns)


def outside_model(
    contract: DatasetContract,
    records: Sequence[Mapping[str, Any]],
    *,
    flip_labels: bool = False,
    c: float = 1.0,
) -> tuple[bytes, bytes, Pipeline]:
    """(ONNX bytes, skops bytes, pipeline) of a logistic regression on ``records`` (a binary boolean label;
    ``flip_labels`` learns the opposite label: a model far worse than any baseline)."""
    labelled = [r for r in records if r.get(contract.label.name) is not None]
    x = _frame(contract, labelled)
    y = np.array([int(bool(r[contract.label.name])) for r in labelled])
    if flip_labels:
        y = 1 - y
    numeric = [f.name for f in contract.features if f.type is not FieldType.CATEGORY]
    category = [f for f in contract.features if f.type is FieldType.CATEGORY]
    blocks: list[tuple[str, Any, list[int]]] = []
    if numeric:
        blocks.append(("numeric", StandardScaler(), list(range(len(numeric)))))
    if category:
        blocks.append(
            (
                "category",
                OneHotEncoder(
                    categories=[list(f.categories or ()) for f in category], handle_unknown="ignore"
                ),
                list(range(len(numeric), len(numeric) + len(category))),
            )
        )
    pipeline = Pipeline(
        [
            ("prepare", ColumnTransformer(blocks, sparse_threshold=0.0)),
            ("model", LogisticRegression(C=c, max_iter=1000)),
        ]
    )
    pipeline.fit(x, y)
    initial: list[tuple[str, Any]] = []
    if numeric:
        initial.append(("numeric", DoubleTensorType([None, len(numeric)])))
    if category:
        initial.append(("category", StringTensorType([None, len(category)])))
    onnx_model = convert_sklearn(
        pipeline,
        initial_types=initial,
        options={id(pipeline.steps[-1][1]): {"zipmap": False}},
        target_opset={"": 21, "ai.onnx.ml": 3},
    )
    return onnx_model.SerializeToString(), skops.io.dumps(pipeline), pipeline


def one_input_model(contract: DatasetContract, records: Sequence[Mapping[str, Any]]) -> bytes:
    """A model fed one float tensor ``input`` of the numeric features only: not the contract's inputs."""
    labelled = [r for r in records if r.get(contract.label.name) is not None]
    numeric = [f.name for f in contract.features if f.type is not FieldType.CATEGORY]
    x = np.array([[0.0 if r.get(n) is None else float(r[n]) for n in numeric] for r in labelled])
    y = np.array([int(bool(r[contract.label.name])) for r in labelled])
    model = LogisticRegression(max_iter=1000).fit(x, y)
    converted = convert_sklearn(
        model,
        initial_types=[("input", FloatTensorType([None, len(numeric)]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": 21, "ai.onnx.ml": 3},
    )
    return converted.SerializeToString()
