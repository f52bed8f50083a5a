"""Out-of-time evaluation: train on the older rows, measure on the newest ones, overall and per segment.

A random split would let a model see the future of the rows it is scored on; production only ever scores
rows newer than its training data, so the holdout is the newest fraction, ordered by the contract's event
time when the data carries it and by arrival order otherwise.

Metrics that a segment cannot define (ROC AUC on a segment with one class) are left out for that segment
rather than reported as NaN, so every number in the result is a real number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    mean_absolute_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
    root_mean_squared_error,
)

from tollgate_core.contracts import DatasetContract
from tollgate_core.reference import category_key
from tollgate_trainer.features import is_missing
from tollgate_trainer.threshold import decide

DEFAULT_HOLDOUT_FRACTION = 0.2
CALIBRATION_BINS = 10
# Metrics compared across segments for the fairness gap (count is context, not a metric to equalise).
_NOT_COMPARED = frozenset({"count"})


@dataclass(frozen=True)
class Split:
    """Row positions (into the labelled frame) of the training rows and of the newest holdout rows."""

    train: np.ndarray
    holdout: np.ndarray
    ordered_by: str = "arrival"


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]
    segment_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    fairness_gap: dict[str, float] = field(default_factory=dict)


def out_of_time_split(
    raw: pd.DataFrame, contract: DatasetContract, holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION
) -> Split:
    """The newest ``holdout_fraction`` of rows as holdout; ties and missing times keep arrival order."""
    if not 0 < holdout_fraction < 1:
        raise ValueError("holdout_fraction must be between 0 and 1")
    n = len(raw)
    n_holdout = max(1, round(n * holdout_fraction))
    if n - n_holdout < 1:
        raise ValueError(f"{n} rows are too few to hold out {holdout_fraction:.0%} and still train")
    ordered_by = "arrival"
    order = np.arange(n)
    if contract.event_time is not None and contract.event_time in raw.columns:
        times = pd.to_datetime(raw[contract.event_time], utc=True, errors="coerce", format="ISO8601")
        if times.notna().any():
            # Rows without a time sort first (treated as oldest); a stable sort keeps arrival order on ties.
            key = times.to_numpy(dtype="datetime64[ns]", na_value=np.datetime64("NaT"))
            key = np.where(np.isnat(key), np.datetime64(0, "ns"), key)
            order = np.argsort(key, kind="stable")
            ordered_by = contract.event_time
    return Split(
        train=np.sort(order[: n - n_holdout]), holdout=np.sort(order[n - n_holdout :]), ordered_by=ordered_by
    )


def classification_metrics(
    y: np.ndarray, proba: np.ndarray, positive_index: int | None, threshold: float | None = None
) -> dict[str, float]:
    """The classification metrics of ``tollgate_core.metrics``: accuracy, balanced accuracy, precision,
    recall, F1, average precision (PR AUC), ROC AUC, log loss, Brier score and expected calibration error.

    Binary: decisions use ``threshold`` on the positive-class probability (the most probable class when
    None); precision, recall, F1, average precision, Brier, ROC AUC and calibration are of the positive class.
    Multi-class: macro precision, recall and F1, one-vs-rest macro average precision and ROC AUC, multi-class
    Brier (mean squared distance to the one-hot label) and calibration of the top class.
    """
    n_classes = proba.shape[1]
    labels = list(range(n_classes))
    pos = 1 if positive_index is None else positive_index
    predicted = decide(proba, pos, threshold if n_classes == 2 else None)
    out = {
        "accuracy": float(accuracy_score(y, predicted)),
        "balanced_accuracy": balanced_accuracy(y, predicted),
        "log_loss": float(log_loss(y, proba, labels=labels)),
        "count": float(len(y)),
    }
    present = np.unique(y)
    if n_classes == 2:
        score = proba[:, pos]
        truth = (y == pos).astype(int)
        decided = (predicted == pos).astype(int)
        out["precision"] = float(precision_score(truth, decided, zero_division=0.0))
        out["recall"] = float(recall_score(truth, decided, zero_division=0.0))
        out["f1"] = float(f1_score(truth, decided, zero_division=0.0))
        out["brier"] = float(brier_score_loss(truth, score))
        out["ece"] = expected_calibration_error(truth, score)
        if len(present) == 2:
            out["roc_auc"] = float(roc_auc_score(truth, score))
            out["average_precision"] = float(average_precision_score(truth, score))
    else:
        macro = {"average": "macro", "labels": labels, "zero_division": 0.0}
        out["precision"] = float(precision_score(y, predicted, **macro))
        out["recall"] = float(recall_score(y, predicted, **macro))
        out["f1"] = float(f1_score(y, predicted, **macro))
        onehot = np.eye(n_classes)[y]
        out["brier"] = float(np.mean(np.sum((proba - onehot) ** 2, axis=1)))
        out["ece"] = expected_calibration_error((predicted == y).astype(int), proba.max(axis=1))
        if len(present) == n_classes:
            out["roc_auc"] = float(roc_auc_score(y, proba, multi_class="ovr", labels=labels))
            out["average_precision"] = float(average_precision_score(onehot, proba, average="macro"))
    return out


def balanced_accuracy(y: np.ndarray, predicted: np.ndarray) -> float:
    """Mean recall over the classes present in ``y`` (sklearn's definition, without its warning on a
    segment that holds one class)."""
    present = np.unique(y)
    if len(present) == 0:
        return 0.0
    return float(np.mean([np.mean(predicted[y == c] == c) for c in present]))


def expected_calibration_error(truth: np.ndarray, score: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Weighted mean gap between predicted probability and observed frequency over equal-width bins."""
    if len(score) == 0:
        return 0.0
    which = np.minimum((score * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            total += float(in_bin.sum()) * abs(float(truth[in_bin].mean()) - float(score[in_bin].mean()))
    return float(total / len(score))


def calibration_bins(
    truth: np.ndarray, score: np.ndarray, bins: int = CALIBRATION_BINS
) -> list[dict[str, float]]:
    """The reliability diagram behind :func:`expected_calibration_error`: per non-empty equal-width bin,
    its bounds, row count, mean score and observed rate (``truth`` is 1 where the scored class is right)."""
    out: list[dict[str, float]] = []
    if len(score) == 0:
        return out
    which = np.minimum((np.asarray(score) * bins).astype(int), bins - 1)
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            out.append(
                {
                    "low": b / bins,
                    "high": (b + 1) / bins,
                    "count": float(in_bin.sum()),
                    "mean_score": float(np.asarray(score)[in_bin].mean()),
                    "observed_rate": float(np.asarray(truth)[in_bin].mean()),
                }
            )
    return out


def holdout_calibration(
    y: np.ndarray, proba: np.ndarray, positive_index: int | None
) -> list[dict[str, float]]:
    """Calibration of a classifier's holdout probabilities: of the positive class for a binary label, of the
    top class otherwise (as :func:`classification_metrics`'s ``ece``)."""
    if proba.ndim != 2 or proba.shape[0] == 0:
        return []
    if proba.shape[1] == 2:
        pos = 1 if positive_index is None else positive_index
        return calibration_bins((y == pos).astype(int), proba[:, pos])
    top = proba.argmax(axis=1)
    return calibration_bins((top == y).astype(int), proba.max(axis=1))


def regression_metrics(y: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    out = {
        "rmse": float(root_mean_squared_error(y, prediction)),
        "mae": float(mean_absolute_error(y, prediction)),
        "count": float(len(y)),
    }
    if len(y) > 1 and np.ptp(y) > 0:
        out["r2"] = float(r2_score(y, prediction))
    return out


def evaluate(
    y: np.ndarray,
    output: np.ndarray,
    task: str,
    positive_index: int | None = None,
    segments: np.ndarray | None = None,
    threshold: float | None = None,
) -> Evaluation:
    """Holdout metrics overall and per segment value, and the max - min gap of each metric across segments.

    ``output`` is the probability matrix (classification) or the predictions (regression); ``segments``
    holds the segment key of each holdout row (see :func:`segment_keys`).
    """

    def measure(mask: slice | np.ndarray) -> dict[str, float]:
        if task == "classification":
            return classification_metrics(y[mask], output[mask], positive_index, threshold)
        return regression_metrics(y[mask], output[mask])

    overall = measure(slice(None))
    if segments is None:
        return Evaluation(metrics=overall)
    per_segment = {str(key): measure(segments == key) for key in sorted(set(segments.tolist()))}
    return Evaluation(metrics=overall, segment_metrics=per_segment, fairness_gap=fairness_gap(per_segment))


def fairness_gap(per_segment: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Max - min of each metric over the segments that define it (at least two are needed)."""
    names = sorted({m for metrics in per_segment.values() for m in metrics} - _NOT_COMPARED)
    gaps: dict[str, float] = {}
    for name in names:
        values = [metrics[name] for metrics in per_segment.values() if name in metrics]
        if len(values) >= 2:
            gaps[name] = float(max(values) - min(values))
    return gaps


def segment_keys(column: pd.Series) -> np.ndarray:
    """Segment values as text keys: booleans as 'true'/'false' (as in reference profiles), null as 'null'."""
    # Nulls have no category key; a pandas object column holds them as None or NaN, so both are checked.
    values = column.to_numpy(dtype=object)
    return np.array(["null" if is_missing(v) else category_key(v) for v in values], dtype=object)
