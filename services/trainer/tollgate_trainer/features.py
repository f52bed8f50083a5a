"""How contract fields become model inputs, and label values become class indices.

The same layout is used to fit the scikit-learn pipeline, to feed the ONNX model during the parity check and,
through the exported signature, by the scorer. Keeping it in one place is what makes the three agree.

Model input layout (see :mod:`tollgate_trainer.pipeline` for why two blocks):

- ``numeric``: the number, integer and boolean features in contract order, as float64; booleans are
  1.0 / 0.0; a null is NaN.
- ``category``: the category features in contract order, as strings; a null is the empty string ``""``.
  A value outside the contract's list is passed through and encoded as all zeros by the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tollgate_core.contracts import DatasetContract, FieldSpec, FieldType
from tollgate_core.reference import label_key

# ONNX input names; the scorer builds its arrays under these names.
NUMERIC_INPUT = "numeric"
CATEGORY_INPUT = "category"
# What a null category is sent as: ONNX string tensors have no null.
MISSING_CATEGORY = ""

Records = Sequence[Mapping[str, Any]]


class TrainingDataError(ValueError):
    """The training data cannot be used: a missing column, no labelled rows, a single class."""


@dataclass(frozen=True)
class FeatureLayout:
    """Which contract features go into which model input block, in which order."""

    numeric: tuple[str, ...]
    boolean: frozenset[str]
    category: tuple[str, ...]
    categories: tuple[tuple[str, ...], ...]

    @classmethod
    def from_contract(cls, contract: DatasetContract) -> FeatureLayout:
        numeric = tuple(f.name for f in contract.features if f.type is not FieldType.CATEGORY)
        boolean = frozenset(f.name for f in contract.features if f.type is FieldType.BOOLEAN)
        cats = [f for f in contract.features if f.type is FieldType.CATEGORY]
        return cls(
            numeric, boolean, tuple(f.name for f in cats), tuple(tuple(f.categories or ()) for f in cats)
        )

    @property
    def columns(self) -> list[str]:
        """Column order of the model frame: the numeric block, then the category block."""
        return [*self.numeric, *self.category]

    def model_frame(self, raw: pd.DataFrame) -> pd.DataFrame:
        """The scikit-learn pipeline's input, built from a frame of raw contract values."""
        missing = [c for c in self.columns if c not in raw.columns]
        if missing:
            raise TrainingDataError(f"the data has no column for feature(s) {', '.join(missing)}")
        out: dict[str, Any] = {}
        for name in self.numeric:
            out[name] = boolean_values(raw[name]) if name in self.boolean else numeric_values(raw[name])
        for name in self.category:
            out[name] = _as_category(raw[name])
        return pd.DataFrame(out, index=raw.index, columns=self.columns)

    def onnx_inputs(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """The ONNX model's feeds for a model frame; only blocks that have columns are inputs."""
        feeds: dict[str, np.ndarray] = {}
        if self.numeric:
            feeds[NUMERIC_INPUT] = frame[list(self.numeric)].to_numpy(dtype=np.float64)
        if self.category:
            feeds[CATEGORY_INPUT] = frame[list(self.category)].to_numpy(dtype=object)
        return feeds


def numeric_values(column: pd.Series) -> np.ndarray:
    """A number or integer column as float64, null as NaN."""
    return np.asarray(pd.to_numeric(column, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan))


def boolean_values(column: pd.Series) -> np.ndarray:
    """A boolean column as 1.0 / 0.0, null as NaN."""
    values = column.to_numpy(dtype=object)
    out = np.full(len(values), np.nan)
    for i, value in enumerate(values):
        if is_missing(value):
            continue
        out[i] = 1.0 if bool(value) else 0.0
    return out


def _as_category(column: pd.Series) -> np.ndarray:
    values = column.to_numpy(dtype=object)
    return np.array([MISSING_CATEGORY if is_missing(v) else str(v) for v in values], dtype=object)


def is_missing(value: object) -> bool:
    """A null as records and object columns hold it: None, or a float NaN."""
    return value is None or (isinstance(value, float) and np.isnan(value))


def raw_frame(contract: DatasetContract, data: Records | pd.DataFrame) -> pd.DataFrame:
    """Records or a frame as a frame of the contract fields the trainer reads, in arrival order."""
    wanted = [contract.entity_id.name, contract.label.name, *contract.feature_names]
    for extra in (contract.segment, contract.event_time):
        if extra is not None and extra not in wanted:
            wanted.append(extra)
    if isinstance(data, pd.DataFrame):
        missing = [c for c in wanted if c not in data.columns and c != contract.event_time]
        if missing:
            raise TrainingDataError(f"the data has no column for {', '.join(missing)}")
        return data[[c for c in wanted if c in data.columns]].reset_index(drop=True)
    columns = {name: [record.get(name) for record in data] for name in wanted}
    if contract.event_time is not None and all(v is None for v in columns[contract.event_time]):
        del columns[contract.event_time]
    return pd.DataFrame({name: pd.Series(values, dtype=object) for name, values in columns.items()})


@dataclass(frozen=True)
class LabelEncoding:
    """Label values to class indices 0..C-1 (classification), the order of the ONNX probability columns."""

    classes: tuple[str | bool | int, ...]
    positive_index: int | None

    @classmethod
    def fit(cls, label: FieldSpec, values: Sequence[Any], positive_class: str | bool | None) -> LabelEncoding:
        present = [v for v in values if v is not None]
        if label.type is FieldType.BOOLEAN:
            classes: tuple[str | bool | int, ...] = (False, True)
        elif label.type is FieldType.CATEGORY:
            classes = tuple(label.categories or ())
        elif label.type is FieldType.INTEGER:
            classes = tuple(sorted({int(v) for v in present}))
        else:
            raise TrainingDataError(f"a {label.type} label cannot be a classification target")
        positive = None
        if len(classes) == 2:
            positive = classes.index(positive_class) if positive_class in classes else 1
        elif positive_class is not None and positive_class in classes:
            positive = classes.index(positive_class)
        return cls(classes, positive)

    def encode(self, values: Sequence[Any]) -> np.ndarray:
        index = {label_key(c): i for i, c in enumerate(self.classes)}
        try:
            return np.array([index[label_key(v)] for v in values], dtype=np.int64)
        except KeyError as exc:
            raise TrainingDataError(
                f"label value {exc.args[0]!r} is not one of {list(self.classes)}"
            ) from None
