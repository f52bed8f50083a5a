"""Each service's PostgreSQL role on the real database: exactly the privileges ``tollgate_core.db_roles``
declares, and every forbidden statement refused with InsufficientPrivilegeError (another service's tables,
UPDATE/DELETE/TRUNCATE of the audit trail, the API keys and the ledger, creating anything, altering or
dropping a table). The integration and e2e suites run every service with its own role, which shows each role
can do what its service does."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.conftest import role_password, service_dsn
from tollgate_core import db_roles
from tollgate_core.db import MigrationsPending, migrate
from tollgate_core.migrate import migrate_all

SERVICES = [r.service for r in db_roles.SERVICE_ROLES]
PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")

# (what, statement, services allowed to run it). Every other service's role must be refused. Statements run
# in a transaction that is always rolled back (CREATE DATABASE cannot run in one, and is refused before it
# does anything).
EVERYONE_REFUSED: frozenset[str] = frozenset()
FORBIDDEN: list[tuple[str, str, frozenset[str]]] = [
    ("read the audit trail", "SELECT count(*) FROM audit_events", frozenset({"audit-log"})),
    ("read the audit trail's view", "SELECT count(*) FROM audit_trail", frozenset({"audit-log"})),
    ("read audit checkpoints", "SELECT count(*) FROM audit_checkpoints", frozenset({"audit-log"})),
    ("write the audit trail", "INSERT INTO audit_events DEFAULT VALUES", frozenset({"audit-log"})),
    ("change the audit trail", "UPDATE audit_events SET stream = stream", EVERYONE_REFUSED),
    ("delete from the audit trail", "DELETE FROM audit_events", EVERYONE_REFUSED),
    ("truncate the audit trail", "TRUNCATE audit_events", EVERYONE_REFUSED),
    ("delete audit checkpoints", "DELETE FROM audit_checkpoints", EVERYONE_REFUSED),
    ("change audit signing keys", "UPDATE audit_signing_keys SET key_id = key_id", EVERYONE_REFUSED),
    ("delete damage records", "DELETE FROM audit_stream_damage", EVERYONE_REFUSED),
    ("disable the trail's triggers", "ALTER TABLE audit_events DISABLE TRIGGER ALL", EVERYONE_REFUSED),
    ("read registry versions", "SELECT count(*) FROM registry_versions", frozenset({"registry"})),
    ("record a transition", "INSERT INTO registry_transitions DEFAULT VALUES", frozenset({"registry"})),
    ("record an approval", "INSERT INTO registry_approvals DEFAULT VALUES", frozenset({"registry"})),
    ("delete transitions", "DELETE FROM registry_transitions", EVERYONE_REFUSED),
    ("delete approvals", "DELETE FROM registry_approvals", EVERYONE_REFUSED),
    ("read training rows", "SELECT count(*) FROM trainer_rows", frozenset({"trainer"})),
    ("read training requests", "SELECT count(*) FROM trainer_requests", frozenset({"trainer"})),
    ("delete training runs", "DELETE FROM trainer_runs", EVERYONE_REFUSED),
    ("read ingest claims", "SELECT count(*) FROM ingest_event_claims", frozenset({"ingest"})),
    ("read monitor predictions", "SELECT count(*) FROM monitor_predictions", frozenset({"monitor"})),
    ("delete monitor alerts", "DELETE FROM monitor_alerts", EVERYONE_REFUSED),
    (
        "write validator references",
        "INSERT INTO validator_references DEFAULT VALUES",
        frozenset({"validator"}),
    ),
    ("create an API key", "INSERT INTO api_keys DEFAULT VALUES", EVERYONE_REFUSED),
    ("revoke API keys", "UPDATE api_keys SET revoked_at = now()", EVERYONE_REFUSED),
    ("delete API keys", "DELETE FROM api_keys", EVERYONE_REFUSED),
    ("rewrite the migration ledger", "DELETE FROM tollgate_migrations", EVERYONE_REFUSED),
    ("create a table", "CREATE TABLE role_probe (x integer)", EVERYONE_REFUSED),
    (
        "create a function",
        "CREATE FUNCTION role_probe() RETURNS integer LANGUAGE sql AS 'SELECT 1'",
        EVERYONE_REFUSED,
    ),
    ("alter its own table", "ALTER TABLE api_keys ADD COLUMN role_probe integer", EVERYONE_REFUSED),
    ("drop a table", "DROP TABLE ingest_event_claims", EVERYONE_REFUSED),
    ("create a role", "CREATE ROLE role_probe", EVERYONE_REFUSED),
    ("create a database", "CREATE DATABASE role_probe", EVERYONE_REFUSED),
    ("become the owner", "SET ROLE tollgate", EVERYONE_REFUSED),
    ("become the audit writer", "SET ROLE tollgate_audit_writer", frozenset({"audit-log"})),
]
CASES = [
    pytest.param(service, sql, id=f"{service}-{what.replace(' ', '-')}")
    for what, sql, allowed in FORBIDDEN
    for service in SERVICES
    if service not in allowed
]


def _require_roles() -> None:
    missing = [s for s in SERVICES if not role_password(s)]
    if missing:
        pytest.skip(f"no local passwords for the roles of {missing} (infra/stack.sh makes them)")


@pytest.fixture
async def connect(database_url: str) -> AsyncIterator[object]:
    _require_roles()
    opened: list[asyncpg.Connection] = []

    async def _connect(service: str) -> asyncpg.Connection:
        conn = await asyncpg.connect(service_dsn(service, database_url))
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        await conn.close()


@pytest.mark.parametrize("service,sql", CASES)
async def test_service_role_is_refused(connect, service: str, sql: str) -> None:  # type: ignore[no-untyped-def]
    conn = await connect(service)
    assert await conn.fetchval("SELECT current_user") == db_roles.role_of(service).role
    if sql.startswith("CREATE DATABASE"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(sql)
        return
    tx = conn.transaction()
    await tx.start()
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(sql)
    finally:
        await tx.rollback()


@pytest.mark.parametrize("service", SERVICES)
async def test_service_role_has_exactly_the_declared_privileges(database_url: str, service: str) -> None:
    """Every relation of the schema by every table privilege, as PostgreSQL reports them for the role: what
    the declaration lists and nothing else; no CREATE on the schema or the database; no dangerous attribute."""
    _require_roles()
    spec = db_roles.role_of(service)
    conn = await asyncpg.connect(database_url)
    try:
        relations = [
            r["relname"]
            for r in await conn.fetch(
                """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'p')"""
            )
        ]
        assert set(spec.privileges()) <= set(relations), "a declared table does not exist"
        held = {
            (r["rel"], r["priv"])
            for r in await conn.fetch(
                """SELECT rel, priv FROM unnest($1::text[]) AS rel, unnest($2::text[]) AS priv
                   WHERE has_table_privilege($3, rel, priv)""",
                relations,
                list(PRIVILEGES),
                spec.role,
            )
        }
        declared = {(t, p) for t, privileges in spec.privileges().items() for p in privileges}
        assert held == declared
        assert not await conn.fetchval("SELECT has_schema_privilege($1, 'public', 'CREATE')", spec.role)
        assert not await conn.fetchval(
            "SELECT has_database_privilege($1, current_database(), 'CREATE')", spec.role
        )
        attributes = await conn.fetchrow(
            f"SELECT {', '.join(db_roles.FORBIDDEN_ATTRIBUTES)} FROM pg_roles WHERE rolname = $1", spec.role
        )
        assert attributes is not None and not any(attributes.values())
    finally:
        await conn.close()


async def test_audit_writer_may_only_insert_and_select_on_the_trail(database_url: str) -> None:
    _require_roles()
    conn = await asyncpg.connect(database_url)
    try:
        for table in db_roles.AUDIT_TABLES:
            rights = {
                p
                for p in PRIVILEGES
                if await conn.fetchval(
                    "SELECT has_table_privilege('tollgate_audit_writer', $1, $2)", table, p
                )
            }
            assert rights == {"SELECT", "INSERT"}, table
    finally:
        await conn.close()


async def test_migrate_converges_grants_of_an_existing_database(own_database: str) -> None:
    """Extra privileges granted by hand are taken back, and missing ones given, by running migrate again."""
    _require_roles()
    await migrate_all(own_database)
    conn = await asyncpg.connect(own_database)
    try:
        await conn.execute("GRANT UPDATE, DELETE, TRUNCATE ON audit_events TO tollgate_audit_writer")
        await conn.execute("GRANT SELECT ON audit_events, registry_versions TO tollgate_scorer")
        await conn.execute("REVOKE INSERT ON ingest_event_claims FROM tollgate_ingest")
        await migrate_all(own_database)
        check = "SELECT has_table_privilege($1, $2, $3)"
        assert not await conn.fetchval(check, "tollgate_audit_writer", "audit_events", "DELETE")
        assert not await conn.fetchval(check, "tollgate_audit_writer", "audit_events", "TRUNCATE")
        assert not await conn.fetchval(check, "tollgate_scorer", "audit_events", "SELECT")
        assert not await conn.fetchval(check, "tollgate_scorer", "registry_versions", "SELECT")
        assert await conn.fetchval(check, "tollgate_ingest", "ingest_event_claims", "INSERT")
    finally:
        await conn.close()


async def test_service_role_cannot_apply_migrations(own_database: str) -> None:
    """On a database nobody migrated, a service connected as its own role is told what to run, and changes
    nothing; after migrate (as the owner) the same call is a check that passes."""
    _require_roles()
    from tollgate_ingest.app import MIGRATIONS

    dsn = service_dsn("ingest", own_database)
    conn = await asyncpg.connect(dsn)
    try:
        with pytest.raises(MigrationsPending, match=r"001_event_claims\.sql.*tollgate_core\.migrate"):
            await migrate(conn, "ingest", MIGRATIONS)
        await migrate_all(own_database)
        assert await migrate(conn, "ingest", MIGRATIONS) == []
    finally:
        await conn.close()
