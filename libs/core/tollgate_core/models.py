"""The model catalog: ``schemas/models/<model>.yaml`` says, per model, which dataset contract it learns,
how it is trained, and which gates a new version must pass before it serves. Trainer and registry both read
it; a new model is a new file, not new code.
"""

from __future__ import annotations

import itertools
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tollgate_core.contracts import DatasetContract
from tollgate_core.metrics import UnknownMetricError, check_metric_names, imbalance_warning
from tollgate_core.paths import schemas_dir
from tollgate_core.thresholds import ThresholdPolicy


class Bound(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min: float | None = None
    max: float | None = None


ModelFamily = Literal["logistic_regression", "random_forest", "hist_gradient_boosting"]
LINEAR_FAMILY: ModelFamily = "logistic_regression"


class Configuration(BaseModel):
    """One model family and a grid of hyperparameter values to try with it."""

    model_config = ConfigDict(extra="forbid")

    family: ModelFamily
    hyperparameters: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Per hyperparameter, the values to try; the trials are every combination (the grid). "
        "Hyperparameters not named keep the family's defaults.",
    )

    @model_validator(mode="after")
    def _values(self) -> Configuration:
        empty = sorted(name for name, values in self.hyperparameters.items() if not values)
        if empty:
            raise ValueError(f"{self.family}: no value to try for {', '.join(empty)}")
        return self

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of the listed values, hyperparameters in name order (one trial each)."""
        names = sorted(self.hyperparameters)
        return [
            dict(zip(names, values, strict=True))
            for values in itertools.product(*(self.hyperparameters[n] for n in names))
        ]


class SelectionPolicy(BaseModel):
    """Champion selection: train every configuration on the older training rows, measure each on the newest
    ones (a validation split; the holdout stays untouched), and train the best as the run's model."""

    model_config = ConfigDict(extra="forbid")

    configurations: list[Configuration] = Field(min_length=1)
    metric: str = Field(description="The metric that picks the champion (its direction from the catalog).")
    max_trials: int = Field(24, ge=1, le=200, description="The grid may hold at most this many trials.")
    max_seconds: float = Field(
        600.0, gt=0, description="Time budget: no trial starts after this many seconds (one always runs)."
    )
    max_rows: int = Field(
        50_000, ge=20, description="Row budget: trials fit and measure on at most the newest this many rows."
    )
    validation_fraction: float = Field(0.2, gt=0, lt=1, description="Newest share of those rows measured.")

    @model_validator(mode="after")
    def _bounded(self) -> SelectionPolicy:
        check_metric_names([self.metric])
        size = self.trial_count()
        if size > self.max_trials:
            raise ValueError(f"the configurations hold {size} trials, more than max_trials {self.max_trials}")
        return self

    def trial_count(self) -> int:
        return sum(len(c.grid()) for c in self.configurations)


class SophisticationGate(BaseModel):
    """The cost of sophistication: a model must beat simple models trained on the same rows."""

    model_config = ConfigDict(extra="forbid")

    metric: str = Field(description="Holdout metric compared.")
    margin: float = Field(
        0.0,
        ge=0,
        description="How much better than each baseline the candidate must be: the majority class (or the "
        "mean) always, and a linear model when the candidate is not linear itself.",
    )


class TrainingPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    family: ModelFamily = Field(
        "logistic_regression", description="The family trained when no selection is configured."
    )
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    seed: int = 42
    min_rows: int = Field(500, description="Labeled rows needed before the first training run.")
    retrain_after_new_rows: int = Field(
        2000, description="Train again once this many new labeled rows arrived."
    )
    schedule_seconds: int = Field(0, description="Train at least this often (0 = no schedule).")
    debounce_seconds: float = Field(5.0, description="Triggers within this window start one training run.")
    holdout_fraction: float = Field(0.2, gt=0, lt=1, description="Newest share of rows kept for evaluation.")
    max_rows: int = Field(200_000, description="Train on at most the newest this many rows.")
    parity_tolerance: float = Field(1e-5, description="Max |p_onnx - p_sklearn| allowed.")
    parity_label_agreement: float = Field(1.0, description="Share of identical labels required.")
    decision_threshold: ThresholdPolicy | None = Field(
        None,
        description="Binary classifiers: the probability of the positive class from which the decision is "
        "positive, fixed or chosen by a rule on a validation split (tollgate_core.thresholds). Unset: 0.5.",
    )
    selection: SelectionPolicy | None = Field(
        None, description="Champion selection over several configurations (unset: train `family` alone)."
    )


class Gates(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metrics: dict[str, Bound] = Field(
        default_factory=dict, description="Absolute thresholds on holdout metrics."
    )
    regression_tolerance: dict[str, float] = Field(
        default_factory=dict,
        description="Per metric: worst allowed drop against the current production version (sudden drop).",
    )
    best_of_last: int = Field(5, ge=1, description="K for the slow-degradation gate.")
    degradation_tolerance: dict[str, float] = Field(
        default_factory=dict,
        description="Per metric: worst allowed drop against the best of the last K versions.",
    )
    fairness_metric: str | None = Field(None, description="Metric compared across segments.")
    fairness_max_gap: float | None = Field(None, ge=0)
    require_parity: bool = True
    cost_of_sophistication: SophisticationGate | None = Field(
        None, description="Refuse a version that does not beat simple baselines trained on the same rows."
    )

    def gated_metrics(self) -> list[str]:
        """Every metric a gate names: bounds, tolerances, the fairness metric and the baseline comparison, in
        that order, once each."""
        names = [*self.metrics, *self.regression_tolerance, *self.degradation_tolerance]
        if self.fairness_metric is not None:
            names.append(self.fairness_metric)
        if self.cost_of_sophistication is not None:
            names.append(self.cost_of_sophistication.metric)
        return list(dict.fromkeys(names))

    @model_validator(mode="after")
    def _known_metrics(self) -> Gates:
        # Gates on metrics the trainer never computes would refuse every version (tollgate_core.metrics).
        check_metric_names(self.gated_metrics())
        return self


class Rollout(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["canary", "approval"] = Field(
        "canary", description="canary: production after a healthy canary period; approval: a person decides."
    )
    canary_weight: float = Field(0.1, ge=0, le=1, description="Share of traffic the staging version gets.")
    canary_seconds: float = Field(60.0, ge=0, description="Canary period before automatic promotion.")
    shadow: bool = Field(
        False, description="Score staging in shadow (logged, never returned) instead of canary."
    )


RiskTier = Literal["low", "medium", "high"]
# What each risk tier requires before a version serves in production (the registry enforces it).
TIER_APPROVALS: dict[str, int] = {"low": 0, "medium": 1, "high": 2}
TIER_RULES: dict[str, str] = {
    "low": "automatic: the canary period (or a manual promotion or approval by an approver)",
    "medium": "one approver",
    "high": "two distinct approvers, neither of whom asked for the training run",
}


class ExplanationPolicy(BaseModel):
    """Per-decision explanations written with every inference-log event of the model."""

    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(
        3,
        ge=1,
        le=20,
        description="Reason codes logged per decision: the largest contributions by magnitude.",
    )


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(pattern=r"^[a-z][a-z0-9-]*[a-z0-9]$")
    description: str = ""
    contract: str = Field(description="Dataset contract schema id, e.g. credit-default.v1.")
    training: TrainingPolicy = Field(default_factory=TrainingPolicy)
    gates: Gates = Field(default_factory=Gates)
    rollout: Rollout = Field(default_factory=Rollout)
    risk_tier: RiskTier = Field(
        "low",
        description="What a promotion to production needs: low = automatic canary (as the rollout says), "
        "medium = one approver, high = two distinct approvers who did not ask for the training run. "
        "medium and high need rollout mode approval.",
    )
    explanations: ExplanationPolicy | None = Field(
        None,
        description="Write the top reason codes (feature attributions) of every decision with its "
        "inference-log event; absent: none are logged (a client may still ask for them with explain).",
    )

    @model_validator(mode="after")
    def _fairness(self) -> ModelSpec:
        if (self.gates.fairness_metric is None) != (self.gates.fairness_max_gap is None):
            raise ValueError(f"{self.model}: fairness_metric and fairness_max_gap go together")
        return self

    @model_validator(mode="after")
    def _tier_needs_approval(self) -> ModelSpec:
        if self.risk_tier != "low" and self.rollout.mode != "approval":
            raise ValueError(
                f"{self.model}: risk_tier {self.risk_tier} needs rollout mode approval "
                f"({TIER_RULES[self.risk_tier]}), not {self.rollout.mode}"
            )
        return self

    @property
    def approvals_required(self) -> int:
        return TIER_APPROVALS[self.risk_tier]


def check_model(spec: ModelSpec, contract: DatasetContract) -> list[str]:
    """Check a catalog entry against its dataset contract; return warnings, raise on errors.

    Errors: the contract is another one, or a gate (or the selection) names a metric the trainer does not
    compute for the contract's task. Warnings: gates that a trivial model passes when one class is rare.
    """
    if contract.schema_id != spec.contract:
        raise ValueError(f"{spec.model}: learns {spec.contract}, not {contract.schema_id}")
    task = contract.label.task
    selection = spec.training.selection
    try:
        check_metric_names(spec.gates.gated_metrics(), task)
        if selection is not None:
            check_metric_names([selection.metric], task)
    except UnknownMetricError as exc:
        raise ValueError(f"{spec.model}: {exc}") from None
    warning = imbalance_warning(spec.gates.metrics, task)
    return [f"{spec.model}: {warning}"] if warning else []


def load_model_spec(path: Path) -> ModelSpec:
    return ModelSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


@cache
def model_catalog(directory: Path | None = None) -> dict[str, ModelSpec]:
    root = directory or schemas_dir() / "models"
    specs = {}
    for path in sorted(root.glob("*.yaml")):
        spec = load_model_spec(path)
        if path.stem != spec.model:
            raise ValueError(f"{path}: file name must be the model name {spec.model!r}")
        specs[spec.model] = spec
    return specs
