"""Payloads of the model-lifecycle topics: ``models.candidates``, ``models.lifecycle``, ``training.requests``.

The trainer publishes a candidate (artifact digest, metrics, parity, reference statistics, lineage); the
registry publishes every state change of a version on ``models.lifecycle`` (the scorer follows it, the audit
trail records it); anyone may ask for training on ``training.requests``.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Any, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from tollgate_core.events import Envelope
from tollgate_core.reference import ReferenceProfile


class Stage(StrEnum):
    CANDIDATE = "candidate"
    STAGING = "staging"
    PRODUCTION = "production"
    ARCHIVED = "archived"
    REJECTED = "rejected"


class OffsetRange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topic: str
    partition: int = Field(ge=0)
    first_offset: int = Field(ge=0)
    last_offset: int = Field(ge=0, description="Inclusive.")


class Lineage(BaseModel):
    """Everything needed to retrain the same model: data, code, parameters, libraries."""

    model_config = ConfigDict(extra="forbid")

    contract: str = Field(description="Dataset contract schema id, e.g. credit-default.v1.")
    contract_digest: str = Field(description="sha256 of the contract as loaded.")
    offsets: list[OffsetRange] = Field(description="Exact training data: offset ranges per partition.")
    row_count: int = Field(ge=0)
    data_hash: str = Field(description="sha256 over the canonical serialisation of the training rows.")
    holdout: dict[str, Any] = Field(default_factory=dict, description="How the out-of-time holdout was cut.")
    family: str
    hyperparameters: dict[str, Any]
    seed: int
    code_version: str = Field(description="Version of the trainer code (git commit or package version).")
    libraries: dict[str, str] = Field(description="Library name to version.")
    trigger: str = Field(description="What started the training run: count, schedule, request.")
    training_request_id: str | None = None
    requested_by: list[str] = Field(
        default_factory=list,
        description="Principals whose training requests this run answered (none for count or schedule "
        "triggers); a high-risk-tier version may not be approved by any of them.",
    )


class Parity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    passed: bool
    max_abs_diff: float
    label_agreement: float = Field(ge=0, le=1)
    rows_checked: int = Field(ge=0)
    tolerance: float
    required_label_agreement: float
    reason: str | None = None


class Artifact(BaseModel):
    model_config = ConfigDict(extra="forbid")

    digest: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="sha256 of the ONNX bytes (hex); the store key."
    )
    location: str = Field(description="Where the artifact store keeps the bytes (URI).")
    size_bytes: int = Field(ge=0)
    format: Literal["onnx"] = "onnx"
    inputs: list[dict[str, Any]] = Field(description="ONNX input signature: name, type, shape per input.")
    outputs: list[dict[str, Any]] = Field(description="ONNX output signature.")


class TrialRecord(BaseModel):
    """One configuration tried by champion selection, measured on the validation split."""

    model_config = ConfigDict(extra="forbid")

    number: int = Field(ge=1)
    family: str
    hyperparameters: dict[str, Any] = Field(description="The exact estimator arguments.")
    metrics: dict[str, float] = Field(description="Validation-split metrics.")
    seconds: float = Field(ge=0, description="Fit and measure time.")
    digest: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the trial's ONNX export.")


class Experiment(BaseModel):
    """The champion selection a training run made: every trial, the winner and the budget."""

    model_config = ConfigDict(extra="forbid")

    metric: str = Field(description="Selection metric (validation split).")
    chosen: int = Field(ge=1, description="Number of the winning trial (its configuration is the version).")
    trials: list[TrialRecord]
    skipped: int = Field(ge=0, description="Trials of the grid left out by the time budget.")
    fit_rows: int = Field(ge=0)
    validation_rows: int = Field(ge=0)
    budget_seconds: float
    max_rows: int = Field(ge=0, description="Row budget of the trials.")


class CalibrationBin(BaseModel):
    """One bin of a reliability diagram: holdout rows whose score fell in ``[low, high)``."""

    model_config = ConfigDict(extra="forbid")

    low: float
    high: float
    count: int = Field(ge=0)
    mean_score: float = Field(description="Mean predicted probability (positive or top class) in the bin.")
    observed_rate: float = Field(description="Share of the bin's rows whose label was that class.")


class FeatureImportanceEntry(BaseModel):
    """One contract feature's global importance (every one-hot column of a category counted together)."""

    model_config = ConfigDict(extra="forbid")

    feature: str = Field(description="The contract feature.")
    importance: float = Field(
        description="Mean increase of the loss when the feature's values are shuffled among the rows "
        "(0: the model does not use it; negative: noise)."
    )
    spread: float = Field(ge=0, description="Standard deviation of that increase over the repeats.")


class FeatureImportance(BaseModel):
    """Global feature importance of a version, measured by the platform on its holdout, model-agnostic.

    Permutation importance on the ONNX model with onnxruntime (so a submitted model is measured like a
    trained one): each contract feature's column of the holdout rows is shuffled ``repeats`` times with a
    fixed seed, and the increase of the loss (``metric``) over ``baseline`` is the feature's importance.
    """

    model_config = ConfigDict(extra="forbid")

    method: Literal["permutation"] = "permutation"
    metric: Literal["log_loss", "rmse"] = Field(
        description="The loss measured: log loss (classifiers) or RMSE (regressors)."
    )
    baseline: float = Field(description="The loss on the rows as they are.")
    rows: int = Field(ge=0, description="Holdout rows measured (a seeded sample when the holdout is larger).")
    repeats: int = Field(ge=1, description="Shuffles per feature.")
    seed: int
    features: list[FeatureImportanceEntry] = Field(
        description="Every contract feature, most important first."
    )


class EvaluationReport(BaseModel):
    """The platform's own evaluation of a candidate on its out-of-time holdout from the training store.

    Every candidate carries one, trained or submitted: the holdout is cut by the trainer (the same split as
    its training runs) and never shown to whoever built the model. Its sha256 (:func:`evaluation_digest`)
    is part of the gate report an approver approves.
    """

    model_config = ConfigDict(extra="forbid")

    evaluated_by: Literal["platform"] = "platform"
    holdout_rows: int = Field(ge=0)
    holdout_fraction: float
    ordered_by: str = Field(description="What ordered the split: the contract's event time, or arrival.")
    data_hash: str = Field(description="sha256 of the labelled rows the split was cut from.")
    metrics: dict[str, float] = Field(description="Holdout metrics.")
    segment_metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    fairness_gap: dict[str, float] = Field(default_factory=dict)
    calibration: list[CalibrationBin] = Field(
        default_factory=list, description="Reliability bins of the holdout scores (classifiers)."
    )
    parity: Parity | None = Field(
        None,
        description="ONNX against its scikit-learn pipeline; None when no pipeline came with a submission.",
    )
    baselines: dict[str, dict[str, float]] = Field(default_factory=dict)
    feature_importance: FeatureImportance | None = Field(
        None,
        description="Global feature importance on the holdout (permutation, on the ONNX model); absent from "
        "reports made before it was measured.",
    )


# Fields added to the report after reports were stored and approved: absent from the canonical form when
# unset, so that a report stored before them keeps the digest its approvals name.
_LATER_FIELDS = ("feature_importance",)


def evaluation_digest(report: EvaluationReport) -> str:
    """sha256 of the report's canonical JSON (sorted keys; a later optional field only when it is set):
    what approvers approve."""
    document = report.model_dump(mode="json")
    for name in _LATER_FIELDS:
        if document.get(name) is None:
            document.pop(name, None)
    canonical = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


class Submission(BaseModel):
    """Who submitted a model built outside the platform, and what they declare about it."""

    model_config = ConfigDict(extra="forbid")

    submission_id: str
    submitted_by: str = Field(description="The API key's principal.")
    notes: str
    code_reference: str | None = Field(None, description="Where the training code is (e.g. repo@commit).")
    parameters: dict[str, Any] = Field(default_factory=dict, description="Declared training parameters.")
    training_data: str | None = Field(None, description="The training data the submitter declares.")
    family: str | None = Field(None, description="Declared model family, e.g. random_forest.")
    onnx_digest: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the ONNX file as submitted.")
    sklearn_digest: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="sha256 of the skops file, when one came."
    )


class CandidatePayload(BaseModel):
    """A trained model version offered for promotion (or, when parity failed, reported as not offered)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Model name, e.g. credit-default-risk.")
    version: str = Field(description="Version id assigned by the trainer (monotonic per model).")
    run_id: str
    task: Literal["classification", "regression"]
    artifact: Artifact
    metrics: dict[str, float] = Field(description="Holdout metrics (out-of-time).")
    parity: Parity
    offered: bool = Field(description="False when the parity gate failed: published for the record only.")
    reference: ReferenceProfile
    lineage: Lineage
    timings_s: dict[str, float] = Field(default_factory=dict)
    trained_at: AwareDatetime
    experiment: Experiment | None = Field(
        None, description="The champion selection that chose this configuration (when the catalog asks)."
    )
    baselines: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Holdout metrics of simple models trained on the same rows (majority class or mean; "
        "linear), for the cost-of-sophistication gate.",
    )
    evaluation: EvaluationReport | None = Field(
        None,
        description="The platform's evaluation on its own holdout (metrics, fairness, calibration, "
        "parity, baselines).",
    )
    submission: Submission | None = Field(
        None, description="Set when the model was submitted by a data scientist instead of trained here."
    )


class Transition(StrEnum):
    REGISTERED = "registered"
    STAGED = "staged"
    PROMOTED = "promoted"
    APPROVED = "approved"
    ROLLED_BACK = "rolled_back"
    ARCHIVED = "archived"
    REJECTED = "rejected"
    REFUSED = "refused"  # artifact integrity failure
    CANARY_WEIGHT = "canary_weight"


class GateResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gate: str
    passed: bool
    detail: str
    observed: float | None = None
    threshold: float | None = None


class ApprovalRecord(BaseModel):
    """One approval of a version: who (the API key's principal), when, why, and what was approved."""

    model_config = ConfigDict(extra="forbid")

    by: str
    at: AwareDatetime
    reason: str
    report_digest: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="sha256 of the gate report approved (the version's artifact digest, metrics, gate "
        "results and the digest of its evaluation report, canonical JSON): what the approver saw.",
    )


class LifecyclePayload(BaseModel):
    """One state change of one model version."""

    model_config = ConfigDict(extra="forbid")

    model: str
    version: str
    transition: Transition
    from_stage: Stage | None
    to_stage: Stage
    reason: str
    actor: str = Field(description="Who or what made the change: registry, an operator's name, the canary.")
    artifact: Artifact
    contract: str
    task: Literal["classification", "regression"]
    gates: list[GateResult] = Field(default_factory=list)
    canary_weight: float | None = Field(
        None, ge=0, le=1, description="Share of traffic for staging versions."
    )
    shadow: bool = False
    production_version: str | None = Field(None, description="The production version after this change.")
    staging_version: str | None = None
    approvals: list[ApprovalRecord] = Field(
        default_factory=list,
        description="On an approval: every approval the version's risk tier required, in order.",
    )


class TrainingRequestPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    contract: str
    reason: str
    requested_by: str
    family: str | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    alert_id: str | None = None


class CandidateEvent(Envelope[CandidatePayload]):
    """``models.candidates.v1``."""


class LifecycleEvent(Envelope[LifecyclePayload]):
    """``models.lifecycle.v1``."""


class TrainingRequestEvent(Envelope[TrainingRequestPayload]):
    """``training.requests.v1``."""
