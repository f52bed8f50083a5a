"""The model catalog: ``schemas/models/<model>.yaml`` says, per model, which dataset contract it learns,
how it is trained, and which gates a new version must pass before it serves. Trainer and registry both read
it; a new model is a new file, not new code.
"""

from __future__ import annotations

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


class TrainingPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    family: str = Field(
        "logistic_regression", description="logistic_regression | random_forest | hist_gradient_boosting"
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

    def gated_metrics(self) -> list[str]:
        """Every metric a gate names: bounds, tolerances and the fairness metric, in that order, once each."""
        names = [*self.metrics, *self.regression_tolerance, *self.degradation_tolerance]
        if self.fairness_metric is not None:
            names.append(self.fairness_metric)
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

    Errors: the contract is another one, or a gate names a metric the trainer does not compute for the
    contract's task. Warnings: gates that a trivial model passes when one class is rare.
    """
    if contract.schema_id != spec.contract:
        raise ValueError(f"{spec.model}: learns {spec.contract}, not {contract.schema_id}")
    task = contract.label.task
    try:
        check_metric_names(spec.gates.gated_metrics(), task)
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
