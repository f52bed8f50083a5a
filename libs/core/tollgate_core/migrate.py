"""``python -m tollgate_core.migrate``: apply every service's pending migrations and the services' grants,
then exit. Run it as the owner role (``TOLLGATE_DATABASE_URL`` with the owner's credentials).

It runs before the services start (the Kubernetes chart's migration Job, ``infra/stack.sh``, the test suite),
so a failing migration stops the release instead of crash-looping every replica. Each service then connects
as its own role (``tollgate_core.db_roles``), which may not create anything: it only checks that its
migrations are applied. A service given the owner's DSN still migrates on start (``create_pool``, under an
advisory lock per service). It finds each installed service package's ``migrations`` folder without
importing the service. After the migrations every declared service role gets exactly its privileges
(:func:`tollgate_core.db_roles.apply_grants`), so running it again on an existing database converges.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from pathlib import Path

import asyncpg

from tollgate_core import apikeys, db_roles
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
    """Every migration, then every service role's grants (their outcome is logged)."""
    conn = await asyncpg.connect(dsn)
    try:
        applied = {name: await migrate(conn, name, folder) for name, folder in migration_folders()}
        for role, outcome in (await db_roles.apply_grants(conn)).items():
            log.info("role %s: %s", role, outcome)
        return applied
    finally:
        await conn.close()


def main() -> None:
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    applied = asyncio.run(migrate_all(ServiceSettings().database_url))
    for name, files in applied.items():
        log.info("%s: %s", name, ", ".join(files) if files else "up to date")


if __name__ == "__main__":
    main()
