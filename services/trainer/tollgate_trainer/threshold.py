"""Choosing and applying a binary classifier's decision threshold (the rule: ``tollgate_core.thresholds``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import precision_recall_curve

from tollgate_core.thresholds import ThresholdPolicy


class ThresholdError(ValueError):
    """No threshold satisfies the rule on the validation split."""


@dataclass(frozen=True, slots=True)
class ThresholdChoice:
    threshold: float
    rule: str
    target: float | None
    validation_rows: int
    validation_precision: float | None = None
    validation_recall: float | None = None


def decide(proba: np.ndarray, positive: int, threshold: float | None) -> np.ndarray:
    """Label index of each row: the positive class where its probability reaches ``threshold``.

    ``None`` keeps the most probable class (argmax), the behaviour of models without a threshold.
    """
    if threshold is None:
        return np.asarray(proba.argmax(axis=1))
    negative = 1 - positive
    return np.where(proba[:, positive] >= threshold, positive, negative)


def choose_threshold(policy: ThresholdPolicy, truth: np.ndarray, score: np.ndarray) -> ThresholdChoice:
    """Apply ``policy`` to positive-class scores ``score`` of validation rows with 0/1 ``truth``."""
    n = len(truth)
    if policy.rule == "fixed":
        assert policy.value is not None
        return ThresholdChoice(policy.value, policy.rule, policy.value, n)
    if n == 0 or truth.min() == truth.max():
        raise ThresholdError(
            f"the validation split ({n} rows) needs both classes to choose a threshold by {policy.rule}"
        )
    precision, recall, thresholds = precision_recall_curve(truth, score)
    # precision[i], recall[i] belong to thresholds[i]; the last pair (1, 0) has no threshold.
    precision, recall = precision[:-1], recall[:-1]
    if policy.rule == "max_f1":
        with np.errstate(divide="ignore", invalid="ignore"):
            f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        best = int(np.argmax(f1))  # first maximum: the lowest threshold with the best F1
    elif policy.rule == "min_precision":
        assert policy.value is not None
        ok = np.flatnonzero(precision >= policy.value)
        if len(ok) == 0:
            raise ThresholdError(
                f"no threshold reaches precision {policy.value:g} on the validation split "
                f"(best {float(precision.max()):.4f} over {n} rows)"
            )
        best = int(ok[0])  # lowest threshold reaching the precision: the most recall
    else:
        assert policy.value is not None
        ok = np.flatnonzero(recall >= policy.value)
        best = int(ok[-1])  # recall falls as the threshold rises; recall[0] is 1, so ok is never empty
    return ThresholdChoice(
        threshold=float(thresholds[best]),
        rule=policy.rule,
        target=policy.value,
        validation_rows=n,
        validation_precision=float(precision[best]),
        validation_recall=float(recall[best]),
    )
