"""Migrations and ingest's dedup claims on the real PostgreSQL."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest

from tollgate_core.db import create_pool, migrate
from tollgate_ingest.app import MIGRATIONS
from tollgate_ingest.claims import PostgresClaimStore


async def test_migrations_apply_once_and_refuse_edits(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "001_a.sql").write_text("CREATE TABLE mig_probe (x int);")
    conn = await asyncpg.connect(database_url)
    try:
        assert await migrate(conn, "probe", tmp_path) == ["001_a.sql"]
        assert await migrate(conn, "probe", tmp_path) == []
        (tmp_path / "002_b.sql").write_text("ALTER TABLE mig_probe ADD COLUMN y int;")
        assert await migrate(conn, "probe", tmp_path) == ["002_b.sql"]
        (tmp_path / "001_a.sql").write_text("CREATE TABLE mig_probe (x bigint);")
        with pytest.raises(RuntimeError, match="changed after it was applied"):
            await migrate(conn, "probe", tmp_path)
    finally:
        await conn.close()


async def test_claims_survive_restart_and_recognise_replays(database_url: str) -> None:
    pool = await create_pool(database_url, "ingest", MIGRATIONS)
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        store = PostgresClaimStore(pool)
        assert await store.claim("raw", [(a, 0, 10), (b, 0, 11), (a, 0, 12)]) == {(a, 0, 10), (b, 0, 11)}
    finally:
        await pool.close()
    pool = await create_pool(database_url, "ingest", MIGRATIONS)  # a restarted process
    try:
        store = PostgresClaimStore(pool)
        # The same message replayed (crash before its transaction committed) is still the owner ...
        assert await store.claim("raw", [(a, 0, 10)]) == {(a, 0, 10)}
        # ... a copy from elsewhere is a duplicate, on any topic partition.
        assert await store.claim("raw", [(a, 2, 10), (b, 0, 99)]) == set()
    finally:
        await pool.close()
