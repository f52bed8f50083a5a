"""PostgreSQL: an asyncpg pool whose service migrations are applied on start.

Each service keeps numbered SQL files (``001_init.sql`` ...) in its own ``migrations`` folder. They are applied
once, in order, under an advisory lock so several replicas starting together do not race.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import asyncpg
from asyncpg.pool import PoolConnectionProxy

log = logging.getLogger(__name__)

# A connection of its own or one acquired from a pool.
Conn = asyncpg.Connection | PoolConnectionProxy

_LEDGER = """
CREATE TABLE IF NOT EXISTS tollgate_migrations (
    service     text        NOT NULL,
    version     integer     NOT NULL,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, version)
)
"""


def _migration_files(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        head = path.name.split("_", 1)[0]
        if not head.isdigit():
            raise ValueError(f"migration {path.name} must start with a number, e.g. 001_init.sql")
        found.append((int(head), path))
    versions = [v for v, _ in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two migrations share a number in {directory}")
    return found


def _checksum(path: Path) -> str:
    return hashlib.sha256(path.read_text(encoding="utf-8").encode()).hexdigest()


class MigrationsPending(RuntimeError):
    """Migrations are not applied and the connected role may not apply them (a service's own role)."""


async def _applied(conn: Conn, service: str) -> dict[int, str] | None:
    """version -> checksum of the service's applied migrations; None when there is no ledger yet."""
    if not await conn.fetchval("SELECT to_regclass('tollgate_migrations') IS NOT NULL"):
        return None
    try:
        rows = await conn.fetch(
            "SELECT version, checksum FROM tollgate_migrations WHERE service = $1", service
        )
    except asyncpg.InsufficientPrivilegeError:
        user = await conn.fetchval("SELECT current_user")
        raise MigrationsPending(
            f"{service}: the role {user} may not read the migration ledger: its grants are not applied; run "
            "`python -m tollgate_core.migrate` with TOLLGATE_DATABASE_URL set to the owner's DSN"
        ) from None
    return {r["version"]: r["checksum"] for r in rows}


async def migrate(conn: Conn, service: str, directory: Path) -> list[str]:
    """Apply the service's pending migrations; refuse if an applied file was edited afterwards.

    Nothing is changed (no DDL, no lock) when every migration is applied already, so a service connected as
    its own role, which may not create anything (``tollgate_core.db_roles``), only checks; with migrations
    pending such a role gets :class:`MigrationsPending` naming them and the command that applies them."""
    files = _migration_files(directory)
    applied_before = await _applied(conn, service)
    if applied_before is not None:
        pending = []
        for version, path in files:
            if version not in applied_before:
                pending.append(path.name)
            elif applied_before[version] != _checksum(path):
                raise RuntimeError(f"migration {path.name} of {service} changed after it was applied")
        if not pending:
            return []
    else:
        pending = [path.name for _, path in files]
    if not await conn.fetchval("SELECT has_schema_privilege(current_schema(), 'CREATE')"):
        user = await conn.fetchval("SELECT current_user")
        raise MigrationsPending(
            f"{service}: migrations {', '.join(pending)} are not applied and the role {user} may not apply "
            "them; run `python -m tollgate_core.migrate` with TOLLGATE_DATABASE_URL set to the owner's DSN"
        )
    lock_key = int.from_bytes(
        hashlib.sha256(f"tollgate-migrate-{service}".encode()).digest()[:8], "big", signed=True
    )
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", lock_key)
    try:
        await conn.execute(_LEDGER)
        rows = await conn.fetch(
            "SELECT version, checksum FROM tollgate_migrations WHERE service = $1", service
        )
        applied = {r["version"]: r["checksum"] for r in rows}
        for version, path in _migration_files(directory):
            sql = path.read_text(encoding="utf-8")
            checksum = _checksum(path)
            if version in applied:
                if applied[version] != checksum:
                    raise RuntimeError(f"migration {path.name} of {service} changed after it was applied")
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO tollgate_migrations (service, version, name, checksum) VALUES ($1, $2, $3, $4)",
                    service,
                    version,
                    path.name,
                    checksum,
                )
            applied_now.append(path.name)
            log.info("%s: applied migration %s", service, path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", lock_key)
    return applied_now


async def create_pool(
    dsn: str, service: str, migrations: Path | None = None, *, min_size: int = 1, max_size: int = 10
) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size)
    if migrations is not None:
        async with pool.acquire() as conn:
            await migrate(conn, service, migrations)
    return pool


async def ping(pool: asyncpg.Pool) -> None:
    async with pool.acquire(timeout=2) as conn:
        await conn.fetchval("SELECT 1")
