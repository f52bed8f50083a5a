"""What the monitor's end-to-end tests feed it: a candidate with a real reference profile, a lifecycle event,
inference-log events in event-time windows (drift injected from a given window on) and late labels."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import numpy as np
import orjson

from tests.kafka_helpers import produce
from tests.unit.monitor.standin import CONTRACT_ID as CONTRACT
from tests.unit.monitor.standin import contract, stand_in_scores
from tollgate_core.events import dumps
from tollgate_core.lifecycle import (
    Artifact,
    CandidateEvent,
    CandidatePayload,
    EvaluationReport,
    FeatureImportance,
    LifecycleEvent,
    LifecyclePayload,
    Lineage,
    Parity,
    Stage,
    Transition,
)
from tollgate_core.reference import ReferenceProfile
from tollgate_core.scoring import InferenceLogEvent
from tollgate_demo.datasets import generate_records

WINDOW_S = 60


@cache
def reference_and_metrics() -> tuple[ReferenceProfile, dict[str, float]]:
    """The trainer's real reference profile; the score summary and holdout metrics are those of the stand-in
    scorer the inference log is written with."""
    from tollgate_monitor.performance import classification_metrics
    from tollgate_trainer.reference import summarize_numeric

    result = _trained()
    holdout = generate_records(contract(), 3000, seed=12)
    scores = stand_in_scores(holdout)
    truth = np.array([1.0 if r["high_risk"] else 0.0 for r in holdout])
    metrics = {k: v for k, v in classification_metrics(scores, truth).items() if k in ("roc_auc", "accuracy")}
    return result.reference.model_copy(update={"prediction": summarize_numeric(scores)}), metrics


@cache
def _trained() -> Any:
    """The model the reference and the feature importance come from (a TrainingResult)."""
    from tollgate_trainer.train import TrainingConfig, train_model

    records = generate_records(contract(), 3000, seed=11)
    return train_model(contract(), records, TrainingConfig(family="logistic_regression", threads=1))


def trained_importance() -> FeatureImportance:
    """The global feature importance the trainer measured for the model the reference comes from."""
    importance = _trained().feature_importance
    assert isinstance(importance, FeatureImportance)
    return importance


def _artifact() -> Artifact:
    digest = "a" * 64
    return Artifact(digest=digest, location=f"file:///tmp/{digest}", size_bytes=1, inputs=[], outputs=[])


def candidate_event(model: str, version: str = "1") -> CandidateEvent:
    reference, metrics = reference_and_metrics()
    now = datetime.now(UTC)
    payload = CandidatePayload(
        model=model,
        version=version,
        run_id=str(uuid.uuid4()),
        task="classification",
        artifact=_artifact(),
        metrics=metrics,
        parity=Parity(
            passed=True,
            max_abs_diff=0.0,
            label_agreement=1.0,
            rows_checked=10,
            tolerance=1e-5,
            required_label_agreement=1.0,
        ),
        offered=True,
        reference=reference,
        lineage=Lineage(
            contract=CONTRACT,
            contract_digest="0" * 64,
            offsets=[],
            row_count=3000,
            data_hash="0" * 64,
            family="logistic_regression",
            hyperparameters={},
            seed=0,
            code_version="test",
            libraries={},
            trigger="count",
        ),
        trained_at=now,
        evaluation=EvaluationReport(
            holdout_rows=600,
            holdout_fraction=0.2,
            ordered_by="arrival",
            data_hash="0" * 64,
            metrics=metrics,
            feature_importance=trained_importance(),
        ),
    )
    return CandidateEvent(
        event_id=uuid.uuid4(),
        event_type="candidate",
        schema="models.candidates.v1",
        occurred_at=now,
        producer="trainer",
        payload=payload,
    )


def promoted_event(model: str, version: str = "1") -> LifecycleEvent:
    payload = LifecyclePayload(
        model=model,
        version=version,
        transition=Transition.PROMOTED,
        from_stage=Stage.CANDIDATE,
        to_stage=Stage.PRODUCTION,
        reason="first version",
        actor="registry",
        artifact=_artifact(),
        contract=CONTRACT,
        task="classification",
        production_version=version,
    )
    return LifecycleEvent(
        event_id=uuid.uuid4(),
        event_type="promoted",
        schema="models.lifecycle.v1",
        occurred_at=datetime.now(UTC),
        producer="registry",
        payload=payload,
    )


@dataclass(frozen=True)
class Stream:
    """Event-time windows of ``rows`` records each of ``model``, starting at ``base`` (a whole minute)."""

    model: str
    base: datetime
    rows: int
    drift_from: int
    drift: dict[str, float]

    @classmethod
    def recent(cls, windows: int, rows: int, drift_from: int, drift: dict[str, float]) -> Stream:
        """A stream of a model of its own (tests share one database), ending about now."""
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        model = f"risk-{uuid.uuid4().hex[:8]}"
        return cls(model, now - timedelta(seconds=WINDOW_S * (windows + 2)), rows, drift_from, drift)

    def window_end(self, window: int) -> float:
        return (self.base + timedelta(seconds=WINDOW_S * (window + 1))).timestamp()

    def records(self, window: int) -> list[dict[str, Any]]:
        drift = self.drift if window >= self.drift_from else None
        return generate_records(
            contract(), self.rows, seed=1000 + window, drift=drift, start=window * self.rows
        )

    def log_events(self, window: int, count: int | None = None) -> list[tuple[bytes, bytes]]:
        records = self.records(window)[: count or self.rows]
        scores = stand_in_scores(records)
        label = contract().label.name
        out = []
        for j, (record, score) in enumerate(zip(records, scores, strict=True)):
            at = self.base + timedelta(seconds=WINDOW_S * window + WINDOW_S * j / self.rows)
            inputs = {k: v for k, v in record.items() if k != label}
            event = inference_event(
                self.model, CONTRACT, record["account_id"], inputs, score, at, 2.0 + (j % 7) * 0.5
            )
            out.append((self.model.encode(), dumps(event)))
        return out

    def label_events(self, window: int, arrive_in_window: int) -> list[tuple[bytes, bytes]]:
        """Validated, labeled records of ``window``'s entities, arriving during ``arrive_in_window``."""
        at = (self.base + timedelta(seconds=WINDOW_S * arrive_in_window + 1)).isoformat()
        out = []
        for record in self.records(window):
            doc = {
                "event_id": str(uuid.uuid4()),
                "event_type": "observation",
                "schema": CONTRACT,
                "occurred_at": at,
                "producer": "test",
                "payload": record,
                "ingested_at": at,
                "validated_at": at,
                "entity_id": record["account_id"],
                "labeled": True,
                "quality_flags": [],
            }
            out.append((record["account_id"].encode(), orjson.dumps(doc)))
        return out


def inference_event(
    model: str,
    contract: str,
    entity_id: str,
    inputs: dict[str, Any],
    score: float,
    at: datetime,
    latency_ms: float = 2.0,
) -> InferenceLogEvent:
    """One champion inference of ``model`` version 1 over HTTP, decided at 0.5, as the scorer logs it."""
    return InferenceLogEvent.model_validate(
        {
            "event_id": str(uuid.uuid4()),
            "event_type": "inference",
            "schema": "inference.log.v1",
            "occurred_at": at.isoformat(),
            "producer": "scorer",
            "payload": {
                "request_id": str(uuid.uuid4()),
                "model": model,
                "version": "1",
                "route": "champion",
                "channel": "http",
                "contract": contract,
                "entity_id": entity_id,
                "inputs": inputs,
                "outputs": {"prediction": bool(score >= 0.5), "score": float(score)},
                "latency_ms": latency_ms,
            },
        }
    )


async def publish_versions(bootstrap: str, namespace: str, model: str) -> None:
    await produce(
        bootstrap, f"{namespace}.models.candidates.v1", [(model.encode(), dumps(candidate_event(model)))]
    )
    await produce(
        bootstrap, f"{namespace}.models.lifecycle.v1", [(model.encode(), dumps(promoted_event(model)))]
    )
