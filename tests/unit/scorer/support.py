"""Models and lifecycle events for the scorer's tests.

Tests may use the training stack (the scorer package may not): models are fitted with the trainer's own
pipeline and exporter on the ISLP ``Default`` data, so each comes with its fitted scikit-learn pipeline as
the parity reference.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
from prometheus_client import CollectorRegistry
from sklearn.pipeline import Pipeline

from tollgate_core.apikeys import KeyVerifier, Principal, key_hash
from tollgate_core.artifacts import ArtifactStore, sha256_digest
from tollgate_core.contracts import ContractRegistry, DatasetContract
from tollgate_core.datasets import load_islp_default
from tollgate_core.http import create_http_app
from tollgate_core.lifecycle import LifecycleEvent
from tollgate_scorer.auth import Authenticator
from tollgate_scorer.core import Scorer, ScoringStats
from tollgate_scorer.http import ScoringApp
from tollgate_scorer.inference_log import InferenceEventEncoder, InferenceLog
from tollgate_scorer.openapi import add_scoring_routes
from tollgate_scorer.routing import ModelRoute, ModelTable
from tollgate_scorer.spool import Spool, SpoolRecord
from tollgate_trainer.export import export_onnx
from tollgate_trainer.features import FeatureLayout, LabelEncoding, raw_frame
from tollgate_trainer.pipeline import build_pipeline

CONTRACT: DatasetContract = ContractRegistry.from_directory().latest("credit-default")
MODEL = "credit-default-risk"
PARITY_TOLERANCE = 1e-5  # the trainer's parity gate

# version -> (rows used, inverse regularisation): different data and strength give visibly different outputs.
_VERSIONS: dict[str, tuple[slice, float]] = {
    "1": (slice(0, 5000), 1.0),
    "2": (slice(5000, 10000), 0.001),
    "3": (slice(0, 10000), 100.0),
}


@dataclass(frozen=True)
class Trained:
    version: str
    onnx: bytes
    digest: str
    pipeline: Pipeline
    layout: FeatureLayout

    def reference(self, instances: list[dict[str, Any]]) -> np.ndarray:
        """scikit-learn's probabilities for scoring instances (columns in class order False, True)."""
        frame = pd.DataFrame(
            {name: pd.Series([i.get(name) for i in instances], dtype=object) for name in self.layout.columns}
        )
        return np.asarray(self.pipeline.predict_proba(self.layout.model_frame(frame)))


@cache
def trained(version: str) -> Trained:
    rows, strength = _VERSIONS[version]
    raw = raw_frame(CONTRACT, load_islp_default()[rows])
    encoding = LabelEncoding.fit(
        CONTRACT.label, raw[CONTRACT.label.name].tolist(), CONTRACT.label.positive_class
    )
    layout = FeatureLayout.from_contract(CONTRACT)
    pipeline = build_pipeline(CONTRACT, "logistic_regression", {"C": strength}, seed=0)
    pipeline.fit(layout.model_frame(raw), encoding.encode(raw[CONTRACT.label.name].tolist()))
    exported = export_onnx(pipeline, CONTRACT, encoding)
    return Trained(version, exported.onnx, sha256_digest(exported.onnx), pipeline, layout)


@cache
def _islp_rows() -> tuple[dict[str, Any], ...]:
    return tuple(load_islp_default())  # read once per test session; callers get copies


def instances(n: int, start: int = 0, *, email: bool = True) -> list[dict[str, Any]]:
    """Scoring instances from the ISLP rows (label removed), with entity id and, optionally, the PII e-mail."""
    out = []
    for record in _islp_rows()[start : start + n]:
        instance = {k: v for k, v in record.items() if k != CONTRACT.label.name}
        if not email:
            del instance["customer_email"]
        out.append(instance)
    return out


def store_all(store: ArtifactStore, *versions: str) -> None:
    for version in versions:
        store.put(trained(version).onnx)


def lifecycle_event(
    version: str,
    *,
    production: str | None,
    staging: str | None = None,
    canary_weight: float | None = None,
    shadow: bool = False,
    transition: str = "promoted",
    to_stage: str = "production",
    digest: str | None = None,
    model: str = MODEL,
) -> bytes:
    """A ``models.lifecycle.v1`` event as the registry writes it (validated by the model)."""
    onnx = trained(version).onnx
    event = LifecycleEvent.model_validate(
        {
            "event_id": str(uuid.uuid4()),
            "event_type": transition,
            "schema": "models.lifecycle.v1",
            "occurred_at": datetime.now(UTC).isoformat(),
            "producer": "registry",
            "payload": {
                "model": model,
                "version": version,
                "transition": transition,
                "from_stage": None,
                "to_stage": to_stage,
                "reason": "test",
                "actor": "test",
                "artifact": {
                    "digest": digest or sha256_digest(onnx),
                    "location": f"file:///artifacts/{sha256_digest(onnx)}",
                    "size_bytes": len(onnx),
                    "inputs": [],
                    "outputs": [],
                },
                "contract": CONTRACT.schema_id,
                "task": "classification",
                "canary_weight": canary_weight,
                "shadow": shadow,
                "production_version": production,
                "staging_version": staging,
            },
        }
    )
    return event.model_dump_json(by_alias=True).encode()


PII_KEY = b"unit-test-pii-key"


@cache
def serving(version: str) -> Any:
    """A loaded :class:`~tollgate_scorer.model.ServingModel` of ``trained(version)``."""
    from tollgate_scorer.model import SessionConfig, load_serving_model

    t = trained(version)
    return load_serving_model(
        MODEL,
        version,
        t.digest,
        t.onnx,
        contracts=ContractRegistry.from_directory(),
        expected_contract=CONTRACT.schema_id,
        config=SessionConfig(),
        pii_key=PII_KEY,
        warmup_rounds=2,
    )


class FakeSink:
    """The inference log's Kafka sink, faked: ``up`` decides whether starts and sends succeed."""

    def __init__(self) -> None:
        self.up = True
        self.sent: list[SpoolRecord] = []
        self.started = 0
        self.stopped = 0

    async def start(self) -> None:
        if not self.up:
            raise KafkaConnectionError("broker unreachable")
        self.started += 1

    async def send(self, records: Sequence[SpoolRecord]) -> None:
        if not self.up:
            raise KafkaTimeoutError()
        self.sent.extend(records)

    async def stop(self) -> None:
        self.stopped += 1

    def request_ids(self) -> list[str]:
        return [orjson.loads(value)["payload"]["request_id"] for _, value, _ in self.sent]


KEYS = {
    "client-key": Principal("shop", frozenset({"scorer-client"})),
    "auditor-key": Principal("audit", frozenset({"auditor"})),
    "operator-key": Principal("ops", frozenset({"operator"})),
}


def make_app(
    tmp_path: Path,
    *,
    auth: bool = False,
    max_body: int = 1_000_000,
    ready: str | None = None,
    route: ModelRoute | None = None,
    coalesce: bool = False,
) -> tuple[ScoringApp, InferenceLog]:
    table = ModelTable()
    table.set(route or ModelRoute(MODEL, serving("1")))
    log = InferenceLog(
        sink=FakeSink(),
        encoder=InferenceEventEncoder("inference.log.v1", "t"),
        spool=Spool(tmp_path, 1_000_000),
    )
    verifier = None
    authenticator = None
    if auth:
        verifier = KeyVerifier(_load)
        verifier._active = {key_hash(k): p for k, p in KEYS.items()}
        authenticator = Authenticator(verifier)
    ops = create_http_app(
        title="t",
        version="1",
        description="",
        registry=CollectorRegistry(),
        checks={},
        keys=verifier,
        auth_required=auth,
    )
    base = ops.openapi
    ops.openapi = lambda: ops.openapi_schema or add_scoring_routes(base())  # type: ignore[method-assign]
    app = ScoringApp(
        Scorer(table, log, ScoringStats()),
        ops,
        authenticator=authenticator,
        max_body_bytes=max_body,
        max_instances=100,
        ready=lambda: ready,
        model_errors=lambda name: None,
        server_version="9.9",
        coalesce=coalesce,
    )
    return app, log


async def _load() -> Mapping[str, Principal]:
    return {key_hash(k): p for k, p in KEYS.items()}
