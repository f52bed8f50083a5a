"""The monitor's migrations carry the outbox table exactly as the core library defines it."""

from __future__ import annotations

from tests.unit.outbox_support import missing_outbox_statements
from tollgate_monitor.app import MIGRATIONS
from tollgate_monitor.store import OUTBOX_TABLE


def test_the_outbox_table_matches_outbox_ddl() -> None:
    assert missing_outbox_statements(MIGRATIONS, OUTBOX_TABLE) == []
