"""Parity gate: the ONNX model must answer like the scikit-learn pipeline it was exported from.

Rows checked: the whole holdout, plus synthetic rows on the decision boundary, where a small numeric
difference is most likely to flip a label. Each boundary row comes from a pair of holdout rows with different
predicted labels: the numeric block is interpolated between them (the category block is the first row's),
and the interpolation parameter is bisected until the two sides of the label change are a float32 step
apart; both sides are kept. Interpolated integers are not rounded: the gate tests the model, not the contract.
For regression there is no boundary, so pairs are interpolated at random points instead.

Pass iff the largest absolute difference is within ``tolerance`` and the share of rows whose labels agree
is at least ``min_label_agreement``. The compared quantity is the class probabilities for classifiers; for
regressors it is the prediction divided by the standard deviation of the training labels, so the same
tolerance means the same thing whatever the label's unit (the raw difference is recorded as well).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from sklearn.pipeline import Pipeline

from tollgate_trainer.export import onnx_session
from tollgate_trainer.features import FeatureLayout
from tollgate_trainer.threshold import decide

DEFAULT_TOLERANCE = 1e-5
DEFAULT_MIN_LABEL_AGREEMENT = 1.0
DEFAULT_BOUNDARY_PAIRS = 200
# 2**-24 of the distance between the two rows: a float32 step relative to the path, finer is noise.
DEFAULT_BISECTION_STEPS = 24


class ParityResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    passed: bool
    compared: Literal["probabilities", "scaled_prediction"]
    tolerance: float
    min_label_agreement: float
    max_abs_diff: float = Field(description="Largest absolute difference of the compared quantity.")
    max_abs_prediction_diff: float | None = Field(
        None, description="Regression: largest absolute difference of the raw prediction."
    )
    label_agreement: float | None = Field(
        None, description="Share of rows with the same label (classifiers)."
    )
    label_disagreements: int = 0
    rows_checked: int
    holdout_rows: int
    boundary_rows: int


def check_parity(
    pipeline: Pipeline,
    onnx_bytes: bytes,
    layout: FeatureLayout,
    holdout: pd.DataFrame,
    task: str,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    min_label_agreement: float = DEFAULT_MIN_LABEL_AGREEMENT,
    boundary_pairs: int = DEFAULT_BOUNDARY_PAIRS,
    bisection_steps: int = DEFAULT_BISECTION_STEPS,
    label_scale: float = 1.0,
    seed: int = 0,
    decision: Decision | None = None,
) -> ParityResult:
    """Score ``holdout`` (a model frame) and boundary rows with both implementations and compare.

    ``decision`` is the classifier's decision threshold and positive class when the catalog sets one: the
    exported graph decides by it, so the pipeline's labels are taken the same way, and the boundary rows are
    found along that threshold's boundary.
    """
    rng = np.random.default_rng(seed)
    if task == "classification":
        extra = boundary_rows(pipeline, layout, holdout, boundary_pairs, bisection_steps, rng, decision)
    else:
        extra = interpolated_rows(layout, holdout, boundary_pairs, rng)
    rows = pd.concat([holdout, extra], ignore_index=True) if len(extra) else holdout
    session = onnx_session(onnx_bytes)
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, layout.onnx_inputs(rows)), strict=True))
    common: dict[str, Any] = {
        "tolerance": tolerance,
        "min_label_agreement": min_label_agreement,
        "rows_checked": len(rows),
        "holdout_rows": len(holdout),
        "boundary_rows": len(extra),
    }
    if task == "classification":
        diff = _max_abs(outputs["probabilities"], pipeline.predict_proba(rows))
        agree = np.asarray(outputs["label"]).ravel() == _labels(pipeline, rows, decision)
        agreement = float(agree.mean()) if len(agree) else 1.0
        return ParityResult(
            passed=diff <= tolerance and agreement >= min_label_agreement,
            compared="probabilities",
            max_abs_diff=diff,
            label_agreement=agreement,
            label_disagreements=int((~agree).sum()),
            **common,
        )
    raw = _max_abs(np.asarray(outputs["prediction"]).ravel(), pipeline.predict(rows))
    scaled = raw / label_scale if label_scale > 0 else raw
    return ParityResult(
        passed=scaled <= tolerance,
        compared="scaled_prediction",
        max_abs_diff=scaled,
        max_abs_prediction_diff=raw,
        **common,
    )


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    if a.size == 0:
        return 0.0
    diff = np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))
    return float("inf") if np.isnan(diff).any() else float(diff.max())


def _interpolate(layout: FeatureLayout, a: pd.DataFrame, b: pd.DataFrame, t: np.ndarray) -> pd.DataFrame:
    """Rows ``a + t (b - a)`` on the numeric block; categories stay those of ``a``."""
    out = a.reset_index(drop=True).copy()
    if layout.numeric:
        cols = list(layout.numeric)
        start = a[cols].to_numpy(dtype=np.float64)
        end = b[cols].to_numpy(dtype=np.float64)
        out[cols] = start + t[:, None] * (end - start)
    return out


@dataclass(frozen=True, slots=True)
class Decision:
    """A binary classifier's decision rule: positive where ``proba[:, positive] >= threshold``."""

    threshold: float
    positive: int


def _labels(pipeline: Pipeline, rows: pd.DataFrame, decision: Decision | None) -> np.ndarray:
    if decision is None:
        return np.asarray(pipeline.predict(rows))
    return decide(pipeline.predict_proba(rows), decision.positive, decision.threshold)


def boundary_rows(
    pipeline: Pipeline,
    layout: FeatureLayout,
    frame: pd.DataFrame,
    pairs: int,
    steps: int,
    rng: np.random.Generator,
    decision: Decision | None = None,
) -> pd.DataFrame:
    """Rows on both sides of the decision boundary, found by bisection between oppositely labelled rows."""
    if pairs <= 0 or len(frame) < 2 or not layout.numeric:
        return frame.iloc[:0]
    predicted = _labels(pipeline, frame, decision)
    first = rng.choice(len(frame), size=pairs)
    second = np.empty(pairs, dtype=np.int64)
    keep = np.zeros(pairs, dtype=bool)
    for k, i in enumerate(first):
        others = np.flatnonzero(predicted != predicted[i])
        if len(others):
            second[k] = rng.choice(others)
            keep[k] = True
    if not keep.any():
        return frame.iloc[:0]
    a = frame.iloc[first[keep]].reset_index(drop=True)
    b = frame.iloc[second[keep]].reset_index(drop=True)
    start_label = predicted[first[keep]]
    # The far end keeps a's categories; only pairs whose label still changes along the path are used.
    crosses = _labels(pipeline, _interpolate(layout, a, b, np.ones(len(a))), decision) != start_label
    a, b, start_label = (
        a[crosses].reset_index(drop=True),
        b[crosses].reset_index(drop=True),
        start_label[crosses],
    )
    if len(a) == 0:
        return frame.iloc[:0]
    low, high = np.zeros(len(a)), np.ones(len(a))
    for _ in range(steps):
        mid = (low + high) / 2
        same = _labels(pipeline, _interpolate(layout, a, b, mid), decision) == start_label
        low = np.where(same, mid, low)
        high = np.where(same, high, mid)
    return pd.concat([_interpolate(layout, a, b, low), _interpolate(layout, a, b, high)], ignore_index=True)


def interpolated_rows(
    layout: FeatureLayout, frame: pd.DataFrame, count: int, rng: np.random.Generator
) -> pd.DataFrame:
    """Rows at random points between random pairs of rows: coverage between observed points."""
    if count <= 0 or len(frame) < 2 or not layout.numeric:
        return frame.iloc[:0]
    a = frame.iloc[rng.choice(len(frame), size=count)]
    b = frame.iloc[rng.choice(len(frame), size=count)]
    return _interpolate(layout, a, b, rng.random(count))
