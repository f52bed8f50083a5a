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
from tollgate_core.db import create_pool
from tollgate_core.models import model_catalog
from tollgate_demo.datasets import load_islp_default
from tollgate_trainer.app import MIGRATIONS
from tollgate_trainer.runner import TrainingRunner, label_key
from tollgate_trainer.store import LabelKey, StoredRow, TrainerRepository


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


async def test_labels_sent_again_do_not_add_training_rows(own_database: str, tmp_path: Path) -> None:
    pool = await create_pool(own_database, "trainer", MIGRATIONS)
    try:
        repo = TrainerRepository(pool)
        topic = f"resent-{uuid.uuid4().hex[:6]}.events.validated.v1"
        data = load_islp_default()[:1500]
        await repo.add_rows(rows(data, 0, topic))
        spec = model_catalog()["credit-default-risk"].model_copy(update={"contract": "credit-default.v1"})
        runner = TrainingRunner(
            repo, DirectoryArtifactStore(tmp_path), ContractRegistry.from_directory(), "candidates", "test"
        )
        first = await runner.run(spec, "count", [])
        assert first.result is not None

        # The same 300 labels again under new event ids (a producer's retry), the last 100 corrected.
        again = [dict(r) for r in data[:300]]
        for r in again[200:]:
            r["default"] = not r["default"]
        assert await repo.add_rows(rows(again, 1500, topic)) == 300
        second = await runner.run(spec, "count", [])
        assert second.result is not None
        assert second.result.row_count == first.result.row_count == 1500
        # The corrected labels replaced the earlier ones: the newest arrival wins.
        loaded = await repo.load_newest("credit-default.v1", 10_000, label_key_of_credit())
        assert loaded.superseded == 300
        by_id = {r["customer_id"]: r["default"] for r in loaded.records}
        assert all(by_id[r["customer_id"]] == r["default"] for r in again)
        # A retrain from the second run's lineage sees the same rows.
        assert second.candidate is not None
        replay = await runner.retrain(spec, second.candidate.payload.lineage)
        assert replay.row_count == 1500 and replay.data_hash == second.result.data_hash
    finally:
        await pool.close()


def label_key_of_credit() -> LabelKey:
    contract = ContractRegistry.from_directory().get("credit-default.v1")
    assert contract is not None
    return label_key(contract)
