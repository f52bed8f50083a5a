"""``python -m tollgate_core.migrate``: apply every service's pending migrations, then exit.

Services also migrate when they start (``create_pool``, under an advisory lock per service); this runs the
same migrations once before a rollout, as the Kubernetes chart's migration Job does, so a failing migration
stops the release instead of crash-looping every replica. It finds each installed service package's
``migrations`` folder without importing the service.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from pathlib import Path

import asyncpg

from tollgate_core import apikeys
from tollgate_core.db import migrate
from tollgate_core.settings import ServiceSettings
from tollgate_core.topics import SERVICES

log = logging.getLogger("tollgate.migrate")


def migration_folders() -> list[tuple[str, Path]]:
    """(ledger name, folder) for every installed service with migrations, and the API keys' table."""
    found: list[tuple[str, Path]] = []
    for service in SERVICES:
        spec = importlib.util.find_spec(f"tollgate_{service.replace('-', '_')}")
        if spec is None or not spec.submodule_search_locations:
            continue
        folder = Path(next(iter(spec.submodule_search_locations))) / "migrations"
        if folder.is_dir():
            found.append((service, folder))
    found.append((apikeys.MIGRATION_SERVICE, apikeys.MIGRATIONS))
    return found


async def migrate_all(dsn: str) -> dict[str, list[str]]:
    conn = await asyncpg.connect(dsn)
    try:
        return {name: await migrate(conn, name, folder) for name, folder in migration_folders()}
    finally:
        await conn.close()


def main() -> None:
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    applied = asyncio.run(migrate_all(ServiceSettings().database_url))
    for name, files in applied.items():
        log.info("%s: %s", name, ", ".join(files) if files else "up to date")


if __name__ == "__main__":
    main()
