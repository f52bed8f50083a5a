"""Live model performance from predictions joined with their late labels, against the holdout metrics.

Metrics are computed from the joined (score, truth) pairs of a window: ROC AUC (exact, from ranks), accuracy
(score >= the version's decision threshold, 0.5 unless the catalog set one) and log loss for binary
classifiers; MAE and RMSE for regressors. Which way each metric is better comes from
``tollgate_core.metrics``, the catalog the trainer's holdout metrics and the registry's gates use. A
metric breaches when it is worse than the candidate's out-of-time holdout value by more than a tolerance:
an absolute drop for ROC AUC and accuracy, a relative rise for the losses (their scale depends on the data).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from tollgate_core.metrics import Direction, direction

LIVE = ("roc_auc", "accuracy", "r2", "log_loss", "mae", "rmse")
HIGHER_IS_BETTER = tuple(m for m in LIVE if direction(m) is Direction.HIGHER_IS_BETTER)
LOWER_IS_BETTER = tuple(m for m in LIVE if direction(m) is Direction.LOWER_IS_BETTER)
CLIP = 1e-15


def classification_metrics(
    scores: np.ndarray, truth: np.ndarray, threshold: float | None = None
) -> dict[str, float]:
    """Binary metrics of positive-class probabilities ``scores`` against 0/1 ``truth``."""
    cut = 0.5 if threshold is None else threshold
    n = len(scores)
    if n == 0:
        return {"count": 0.0}
    p = np.clip(scores, CLIP, 1 - CLIP)
    out = {
        "count": float(n),
        "accuracy": float(np.mean((scores >= cut) == (truth >= 0.5))),
        "log_loss": float(-np.mean(truth * np.log(p) + (1 - truth) * np.log(1 - p))),
        "positive_rate": float(np.mean(truth)),
    }
    positives = int(truth.sum())
    negatives = n - positives
    if positives and negatives:
        ranks = rankdata(scores)
        out["roc_auc"] = float(
            (ranks[truth >= 0.5].sum() - positives * (positives + 1) / 2) / (positives * negatives)
        )
    return out


def regression_metrics(predictions: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    if len(predictions) == 0:
        return {"count": 0.0}
    error = predictions - truth
    return {
        "count": float(len(error)),
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
    }


def live_metrics(
    task: str, scores: np.ndarray, truth: np.ndarray, threshold: float | None = None
) -> dict[str, float]:
    ok = ~(np.isnan(scores) | np.isnan(truth))
    if task == "regression":
        return regression_metrics(scores[ok], truth[ok])
    return classification_metrics(scores[ok], truth[ok], threshold)


def limits(holdout: Mapping[str, float], tolerance: float, relative_tolerance: float) -> dict[str, float]:
    """Per holdout metric, the live value beyond which it breaches."""
    out = {m: holdout[m] - tolerance for m in HIGHER_IS_BETTER if m in holdout}
    out.update({m: holdout[m] * (1 + relative_tolerance) for m in LOWER_IS_BETTER if m in holdout})
    return out


@dataclass(frozen=True)
class Breach:
    metric: str
    live: float
    holdout: float
    limit: float


def breaches(
    live: Mapping[str, float], holdout: Mapping[str, float], tolerance: float, relative_tolerance: float
) -> list[Breach]:
    """Metrics worse than the holdout by more than the tolerance (only metrics present on both sides)."""
    found = []
    for metric, limit in limits(holdout, tolerance, relative_tolerance).items():
        if metric in live:
            value = live[metric]
            worse = (value < limit) if metric in HIGHER_IS_BETTER else (value > limit)
            if worse:
                found.append(Breach(metric, value, holdout[metric], limit))
    return found
