"""Global feature importance of a version, measured on its holdout from the ONNX model alone.

Permutation importance (Breiman 2001; Fisher, Rudin and Dominici 2019), model-agnostic, so a model
submitted as ONNX is measured exactly like a trained one: the holdout rows are scored as they are (the
``baseline`` loss), then, for each contract feature, ``repeats`` times with that feature's column shuffled
among the rows; the mean increase of the loss is the feature's importance and its standard deviation over
the repeats its spread. The loss is the log loss of the probabilities (classifiers, whatever the number of
classes, independent of the decision threshold) or the RMSE of the predictions (regressors).

A feature is one column of the model's input (``tollgate_trainer.features.FeatureLayout``), whatever the
graph does with it, so a category's one-hot columns inside the graph are shuffled, and counted, together.

The cost is bounded by :class:`ImportanceSettings` (``TOLLGATE_TRAINER_IMPORTANCE_ROWS``,
``TOLLGATE_TRAINER_IMPORTANCE_REPEATS``): at most ``rows`` holdout rows (a seeded sample of a larger
holdout), so ``1 + features x repeats`` runs of at most ``rows`` rows each, one onnxruntime run per feature.
The shuffles come from a fixed seed: the same model and rows give the same importances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tollgate_core.lifecycle import FeatureImportance, FeatureImportanceEntry
from tollgate_trainer.export import onnx_session
from tollgate_trainer.features import CATEGORY_INPUT, NUMERIC_INPUT, FeatureLayout
from tollgate_trainer.settings import IMPORTANCE_REPEATS, IMPORTANCE_ROWS

PROBABILITY_FLOOR = 1e-15  # log loss of a probability of 0: clipped, as scikit-learn does


@dataclass(frozen=True, slots=True)
class ImportanceSettings:
    rows: int = IMPORTANCE_ROWS
    repeats: int = IMPORTANCE_REPEATS
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rows < 2 or self.repeats < 1:
            raise ValueError("permutation importance needs at least 2 rows and 1 repeat")


DEFAULT_SETTINGS = ImportanceSettings()


def permutation_importance(
    onnx_bytes: bytes,
    layout: FeatureLayout,
    x_holdout: pd.DataFrame,
    y_holdout: np.ndarray,
    task: str,
    settings: ImportanceSettings = DEFAULT_SETTINGS,
) -> FeatureImportance | None:
    """Each contract feature's permutation importance for the ONNX model on the holdout (model frame
    ``x_holdout`` and its encoded labels ``y_holdout``: class indices, or values); None for a holdout of
    fewer than two rows, where shuffling measures nothing."""
    rng = np.random.default_rng(settings.seed)
    n = len(x_holdout)
    if n < 2:
        return None
    if n > settings.rows:
        keep = np.sort(rng.choice(n, size=settings.rows, replace=False))
        x_holdout, y_holdout = x_holdout.iloc[keep], y_holdout[keep]
        n = settings.rows
    session = onnx_session(onnx_bytes)
    output = "probabilities" if task == "classification" else "prediction"
    feeds = layout.onnx_inputs(x_holdout)

    def loss(out: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The loss of each block of ``n`` rows in ``out`` (one block per repeat)."""
        if task == "classification":
            p = np.take_along_axis(np.asarray(out, dtype=np.float64), y[:, None].astype(np.int64), axis=1)
            per_row = -np.log(np.clip(p[:, 0], PROBABILITY_FLOOR, 1.0))
            means: np.ndarray = per_row.reshape(-1, n).mean(axis=1)
            return means
        error = np.asarray(out, dtype=np.float64).reshape(-1) - y.astype(np.float64)
        rmse: np.ndarray = np.sqrt((error.reshape(-1, n) ** 2).mean(axis=1))
        return rmse

    (scored,) = session.run([output], feeds)
    baseline = float(loss(scored, y_holdout)[0])
    repeats = settings.repeats
    tiled_y = np.tile(y_holdout, repeats)
    where = {name: (NUMERIC_INPUT, j) for j, name in enumerate(layout.numeric)} | {
        name: (CATEGORY_INPUT, j) for j, name in enumerate(layout.category)
    }
    entries = []
    # The holdout repeated once per repeat, tiled once; each feature's column is shuffled in it, then put back.
    shuffled = {name: np.tile(array, (repeats, 1)) for name, array in feeds.items()}
    for feature in layout.columns:
        block, column = where[feature]
        original = feeds[block][:, column]
        for r in range(repeats):
            shuffled[block][r * n : (r + 1) * n, column] = original[rng.permutation(n)]
        (out,) = session.run([output], shuffled)
        shuffled[block][:, column] = np.tile(original, repeats)
        increase = loss(out, tiled_y) - baseline
        entries.append(
            FeatureImportanceEntry(
                feature=feature, importance=float(increase.mean()), spread=float(increase.std())
            )
        )
    entries.sort(key=lambda e: -e.importance)
    return FeatureImportance(
        metric="log_loss" if task == "classification" else "rmse",
        baseline=baseline,
        rows=n,
        repeats=repeats,
        seed=settings.seed,
        features=entries,
    )
