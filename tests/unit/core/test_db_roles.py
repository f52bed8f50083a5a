"""The declared service roles cover what each service's migrations create, and nothing a service does not own."""

from __future__ import annotations

import re

import pytest

from tollgate_core import db_roles
from tollgate_core.migrate import migration_folders

CREATED = re.compile(r"^CREATE\s+(?:TABLE|VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?([a-z_][a-z0-9_]*)", re.I | re.M)


def created_by(service: str) -> set[str]:
    folders = dict(migration_folders())
    if service not in folders:
        return set()
    return {m.group(1) for path in folders[service].glob("*.sql") for m in CREATED.finditer(path.read_text())}


@pytest.mark.parametrize("spec", db_roles.SERVICE_ROLES, ids=lambda s: s.service)
def test_a_role_is_granted_only_its_own_service_tables_and_the_shared_reads(
    spec: db_roles.ServiceRole,
) -> None:
    assert set(spec.tables) <= created_by(spec.service), (
        "a role is granted a table its service does not create"
    )
    assert spec.privileges().keys() >= db_roles.COMMON.keys()
    assert all(p == ("SELECT",) for p in db_roles.COMMON.values()), "shared tables are read-only"


@pytest.mark.parametrize("service", [s for s, _ in migration_folders() if s != "apikeys"])
def test_every_table_a_service_creates_is_granted_to_its_role(service: str) -> None:
    assert created_by(service) <= set(db_roles.role_of(service).tables)


def test_no_role_may_change_the_audit_trail() -> None:
    for spec in db_roles.SERVICE_ROLES:
        for table in db_roles.AUDIT_TABLES:
            assert not {"UPDATE", "DELETE", "TRUNCATE"} & set(spec.tables.get(table, ())), (spec.role, table)
    assert db_roles.role_of("audit-log").tables == {
        **dict.fromkeys(db_roles.AUDIT_TABLES, ("SELECT", "INSERT")),
        "audit_trail": ("SELECT",),
    }


def test_roles_are_distinct_and_none_is_the_owner() -> None:
    names = [r.role for r in db_roles.SERVICE_ROLES]
    assert len(set(names)) == len(names)
    assert db_roles.OWNER_ROLE not in names
    assert all(db_roles.ident(n) == n for n in names)
