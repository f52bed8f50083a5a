"""One PostgreSQL role per service, each granted only what its code does.

The owner role (``tollgate``) owns the schema and every table; only ``python -m tollgate_core.migrate`` (the
chart's migration Job, ``infra/stack.sh`` before it starts the services, the test suite's fixtures) connects
as it. Every service connects as a login role of its own, which is no superuser and may not create roles,
databases or anything in the schema, and bypasses no row security:

=================  ======================  ==========================================================
service            role                    privileges (besides SELECT on api_keys and the ledger)
=================  ======================  ==========================================================
ingest             tollgate_ingest         ingest_event_claims: SELECT, INSERT, DELETE
validator          tollgate_validator      validator_references: SELECT, INSERT, UPDATE
trainer            tollgate_trainer        trainer_rows: SELECT, INSERT; trainer_runs, trainer_requests,
                                           trainer_outbox: SELECT, INSERT, UPDATE
registry           tollgate_registry       registry_versions, registry_outbox: SELECT, INSERT, UPDATE;
                                           registry_candidate_events, registry_transitions,
                                           registry_approvals, registry_registrations: SELECT, INSERT
scorer             tollgate_scorer         nothing else (it only reads the API keys)
monitor            tollgate_monitor        monitor_predictions: SELECT, INSERT, UPDATE, DELETE; monitor_alerts:
                                           SELECT, INSERT; its other tables: SELECT, INSERT, UPDATE
audit-log          tollgate_audit_writer   the audit tables: SELECT, INSERT (never UPDATE, DELETE, TRUNCATE)
=================  ======================  ==========================================================

A role is created, with its password, by a role with CREATEROLE (``infra/postgres/roles.sql`` in the local
stack and docker-compose, CloudNativePG's managed roles in the chart); passwords never appear in SQL files.
:func:`apply_grants` runs as the owner after the migrations, on every ``migrate``: for each role it revokes
everything on every table and sequence of the schema, then grants what the table below declares (and USAGE
on the sequences behind the columns of the tables it inserts into), so a database converges whatever it was
granted before. A role that does not exist is skipped (and reported); a role with SUPERUSER, CREATEROLE,
CREATEDB, BYPASSRLS or REPLICATION stops the migration.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import asyncpg

log = logging.getLogger(__name__)

OWNER_ROLE = "tollgate"
SELECT, INSERT, UPDATE, DELETE = "SELECT", "INSERT", "UPDATE", "DELETE"
READ_ONLY = (SELECT,)
APPEND = (SELECT, INSERT)
UPSERT = (SELECT, INSERT, UPDATE)

# What every service reads: the API keys its HTTP API checks, and the migration ledger (a service connected
# as its own role checks that its migrations were applied, and may not apply them).
COMMON: Mapping[str, tuple[str, ...]] = {"api_keys": READ_ONLY, "tollgate_migrations": READ_ONLY}

AUDIT_TABLES = (
    "audit_events",
    "audit_checkpoints",
    "audit_signing_keys",
    "audit_stream_damage",
    "audit_damage_acks",
    "audit_key_rotations",
)
# Attributes no service role may have.
FORBIDDEN_ATTRIBUTES = ("rolsuper", "rolcreaterole", "rolcreatedb", "rolbypassrls", "rolreplication")
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class ServiceRole:
    """A service's PostgreSQL login role and the privileges it has on each table (or view)."""

    service: str
    role: str
    tables: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def privileges(self) -> dict[str, tuple[str, ...]]:
        return {**COMMON, **self.tables}


SERVICE_ROLES: tuple[ServiceRole, ...] = (
    ServiceRole("ingest", "tollgate_ingest", {"ingest_event_claims": (SELECT, INSERT, DELETE)}),
    ServiceRole("validator", "tollgate_validator", {"validator_references": UPSERT}),
    ServiceRole(
        "trainer",
        "tollgate_trainer",
        {
            "trainer_rows": APPEND,
            "trainer_runs": UPSERT,
            "trainer_requests": UPSERT,
            "trainer_outbox": UPSERT,  # the relay locks pending rows (FOR UPDATE) and marks them published
        },
    ),
    ServiceRole(
        "registry",
        "tollgate_registry",
        {
            "registry_versions": UPSERT,
            "registry_candidate_events": APPEND,
            "registry_transitions": APPEND,
            "registry_approvals": APPEND,
            "registry_registrations": APPEND,
            "registry_outbox": UPSERT,
        },
    ),
    ServiceRole("scorer", "tollgate_scorer"),
    ServiceRole(
        "monitor",
        "tollgate_monitor",
        {
            "monitor_versions": UPSERT,
            "monitor_partitions": UPSERT,
            "monitor_windows": UPSERT,
            "monitor_predictions": (SELECT, INSERT, UPDATE, DELETE),  # labels joined, old ones pruned
            "monitor_alerts": APPEND,
            "monitor_alert_state": UPSERT,
            "monitor_retrain": UPSERT,
            "monitor_outbox": UPSERT,
        },
    ),
    ServiceRole(
        "audit-log",
        "tollgate_audit_writer",
        {**dict.fromkeys(AUDIT_TABLES, APPEND), "audit_trail": READ_ONLY},
    ),
)
ROLES_BY_SERVICE = {r.service: r for r in SERVICE_ROLES}


def ident(name: str) -> str:
    """``name`` when it is a plain lower-case SQL identifier (it is spliced into SQL), else ValueError."""
    if not _IDENT.match(name):
        raise ValueError(f"{name!r} is not a plain lower-case SQL identifier")
    return name


def role_of(service: str) -> ServiceRole:
    try:
        return ROLES_BY_SERVICE[service]
    except KeyError:
        raise ValueError(f"no database role is declared for service {service!r}") from None


class UnsafeRole(RuntimeError):
    """A service role has an attribute no service role may have (SUPERUSER, CREATEROLE, ...)."""


async def check_attributes(conn: asyncpg.Connection, role: str) -> None:
    row = await conn.fetchrow(
        f"SELECT {', '.join(FORBIDDEN_ATTRIBUTES)} FROM pg_roles WHERE rolname = $1", role
    )
    if row is None:
        return
    bad = [name.removeprefix("rol").upper() for name in FORBIDDEN_ATTRIBUTES if row[name]]
    if bad:
        raise UnsafeRole(
            f"the service role {role} has {', '.join(bad)}: a service role must have none of them "
            f"(ALTER ROLE {role} NO{' NO'.join(bad)})"
        )


async def grant(conn: asyncpg.Connection, spec: ServiceRole) -> list[str]:
    """As the tables' owner: everything revoked from ``spec.role``, then exactly its privileges granted.
    Tables that do not exist (a service whose package is not installed) are skipped; returns them."""
    r = ident(spec.role)
    skipped: list[str] = []
    async with conn.transaction():
        # Replicas and migration runs at the same time would race on the same catalog rows.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('tollgate-grants'))")
        await conn.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {r}")
        await conn.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {r}")
        await conn.execute(f"REVOKE CREATE ON SCHEMA public FROM {r}")
        for table, privileges in spec.privileges().items():
            if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", ident(table)):
                skipped.append(table)
                continue
            await conn.execute(f"GRANT {', '.join(privileges)} ON {table} TO {r}")
            if INSERT in privileges:
                sequences = await conn.fetch(
                    """SELECT pg_get_serial_sequence($1, attname) AS seq FROM pg_attribute
                       WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped""",
                    table,
                )
                for row in sequences:
                    if row["seq"] is not None:
                        await conn.execute(f"GRANT USAGE ON SEQUENCE {row['seq']} TO {r}")
    return skipped


async def apply_grants(conn: asyncpg.Connection) -> dict[str, str]:
    """Every declared service role's grants, as the owner; ``{role: outcome}``. PUBLIC may not create in the
    schema (PostgreSQL 15's default, made explicit for databases created before it)."""
    await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    outcome: dict[str, str] = {}
    for spec in SERVICE_ROLES:
        if not await conn.fetchval("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)", spec.role):
            outcome[spec.role] = "role missing, not granted (create it: infra/postgres/roles.sql)"
            log.warning("database role %s (%s) does not exist: no grants", spec.role, spec.service)
            continue
        await check_attributes(conn, spec.role)
        skipped = await grant(conn, spec)
        outcome[spec.role] = "granted" + (f" (tables not found: {', '.join(skipped)})" if skipped else "")
    return outcome
