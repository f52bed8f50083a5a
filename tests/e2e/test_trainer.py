"""The trainer as a real process: labeled validated events in → stored with their offsets → a debounced
training run → ONNX artifact in the store → a candidate event with metrics, parity, reference and lineage."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from tests.auth_support import RoleKeys, header, make_keys
from tests.conftest import wait_http_ok
from tests.kafka_helpers import collect, produce
from tollgate_core.artifacts import DirectoryArtifactStore
from tollgate_core.lifecycle import CandidateEvent
from tollgate_demo.datasets import load_islp_default

MODEL = "credit-default-risk"


def validated(record: dict[str, Any], i: int) -> tuple[bytes, bytes]:
    now = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=i)
    doc = {
        "event_id": str(uuid.uuid4()),
        "event_type": "observation",
        "schema": "credit-default.v1",
        "occurred_at": now.isoformat(),
        "producer": "test",
        "payload": record,
        "ingested_at": now.isoformat(),
        "validated_at": now.isoformat(),
        "entity_id": record["customer_id"],
        "labeled": record.get("default") is not None,
        "quality_flags": [],
    }
    return record["customer_id"].encode(), orjson.dumps(doc)


def write_catalog(directory: Path, **training: Any) -> Path:
    spec = yaml.safe_load((Path(__file__).parents[2] / "schemas/models" / f"{MODEL}.yaml").read_text())
    spec["training"].update(
        {"min_rows": 2000, "retrain_after_new_rows": 100_000, "debounce_seconds": 1.0, **training}
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{MODEL}.yaml").write_text(yaml.safe_dump(spec))
    return directory


async def test_count_trigger_and_debounced_requests(
    services: Any, namespace: str, bootstrap: str, tmp_path: Path, own_database: str
) -> None:
    # A database of its own: the runs listed below are this test's alone (in the session's database, other
    # tests' trainers train the same catalog model on their rows).
    api_keys: RoleKeys = await make_keys(own_database)
    records = load_islp_default()[:3000]
    artifacts = tmp_path / "artifacts"
    trainer = services(
        "trainer",
        poll_seconds="0.2",
        env_extra={
            # Three requests sent one after another must fall in one debounce window even when each takes
            # a second on a loaded machine (with 1 s, a burst was seen to train twice).
            "TOLLGATE_MODELS_DIR": str(write_catalog(tmp_path / "models", debounce_seconds=5.0)),
            "TOLLGATE_ARTIFACT_DIR": str(artifacts),
            "TOLLGATE_DATABASE_URL": own_database,
        },
    )
    base = f"http://127.0.0.1:{trainer.port}"
    await wait_http_ok(f"{base}/readyz", proc=trainer)

    # Unlabeled rows are not stored; 2,500 labeled ones trigger the first run (min_rows 2,000) once.
    labeled = [validated(r, i) for i, r in enumerate(records[:2500])]
    unlabeled = [validated({**r, "default": None}, 10_000 + i) for i, r in enumerate(records[2500:])]
    await produce(bootstrap, f"{namespace}.events.validated.v1", labeled + unlabeled)

    [first] = await collect(bootstrap, f"{namespace}.models.candidates.v1", expect=1, timeout=120, settle=3)
    candidate = CandidateEvent.model_validate_json(first.value)
    p = candidate.payload
    assert (p.model, p.version, p.offered, p.parity.passed) == (MODEL, "1", True, True)
    assert p.lineage.row_count == 2500 and p.lineage.trigger == "count"
    assert sum(o.last_offset - o.first_offset + 1 for o in p.lineage.offsets) >= 2500
    assert {o.topic for o in p.lineage.offsets} == {f"{namespace}.events.validated.v1"}
    assert p.metrics["roc_auc"] > 0.8 and p.reference.row_count > 0
    assert p.lineage.libraries["scikit-learn"] and p.lineage.code_version
    # The artifact is in the store under its digest, and verified on read.
    assert len(DirectoryArtifactStore(artifacts).get(p.artifact.digest)) == p.artifact.size_bytes

    # A burst of three requests within the debounce window trains once.
    async with httpx.AsyncClient(base_url=base, headers=header(api_keys["data-scientist"])) as client:
        for i in range(3):
            r = await client.post(
                f"/v1/models/{MODEL}/train", json={"reason": f"burst {i}", "requested_by": "ops"}
            )
            assert r.status_code == 202, r.text
        assert (
            await client.post("/v1/models/nope/train", json={"reason": "x", "requested_by": "y"})
        ).status_code == 404
    got = await collect(bootstrap, f"{namespace}.models.candidates.v1", expect=2, timeout=120, settle=4)
    assert len(got) == 2
    second = CandidateEvent.model_validate_json(got[1].value).payload
    assert second.version == "2" and second.lineage.trigger == "request"
    # The run remembers who asked for it (the key's principal, not the ignored "requested_by" field).
    assert second.lineage.requested_by == [api_keys.names["data-scientist"]]
    async with httpx.AsyncClient(base_url=base, headers=header(api_keys["viewer"])) as client:
        runs = (await client.get("/v1/runs")).json()
    assert [r["status"] for r in runs] == ["offered", "offered"]
