"""Training reference profile: what the data and the predictions looked like when a model was trained.

The trainer computes it, the registry stores it with the version, the validator uses it for statistical
expectations on incoming records, and the monitor compares live windows against it for drift.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

# Quantile probabilities kept for every numeric field: enough for robust range checks and plots.
QUANTILE_PROBS: tuple[float, ...] = (0.0, 0.001, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999, 1.0)
# Number of equal-frequency bins used for PSI / Jensen-Shannon on numeric fields.
DEFAULT_BINS = 10


class NumericSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["numeric"] = "numeric"
    count: int = Field(ge=0, description="Non-null values seen.")
    null_fraction: float = Field(ge=0, le=1)
    mean: float
    std: float
    min: float
    max: float
    quantiles: dict[str, float] = Field(description="Quantile probability (as text, e.g. '0.99') to value.")
    bin_edges: list[float] = Field(
        description="Inner edges of equal-frequency bins (len = bins - 1); outer bins are open-ended."
    )
    bin_fractions: list[float] = Field(description="Share of non-null values per bin (len = bins).")


class CategorySummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["category"] = "category"
    count: int = Field(ge=0)
    null_fraction: float = Field(ge=0, le=1)
    frequencies: dict[str, float] = Field(description="Category (booleans as 'true'/'false') to share.")


def category_key(value: object) -> str:
    """The key of a non-null category, boolean or segment value in ``frequencies`` and ``segment_metrics``:
    booleans (Python or numpy) as 'true' / 'false', any other value as ``str(value)``.

    The trainer writes profiles with it and the monitor looks live values up with it, so both must call this
    one function. A null has no key (profiles count it in ``null_fraction``): callers set nulls aside first.
    """
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    return str(value)


def label_key(value: object) -> str:
    """The key of a class label, as the trainer names classes: :func:`category_key`, but a whole number
    written as an integer (an integer label may arrive as ``1.0`` in JSON; it is class ``'1'``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return category_key(value)


FieldSummary = Annotated[NumericSummary | CategorySummary, Field(discriminator="kind")]


class ReferenceProfile(BaseModel):
    """Per-feature distributions, the prediction distribution and per-segment metrics of one training run."""

    model_config = ConfigDict(extra="forbid")

    contract: str = Field(description="Dataset contract schema id, e.g. credit-default.v1.")
    row_count: int = Field(ge=0)
    features: dict[str, FieldSummary]
    prediction: NumericSummary = Field(
        description="Distribution of the model's score (positive-class probability, or the regression output)."
    )
    label: FieldSummary | None = None
    segment_field: str | None = None
    segment_metrics: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Segment value to metric name to value, on the holdout."
    )
    fairness_gap: dict[str, float] = Field(
        default_factory=dict, description="Metric name to (max - min) across segments."
    )
    decision_threshold: float | None = Field(
        None,
        description="Binary classifiers: the positive-class probability from which the version decides "
        "positive (the catalog's decision_threshold); None: 0.5. The monitor's live metrics decide the same way.",
    )
