"""Models and lifecycle events for the scorer's tests.

The scorer's unit tests run without scikit-learn and without the trainer, as the scorer itself does (``make
test-scorer-alone`` runs them in an environment with the scorer's package only). The models they serve are
ONNX files under ``models/``, trained with the trainer's own pipeline and exporter on the ISLP ``Default``
data by ``models/generate.py``, which also wrote what scikit-learn answers for them (the parity
reference) and the arrays the trainer feeds them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
from prometheus_client import CollectorRegistry

from tollgate_core.apikeys import KeyVerifier, Principal, key_hash
from tollgate_core.artifacts import ArtifactStore, sha256_digest
from tollgate_core.contracts import ContractRegistry, DatasetContract
from tollgate_core.http import create_http_app
from tollgate_core.lifecycle import LifecycleEvent
from tollgate_demo.datasets import load_islp_default
from tollgate_scorer.auth import Authenticator
from tollgate_scorer.core import Scorer, ScoringStats
from tollgate_scorer.http import ScoringApp
from tollgate_scorer.inference_log import InferenceEventEncoder, InferenceLog
from tollgate_scorer.openapi import add_scoring_routes
from tollgate_scorer.routing import ModelRoute, ModelTable
from tollgate_scorer.spool import Spool, SpoolRecord

CONTRACT: DatasetContract = ContractRegistry.from_directory().latest("credit-default")
MODEL = "credit-default-risk"
PARITY_TOLERANCE = 1e-5  # the trainer's parity gate
MODELS = Path(__file__).resolve().parent / "models"
# What models/generate.py writes (it reads these): the versions, the threshold of the thresholded export,
# how many rows have a reference with float32 incomes and how many rows have the trainer's input arrays.
VERSIONS = ("1", "2", "3")
REFERENCED = ("1", "2")
THRESHOLD = 0.04  # low enough that some ISLP rows decide positive by it and not by the most probable class
FP32_ROWS = 100
INPUT_ROWS = 50


@dataclass(frozen=True)
class Trained:
    version: str
    onnx: bytes
    digest: str

    def reference(self, instances: list[dict[str, Any]]) -> np.ndarray:
        """scikit-learn's probabilities for scoring instances (columns in class order False, True), as
        models/generate.py recorded them: the instances are ISLP rows (found by their customer id), their
        incomes as in the data or rounded to float32."""
        if self.version not in REFERENCED:
            raise LookupError(f"models/generate.py records no reference for version {self.version}")
        exact, fp32 = _references(self.version)
        out = np.empty((len(instances), 2))
        for position, instance in enumerate(instances):
            row = int(instance["customer_id"][1:]) - 1
            original = _islp_rows()[row]
            if any(instance.get(f) != original[f] for f in ("student", "balance")):
                raise LookupError(f"no reference for {instance}: not ISLP row {row + 1}")
            if instance.get("income") == original["income"]:
                out[position] = exact[row]
            elif (
                fp32 is not None
                and row < FP32_ROWS
                and instance["income"] == float(np.float32(original["income"]))
            ):
                out[position] = fp32[row]
            else:
                raise LookupError(f"no reference for {instance}: its income is not ISLP row {row + 1}'s")
        return out


@cache
def _references(version: str) -> tuple[np.ndarray, np.ndarray | None]:
    fp32 = MODELS / f"reference-{version}-fp32.npy"
    return np.load(MODELS / f"reference-{version}.npy"), np.load(fp32) if fp32.is_file() else None


@cache
def trained(version: str) -> Trained:
    """Version ``version`` of the model (see models/generate.py)."""
    onnx = (MODELS / f"{MODEL}-{version}.onnx").read_bytes()
    return Trained(version, onnx, sha256_digest(onnx))


@cache
def thresholded() -> bytes:
    """Version 1's pipeline exported with the decision threshold ``THRESHOLD``."""
    return (MODELS / f"{MODEL}-1-threshold.onnx").read_bytes()


def trainer_inputs() -> dict[str, np.ndarray]:
    """The arrays the trainer feeds its ONNX model for ``instances(INPUT_ROWS)``."""
    stored = json.loads((MODELS / "trainer-inputs.json").read_text())
    return {
        name: np.array(
            [
                [np.nan if v is None and spec["dtype"] != "object" else v for v in row]
                for row in spec["values"]
            ],
            dtype=spec["dtype"],
        )
        for name, spec in stored.items()
    }


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
