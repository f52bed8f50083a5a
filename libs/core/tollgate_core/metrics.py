"""The holdout metrics the trainer computes, per task, and which way each is better.

One source of truth for three readers: the trainer reports exactly these metrics (a unit test holds it to
that), the model catalog accepts gates only on them (:func:`check_gates`, run when a catalog entry is
loaded or checked), and the registry's gates and the monitor's live limits take their directions from here.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

Task = Literal["classification", "regression"]


class Direction(StrEnum):
    HIGHER_IS_BETTER = "higher"
    LOWER_IS_BETTER = "lower"


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    task: Task
    direction: Direction
    description: str
    # Meaningful when one class is rare (accuracy is not: "always the majority class" scores high).
    fits_imbalance: bool = False


_HIGH, _LOW = Direction.HIGHER_IS_BETTER, Direction.LOWER_IS_BETTER

METRICS: Mapping[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", "classification", _HIGH, "share of correct decisions"),
        Metric(
            "balanced_accuracy",
            "classification",
            _HIGH,
            "mean recall over the classes",
            fits_imbalance=True,
        ),
        Metric("precision", "classification", _HIGH, "positive class (binary) or macro", fits_imbalance=True),
        Metric("recall", "classification", _HIGH, "positive class (binary) or macro", fits_imbalance=True),
        Metric("f1", "classification", _HIGH, "positive class (binary) or macro", fits_imbalance=True),
        Metric(
            "average_precision",
            "classification",
            _HIGH,
            "area under the precision-recall curve (PR AUC), positive class or macro one-vs-rest",
            fits_imbalance=True,
        ),
        Metric(
            "roc_auc",
            "classification",
            _HIGH,
            "ROC AUC, one-vs-rest macro for several classes",
            fits_imbalance=True,
        ),
        Metric("log_loss", "classification", _LOW, "cross-entropy of the class probabilities"),
        Metric("brier", "classification", _LOW, "mean squared error of the probabilities"),
        Metric("ece", "classification", _LOW, "expected calibration error over 10 equal-width bins"),
        Metric("rmse", "regression", _LOW, "root mean squared error"),
        Metric("mae", "regression", _LOW, "mean absolute error"),
        Metric("r2", "regression", _HIGH, "coefficient of determination"),
    )
}

# Reported with the metrics but never gated on: context, not quality.
CONTEXT = frozenset({"count"})


class UnknownMetricError(ValueError):
    """A gate names a metric the trainer does not compute for the model's task."""


def metrics_for(task: Task) -> frozenset[str]:
    return frozenset(name for name, m in METRICS.items() if m.task == task)


def direction(metric: str) -> Direction:
    try:
        return METRICS[metric].direction
    except KeyError:
        raise UnknownMetricError(unknown_metric(metric, None)) from None


def unknown_metric(metric: str, task: Task | None) -> str:
    """The error for a metric name outside the catalog (or outside the task's metrics), with a suggestion."""
    known = sorted(metrics_for(task)) if task is not None else sorted(METRICS)
    message = f"metric {metric!r} is not computed by the trainer"
    if task is not None:
        message += f" for {task}"
        other = METRICS.get(metric)
        if other is not None:
            message += f" (it is a {other.task} metric)"
    close = difflib.get_close_matches(metric, known, n=1)
    aliases = {"pr_auc": "average_precision", "auc": "roc_auc", "auprc": "average_precision"}
    hint = aliases.get(metric) or (close[0] if close else None)
    if hint is not None and hint in known:
        message += f"; did you mean {hint!r}?"
    return f"{message} (known: {', '.join(known)})"


def check_metric_names(names: Iterable[str], task: Task | None = None) -> None:
    """Raise :class:`UnknownMetricError` naming every metric that is not computed (for ``task`` if given)."""
    allowed = metrics_for(task) if task is not None else frozenset(METRICS)
    bad = [unknown_metric(n, task) for n in dict.fromkeys(names) if n not in allowed]
    if bad:
        raise UnknownMetricError("; ".join(bad))


def imbalance_warning(gated: Iterable[str], task: Task) -> str | None:
    """A warning when a classifier is gated only on metrics that a trivial model passes on rare labels."""
    names = set(gated)
    if task != "classification" or not names:
        return None
    if any(METRICS[n].fits_imbalance for n in names if n in METRICS):
        return None
    return (
        f"gates on {', '.join(sorted(names))} only: unsuitable for imbalanced labels (always predicting the "
        "majority class passes them); add average_precision, balanced_accuracy, f1 or roc_auc"
    )
