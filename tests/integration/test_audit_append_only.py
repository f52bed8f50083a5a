"""The trail is append-only for real: the writer role's grants refuse UPDATE/DELETE/TRUNCATE, the triggers
refuse them to the owner too, and the service reports which protections hold."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.audit_support import ensure_writer_role, fill, fresh_database
from tollgate_audit_log.app import prepare_database
from tollgate_audit_log.roles import append_only_status
from tollgate_audit_log.settings import AuditLogSettings

MUTATIONS = {
    "update": "UPDATE audit_events SET model = 'forged' WHERE seq = 1",
    "delete": "DELETE FROM audit_events WHERE seq = 1",
    "truncate": "TRUNCATE audit_events",
    "update_checkpoints": "UPDATE audit_checkpoints SET last_seq = last_seq",
    "delete_keys": "DELETE FROM audit_signing_keys",
    "truncate_checkpoints": "TRUNCATE audit_checkpoints",
}


@pytest.fixture(scope="module")
async def database_url() -> AsyncIterator[str]:
    """This module's own database (it counts and verifies whole tables)."""
    async with fresh_database("roles") as dsn:
        yield dsn


@pytest.fixture(scope="module")
async def audit_db(database_url: str) -> AuditLogSettings:
    problem = await ensure_writer_role()
    if problem is not None:
        pytest.skip(problem)
    settings = AuditLogSettings(database_url=database_url)
    assert await prepare_database(settings) is None
    conn = await asyncpg.connect(settings.writer_dsn())
    try:
        if not await conn.fetchval("SELECT count(*) FROM audit_events"):
            await fill(conn, "append-only-probe", 10)
    finally:
        await conn.close()
    return settings


@pytest.mark.parametrize("sql", MUTATIONS.values(), ids=MUTATIONS.keys())
async def test_writer_role_cannot_change_rows(audit_db: AuditLogSettings, sql: str) -> None:
    conn = await asyncpg.connect(audit_db.writer_dsn())
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await conn.execute(sql)
        assert await conn.fetchval("SELECT count(*) FROM audit_events") > 0
    finally:
        await conn.close()


@pytest.mark.parametrize("sql", MUTATIONS.values(), ids=MUTATIONS.keys())
async def test_triggers_stop_the_owner_too(audit_db: AuditLogSettings, sql: str) -> None:
    conn = await asyncpg.connect(audit_db.database_url)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute(sql)
    finally:
        await conn.close()


async def test_writer_role_can_append_and_read_only(audit_db: AuditLogSettings) -> None:
    conn = await asyncpg.connect(audit_db.writer_dsn())
    try:
        status = await append_only_status(conn, audit_db.writer_role)
        assert status.restricted_role and status.triggers, status
        assert status.summary.startswith("ok: role tollgate_audit_writer")
        # Nothing beyond the grants: no DDL, no disabling the triggers, no reading other tables.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("ALTER TABLE audit_events DISABLE TRIGGER USER")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("SELECT rolpassword FROM pg_authid")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM tollgate_migrations")
        assert await conn.fetchval("SELECT count(*) FROM api_keys") >= 0  # reads API keys to authenticate
        # ... and the migration ledger, to check its migrations are applied when it connects as itself
        assert await conn.fetchval("SELECT count(*) FROM tollgate_migrations WHERE service = 'audit-log'") > 0
    finally:
        await conn.close()


async def test_status_says_triggers_only_for_the_owner_and_broken_without_triggers(
    audit_db: AuditLogSettings,
) -> None:
    conn = await asyncpg.connect(audit_db.database_url)
    try:
        status = await append_only_status(conn, audit_db.writer_role)
        assert status.triggers and not status.restricted_role
        assert status.summary.startswith("degraded: triggers only")
        async with conn.transaction():
            await conn.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
            broken = await append_only_status(conn, audit_db.writer_role)
            assert not broken.triggers and "audit_events.audit_events_append_only" in broken.summary
            raise _Rollback
    except _Rollback:
        pass
    finally:
        await conn.close()


class _Rollback(Exception):
    pass
