"""Checks that a service's migrations create its outbox table exactly as the core library defines it.

Applied migrations are checksummed, so each service writes the outbox DDL out by hand in one of its SQL
files; these helpers compare that copy with ``outbox_ddl`` statement by statement.
"""

from __future__ import annotations

from pathlib import Path

from tollgate_core.outbox import outbox_ddl


def _statements(sql: str) -> list[str]:
    """The SQL statements of ``sql``, comments dropped and whitespace collapsed."""
    lines = [line.split("--", 1)[0].strip() for line in sql.splitlines()]
    return [" ".join(s.split()) for s in " ".join(x for x in lines if x).split(";") if s.strip()]


def missing_outbox_statements(migrations: Path, table: str) -> list[str]:
    """The statements of ``outbox_ddl(table)`` that no migration file in ``migrations`` contains."""
    sql = "\n".join(p.read_text(encoding="utf-8") for p in sorted(Path(migrations).glob("*.sql")))
    stated = _statements(sql)
    return [statement for statement in _statements(outbox_ddl(table)) if statement not in stated]
