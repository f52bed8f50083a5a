"""Reading a service's tables from a test: rows of a query, none while the table does not exist yet."""

from __future__ import annotations

from typing import Any

import asyncpg


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
