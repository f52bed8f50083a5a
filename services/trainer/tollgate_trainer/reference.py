"""Build the :class:`~tollgate_core.reference.ReferenceProfile` of a training run.

What goes in, and why:

- ``features`` and ``label``: the raw contract values of the training rows, the data the model learned from.
  Number and integer fields are numeric summaries; category and boolean fields are category summaries
  listing every allowed value (zero shares included, so a monitor can tell "never seen" from "unknown").
- ``prediction``: the model's score on the holdout, not on the training rows: a forest's scores on its own
  training rows are more extreme than on new rows, and a monitor comparing live scores against them would
  raise drift on a healthy model. The score is the positive-class probability (binary), the top-class
  probability (multi-class without a positive class) or the prediction (regression).
- ``segment_metrics`` and ``fairness_gap``: from the holdout evaluation.

Binning rule for ``bin_edges`` (inner edges of equal-frequency bins, quantiles 1/b..(b-1)/b): a value v falls
in bin ``i`` = the number of edges <= v (``numpy.searchsorted(edges, v, side="right")``), so the first
and last bins are open-ended. Repeated edges (discrete data) give empty bins, consistently on both sides.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from tollgate_core.contracts import DatasetContract, FieldSpec, FieldType
from tollgate_core.reference import (
    DEFAULT_BINS,
    QUANTILE_PROBS,
    CategorySummary,
    FieldSummary,
    NumericSummary,
    ReferenceProfile,
    category_key,
)
from tollgate_trainer.evaluate import Evaluation
from tollgate_trainer.features import is_missing


def build_reference_profile(
    contract: DatasetContract,
    train_raw: pd.DataFrame,
    scores: np.ndarray,
    evaluation: Evaluation,
    bins: int = DEFAULT_BINS,
    decision_threshold: float | None = None,
) -> ReferenceProfile:
    """The reference profile of one run: training-row distributions, holdout scores and segment metrics."""
    features: dict[str, FieldSummary] = {
        spec.name: summarize_field(spec, train_raw[spec.name], bins) for spec in contract.features
    }
    label = summarize_field(contract.label, train_raw[contract.label.name], bins)
    return ReferenceProfile(
        contract=contract.schema_id,
        row_count=len(train_raw),
        features=features,
        prediction=summarize_numeric(np.asarray(scores, dtype=np.float64), bins),
        label=label,
        segment_field=contract.segment,
        segment_metrics=evaluation.segment_metrics,
        fairness_gap=evaluation.fairness_gap,
        decision_threshold=decision_threshold,
    )


def summarize_field(spec: FieldSpec, column: pd.Series, bins: int = DEFAULT_BINS) -> FieldSummary:
    if spec.type in (FieldType.NUMBER, FieldType.INTEGER):
        values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        return summarize_numeric(values, bins)
    if spec.type is FieldType.BOOLEAN:
        return summarize_category(column, ("false", "true"))
    if spec.type is FieldType.CATEGORY:
        return summarize_category(column, spec.categories or ())
    raise ValueError(f"field {spec.name!r} of type {spec.type} has no distribution summary")


def summarize_numeric(values: np.ndarray, bins: int = DEFAULT_BINS) -> NumericSummary:
    total = len(values)
    present = values[~np.isnan(values)]
    null_fraction = 1.0 - len(present) / total if total else 0.0
    if len(present) == 0:
        return NumericSummary(
            count=0,
            null_fraction=null_fraction,
            mean=0.0,
            std=0.0,
            min=0.0,
            max=0.0,
            quantiles={str(p): 0.0 for p in QUANTILE_PROBS},
            bin_edges=[0.0] * (bins - 1),
            bin_fractions=[1.0] + [0.0] * (bins - 1),
        )
    quantiles = np.quantile(present, QUANTILE_PROBS)
    edges = np.quantile(present, np.arange(1, bins) / bins)
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=bins)
    return NumericSummary(
        count=len(present),
        null_fraction=null_fraction,
        mean=float(present.mean()),
        std=float(present.std()),
        min=float(present.min()),
        max=float(present.max()),
        quantiles={str(p): float(q) for p, q in zip(QUANTILE_PROBS, quantiles, strict=True)},
        bin_edges=[float(e) for e in edges],
        bin_fractions=[float(c) / len(present) for c in counts],
    )


def summarize_category(column: pd.Series, allowed: Sequence[str]) -> CategorySummary:
    values = column.to_numpy(dtype=object)
    # Nulls have no key (they make up null_fraction); a pandas object column holds them as None or NaN.
    present = [category_key(v) for v in values if not is_missing(v)]
    total = len(values)
    frequencies = dict.fromkeys(allowed, 0.0)
    for key in present:
        frequencies[key] = frequencies.get(key, 0.0) + 1.0
    if present:
        frequencies = {k: v / len(present) for k, v in frequencies.items()}
    return CategorySummary(
        count=len(present),
        null_fraction=1.0 - len(present) / total if total else 0.0,
        frequencies=frequencies,
    )
