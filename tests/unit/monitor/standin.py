"""A stand-in scorer for the monitor's tests: scikit-learn's logistic regression on the numeric features of
synthetic-risk, fitted once on the training sample, so windows can be scored without loading an ONNX model
(input drift moves its scores, as it would a real model's)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import numpy as np

from tollgate_core.contracts import ContractRegistry, DatasetContract
from tollgate_demo.datasets import generate_records

CONTRACT_ID = "synthetic-risk.v1"


TRAINING_SEED = 11
TRAINING_ROWS = 4000


@cache
def contract() -> DatasetContract:
    """The synthetic-risk contract the monitor's tests generate records of."""
    found = ContractRegistry.from_directory().get(CONTRACT_ID)
    assert found is not None
    return found


def _numeric(records: Sequence[Mapping[str, Any]], names: Sequence[str]) -> np.ndarray:
    return np.array([[np.nan if r[n] is None else r[n] for n in names] for r in records], dtype=np.float64)


@cache
def _stand_in() -> tuple[tuple[str, ...], np.ndarray, np.ndarray, Any]:
    from sklearn.linear_model import LogisticRegression

    found = contract()
    names = tuple(f.name for f in found.features if f.type.value in ("number", "integer"))
    records = generate_records(found, TRAINING_ROWS, seed=TRAINING_SEED)
    x = _numeric(records, names)
    mean, std = np.nanmean(x, axis=0), np.nanstd(x, axis=0) + 1e-9
    z = np.nan_to_num((x - mean) / std)
    y = np.array([bool(r[found.label.name]) for r in records])
    return names, mean, std, LogisticRegression(max_iter=500).fit(z, y)


def stand_in_scores(records: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Positive-class probabilities of the stand-in scorer (input drift moves them, as with a real model)."""
    names, mean, std, model = _stand_in()
    z = np.nan_to_num((_numeric(records, names) - mean) / std)
    return np.asarray(model.predict_proba(z)[:, 1], dtype=np.float64)
