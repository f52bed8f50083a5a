"""PostgreSQL from a test or a benchmark: rows of a query (none while the table does not exist yet), the
local stack's superuser, and dropping a database whatever sessions it still has."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from tollgate_core.settings import DEFAULT_DATABASE_URL

ROOT = Path(__file__).resolve().parents[1]
ADMIN_DSN = os.environ.get("TOLLGATE_DATABASE_URL", DEFAULT_DATABASE_URL)
STATE_DIR = Path(
    os.environ.get("STACK_STATE_DIR", ROOT / ".local")
)  # the local stack's state (infra/stack.sh)


async def fetch_rows(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """The rows of ``sql`` on a connection of its own; ``[]`` while a service has not created the table
    (its migrations run when it starts, so a test polling from the start may query before that)."""
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    except asyncpg.UndefinedTableError:
        return []
    finally:
        await conn.close()


async def superuser_connect(database: str = "postgres") -> asyncpg.Connection:
    """The local stack's superuser over its unix socket (trust for local connections, see infra/stack.sh)."""
    port = urlsplit(ADMIN_DSN).port or 5432
    return await asyncpg.connect(
        host=str(STATE_DIR / "run" / "pg"), port=port, user="postgres", database=database
    )


async def drop_database(name: str) -> None:
    """Drop ``name`` as the owner, ending its sessions; a session the owner may not end (the superuser's,
    or an autovacuum worker's) makes that fail, and the superuser drops it instead."""
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return
    except asyncpg.InsufficientPrivilegeError:
        pass
    finally:
        await conn.close()
    conn = await superuser_connect()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
