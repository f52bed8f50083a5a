"""Retraining from a recorded lineage reproduces the model, even after more data arrived."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson

from tollgate_core.artifacts import DirectoryArtifactStore
from tollgate_core.contracts import ContractRegistry
from tollgate_core.datasets import load_islp_default
from tollgate_core.db import create_pool
from tollgate_core.models import model_catalog
from tollgate_trainer.app import MIGRATIONS
from tollgate_trainer.runner import TrainingRunner
from tollgate_trainer.store import StoredRow, TrainerRepository


def rows(records: list[dict[str, object]], start: int, topic: str) -> list[StoredRow]:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        StoredRow(
            str(uuid.uuid4()),
            "credit-default.v1",
            topic,
            i % 3,
            start + i,
            base + timedelta(minutes=start + i),
            orjson.dumps(r),
        )
        for i, r in enumerate(records)
    ]


async def test_retrain_from_lineage_gives_the_same_model(own_database: str, tmp_path: Path) -> None:
    pool = await create_pool(own_database, "trainer", MIGRATIONS)
    try:
        repo = TrainerRepository(pool)
        topic = f"lineage-{uuid.uuid4().hex[:6]}.events.validated.v1"
        data = load_islp_default()
        await repo.add_rows(rows(data[:3000], 0, topic))
        spec = model_catalog()["credit-default-risk"]
        spec = spec.model_copy(update={"contract": "credit-default.v1"})
        runner = TrainingRunner(
            repo, DirectoryArtifactStore(tmp_path), ContractRegistry.from_directory(), "candidates", "test"
        )
        outcome = await runner.run(spec, "count", [])
        assert outcome.status == "offered" and outcome.candidate is not None
        lineage = outcome.candidate.payload.lineage

        await repo.add_rows(rows(data[3000:4000], 3000, topic))  # newer data must not leak into the replay
        again = await runner.retrain(spec, lineage)
        assert outcome.result is not None
        assert again.data_hash == outcome.result.data_hash == lineage.data_hash
        assert again.digest == outcome.result.digest  # byte-identical ONNX

        probe = data[5000:5200]

        def scores(onnx: bytes) -> np.ndarray:
            session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
            feeds = {}
            for spec_in in outcome.result.signature.inputs:  # type: ignore[union-attr]
                cols = spec_in.columns
                if spec_in.dtype == "string":
                    feeds[spec_in.name] = np.array([[str(r[c]) for c in cols] for r in probe], dtype=object)
                else:
                    dtype = np.float64 if spec_in.dtype == "double" else np.float32
                    feeds[spec_in.name] = np.array([[float(r[c]) for c in cols] for r in probe], dtype=dtype)
            return np.asarray(session.run(None, feeds)[1])

        np.testing.assert_array_equal(scores(outcome.result.onnx), scores(again.onnx))
    finally:
        await pool.close()
