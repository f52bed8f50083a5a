"""The restricted database role the service writes with, and proof that the trail is append-only.

Three layers, each independent of the others:

1. The runtime role (``tollgate_audit_writer``) is granted INSERT and SELECT on the audit tables and nothing
   else: an UPDATE, DELETE or TRUNCATE through the service's own connection fails on privileges.
2. Triggers refuse UPDATE, DELETE and TRUNCATE for every role, the tables' owner included, so a mistake or a
   script run as the owner cannot change the trail either; only disabling or dropping a trigger (which needs
   the owner) gets past them, and that leaves a schema change behind.
3. The hash chain and signed checkpoints detect what the first two cannot prevent: a superuser or an owner
   who disabled the triggers.

Creating a role needs CREATEROLE, which the platform's owner role does not have: the stack creates the
writer role as the database superuser (``SETUP_SQL``; ``tollgate audit db-setup`` runs it). The service
normally connects as the writer itself (``TOLLGATE_DATABASE_URL`` names it; the local stack, docker-compose
and the chart do so): ``python -m tollgate_core.migrate``, run as the owner, applied its migrations and grants.
Given the owner's DSN instead, the service migrates and grants the writer its privileges (``grant``) on
every start, then writes as the writer; without the role it writes as the owner and reports the trail as
"triggers only" in ``/readyz``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import asyncpg

from tollgate_core import db_roles
from tollgate_core.db import Conn

AUDIT_TABLES = db_roles.AUDIT_TABLES
TRIGGERS = {
    "audit_events": ("audit_events_append_only", "audit_events_no_truncate"),
    "audit_checkpoints": ("audit_checkpoints_append_only", "audit_checkpoints_no_truncate"),
    "audit_signing_keys": ("audit_signing_keys_append_only", "audit_signing_keys_no_truncate"),
    "audit_stream_damage": ("audit_stream_damage_append_only", "audit_stream_damage_no_truncate"),
    "audit_damage_acks": ("audit_damage_acks_append_only", "audit_damage_acks_no_truncate"),
    "audit_key_rotations": ("audit_key_rotations_append_only", "audit_key_rotations_no_truncate"),
}
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"{name!r} is not a plain lower-case SQL identifier")
    return name


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def setup_sql(role: str, password: str) -> str:
    """SQL a role with CREATEROLE (the superuser) runs once per cluster: the writer role, login only.

    NOINHERIT and no memberships: the role can never pick up the owner's privileges.
    """
    r = _ident(role)
    return f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {_literal(r)}) THEN
        CREATE ROLE {r} LOGIN;
    END IF;
END
$$;
ALTER ROLE {r} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS
    PASSWORD {_literal(password)};
"""


async def role_exists(conn: asyncpg.Connection, role: str) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)", role))


async def can_create_roles(conn: asyncpg.Connection) -> bool:
    return bool(
        await conn.fetchval("SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user")
    )


async def grant(conn: asyncpg.Connection, role: str) -> None:
    """As the tables' owner: INSERT and SELECT for the writer on the audit tables, SELECT on the trail's view,
    the API keys and the migration ledger, and explicitly nothing else (``tollgate_core.db_roles``, which
    ``python -m tollgate_core.migrate`` applies to every service role)."""
    await db_roles.grant(conn, replace(db_roles.role_of("audit-log"), role=_ident(role)))


@dataclass(frozen=True)
class AppendOnlyStatus:
    """What protects the trail as seen from the service's runtime connection."""

    user: str
    restricted_role: bool  # the runtime user can only INSERT/SELECT
    triggers: bool  # every append-only trigger exists and is enabled
    detail: str

    @property
    def summary(self) -> str:
        if self.restricted_role and self.triggers:
            return f"ok: role {self.user} (INSERT, SELECT only) and append-only triggers"
        if self.triggers:
            return f"degraded: triggers only ({self.detail})"
        return f"broken: {self.detail}"


async def append_only_status(conn: Conn, writer_role: str) -> AppendOnlyStatus:
    user = await conn.fetchval("SELECT current_user")
    rows = await conn.fetch(
        """SELECT c.relname AS table, t.tgname AS trigger, t.tgenabled::text AS enabled
           FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
           WHERE c.relname = ANY($1::text[]) AND NOT t.tgisinternal""",
        list(AUDIT_TABLES),
    )
    present = {(r["table"], r["trigger"]): r["enabled"] for r in rows}
    missing = [
        f"{t}.{name}" for t, names in TRIGGERS.items() for name in names if present.get((t, name)) is None
    ]
    disabled = [
        f"{t}.{name}" for t, names in TRIGGERS.items() for name in names if present.get((t, name)) == "D"
    ]
    triggers_ok = not missing and not disabled
    mutating = await conn.fetch(
        """SELECT t AS table, p AS privilege FROM unnest($1::text[]) AS t, unnest(ARRAY['UPDATE','DELETE','TRUNCATE']) AS p
           WHERE has_table_privilege(current_user, t, p)""",
        list(AUDIT_TABLES),
    )
    superuser = bool(await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))
    restricted = user == writer_role and not mutating and not superuser
    problems = []
    if missing:
        problems.append("triggers missing: " + ", ".join(missing))
    if disabled:
        problems.append("triggers disabled: " + ", ".join(disabled))
    if user != writer_role:
        problems.append(f"writing as {user}, not as the restricted role {writer_role}")
    elif mutating:
        problems.append(f"{user} may " + ", ".join(sorted({r["privilege"] for r in mutating})))
    return AppendOnlyStatus(user, restricted, triggers_ok, "; ".join(problems) or "ok")
