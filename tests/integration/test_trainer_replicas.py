"""Two trainer replicas share one training store (PostgreSQL); each runs the debounced scheduler over every
model. One training request (and the rows behind it) must give one training run and one candidate, not one
per replica.

Each replica is built as the service builds it: its own connection pool, repository, runner and scheduler,
on the same database. Both replicas' scheduler ticks run at once, then again after the first run ended."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg

from tests.integration.test_trainer_lineage import rows
from tollgate_core.artifacts import DirectoryArtifactStore
from tollgate_core.contracts import ContractRegistry
from tollgate_core.db import create_pool
from tollgate_core.models import model_catalog
from tollgate_demo.datasets import load_islp_default
from tollgate_trainer.app import MIGRATIONS
from tollgate_trainer.runner import Scheduler, TrainingRunner
from tollgate_trainer.store import TrainerRepository

MODEL = "credit-default-risk"


async def test_two_replicas_train_one_request_once(own_database: str, tmp_path: Path) -> None:
    spec = model_catalog()[MODEL]
    spec = spec.model_copy(
        update={
            "contract": "credit-default.v1",
            "training": spec.training.model_copy(update={"debounce_seconds": 0.0, "schedule_seconds": 0}),
        }
    )
    pools = [await create_pool(own_database, "trainer", MIGRATIONS) for _ in range(2)]
    try:
        replicas = []
        for k, pool in enumerate(pools):
            repo = TrainerRepository(pool)
            runner = TrainingRunner(
                repo,
                DirectoryArtifactStore(tmp_path / f"replica-{k}"),
                ContractRegistry.from_directory(),
                "candidates",
                "test",
            )
            replicas.append(Scheduler(repo, runner, {MODEL: spec}, poll_s=0.1))
        repo = replicas[0].repo
        await repo.add_rows(
            rows(load_islp_default()[:1500], 0, f"replicas-{uuid.uuid4().hex[:6]}.events.validated")
        )
        request_id = str(uuid.uuid4())
        assert await repo.add_request(request_id, MODEL, "operator asked", "alice")

        first = await asyncio.gather(*(r.tick() for r in replicas))
        again = await asyncio.gather(*(r.tick() for r in replicas))  # after the run: nothing is due any more

        ran = [o for outcomes in (*first, *again) for o in outcomes]
        conn = await asyncpg.connect(own_database)
        try:
            runs = await conn.fetch(
                "SELECT run_id, version, status FROM trainer_runs WHERE model = $1", MODEL
            )
            candidates = await conn.fetchval("SELECT count(*) FROM trainer_outbox")
            claimed = await conn.fetchval(
                "SELECT run_id FROM trainer_requests WHERE event_id = $1", request_id
            )
        finally:
            await conn.close()
        assert len(runs) == 1, [dict(r) for r in runs]  # one run for the request, by one replica
        assert [o.status for o in ran] == ["offered"]
        assert candidates == 1
        assert claimed == runs[0]["run_id"]
    finally:
        for pool in pools:
            await pool.close()
