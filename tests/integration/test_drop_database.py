"""Dropping a test's or a benchmark's database while a session the owner may not end is still in it.

An autovacuum worker is such a session: ``DROP DATABASE … WITH (FORCE)`` run by the owner then fails with
``InsufficientPrivilegeError``, and the audit benchmark died at its last step (and the next run died on the
stale database). The superuser's own session fails the owner's drop the same way, and can be opened at will.
"""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from tests.db_support import ADMIN_DSN, drop_database, superuser_connect


async def test_a_database_with_a_session_the_owner_cannot_end_is_dropped() -> None:
    name = f"tollgate_drop_{uuid.uuid4().hex[:8]}"
    owner = await asyncpg.connect(ADMIN_DSN)
    try:
        await owner.execute(f'CREATE DATABASE "{name}"')
        held = await superuser_connect(name)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await owner.execute(f'DROP DATABASE "{name}" WITH (FORCE)')  # what the benchmark ran
        await drop_database(name)
        assert await owner.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name) == 0
        assert held.is_closed() or not await _alive(held)
        held.terminate()
    finally:
        await drop_database(name)
        await owner.close()


async def _alive(conn: asyncpg.Connection) -> bool:
    try:
        await conn.fetchval("SELECT 1")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError):
        return False
    return True
