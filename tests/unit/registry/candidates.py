"""Candidate events as the trainer publishes them, built from a few numbers (the registry never loads the
model, so the artifact is any bytes put in the store)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from tollgate_core.artifacts import ArtifactStore, sha256_digest
from tollgate_core.lifecycle import Artifact, CandidateEvent, CandidatePayload, Lineage, Parity
from tollgate_core.models import ModelSpec
from tollgate_core.reference import NumericSummary, ReferenceProfile

MODEL = "credit-default-risk"


def _summary(mean: float) -> NumericSummary:
    return NumericSummary(
        count=100,
        null_fraction=0.0,
        mean=mean,
        std=0.1,
        min=0.0,
        max=1.0,
        quantiles={"0.5": mean},
        bin_edges=[mean],
        bin_fractions=[0.5, 0.5],
    )


def model_bytes(version: str, model: str = MODEL) -> bytes:
    return f"not-really-onnx {model} {version} ".encode() * 8


def candidate(
    version: str,
    *,
    roc_auc: float = 0.86,
    log_loss: float = 0.25,
    model: str = MODEL,
    store: ArtifactStore | None = None,
    data: bytes | None = None,
    offered: bool = True,
    fairness_gap: float | None = 0.05,
    size_bytes: int | None = None,
    extra_metrics: dict[str, float] | None = None,
) -> CandidatePayload:
    """A candidate whose artifact bytes are in ``store`` (when given) under their sha256."""
    blob = data if data is not None else model_bytes(version, model)
    digest = store.put(blob) if store is not None else sha256_digest(blob)
    location = store.location(digest) if store is not None else f"memory://sha256/{digest}"
    return CandidatePayload(
        model=model,
        version=version,
        run_id=f"run-{version}",
        task="classification",
        artifact=Artifact(
            digest=digest,
            location=location,
            size_bytes=size_bytes if size_bytes is not None else len(blob),
            inputs=[{"name": "balance", "type": "float", "shape": [None, 1]}],
            outputs=[{"name": "probabilities", "type": "float", "shape": [None, 2]}],
        ),
        metrics={
            "roc_auc": roc_auc,
            "log_loss": log_loss,
            "accuracy": 0.9,
            "count": 1000.0,
            **(extra_metrics or {}),
        },
        parity=Parity(
            passed=offered,
            max_abs_diff=1e-7 if offered else 0.2,
            label_agreement=1.0 if offered else 0.9,
            rows_checked=500,
            tolerance=1e-5,
            required_label_agreement=1.0,
            reason=None if offered else "max |p_onnx - p_sklearn| 0.2 exceeds 1e-05",
        ),
        offered=offered,
        reference=ReferenceProfile(
            contract="credit-default.v1",
            row_count=4000,
            features={"balance": _summary(800.0), "income": _summary(33000.0)},
            prediction=_summary(0.1),
            segment_field="student",
            segment_metrics={"Yes": {"roc_auc": roc_auc}, "No": {"roc_auc": roc_auc - (fairness_gap or 0)}},
            fairness_gap={} if fairness_gap is None else {"roc_auc": fairness_gap},
        ),
        lineage=Lineage(
            contract="credit-default.v1",
            contract_digest="c" * 64,
            offsets=[],
            row_count=5000,
            data_hash="d" * 64,
            family="logistic_regression",
            hyperparameters={"C": 1.0},
            seed=42,
            code_version="test",
            libraries={"scikit-learn": "1.9.1"},
            trigger="count",
        ),
        timings_s={"fit": 0.1},
        trained_at=datetime.now(UTC),
    )


def candidate_event(payload: CandidatePayload, event_id: uuid.UUID | None = None) -> CandidateEvent:
    return CandidateEvent(
        event_id=event_id or uuid.uuid4(),
        event_type="candidate",
        schema_="models.candidates.v1",
        occurred_at=datetime.now(UTC),
        producer="trainer",
        payload=payload,
    )


def spec(model: str = MODEL, risk_tier: str = "low", **rollout: Any) -> ModelSpec:
    """The shipped catalog's gates for credit-default-risk, with the rollout and risk tier overridable."""
    return ModelSpec.model_validate(
        {
            "model": model,
            "risk_tier": risk_tier,
            "contract": "credit-default.v1",
            "gates": {
                "metrics": {"roc_auc": {"min": 0.80}, "log_loss": {"max": 0.30}},
                "regression_tolerance": {"roc_auc": 0.02},
                "best_of_last": 3,
                "degradation_tolerance": {"roc_auc": 0.04},
                "fairness_metric": "roc_auc",
                "fairness_max_gap": 0.15,
                "require_parity": True,
            },
            "rollout": {
                "mode": "canary",
                "canary_weight": 0.2,
                "canary_seconds": 30,
                "shadow": False,
                **rollout,
            },
        }
    )
