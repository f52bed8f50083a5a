"""The registry's migration carries the outbox table exactly as the core library defines it."""

from __future__ import annotations

from pathlib import Path

import tollgate_registry.app as registry_app
from tollgate_core.outbox import outbox_ddl
from tollgate_registry.postgres import OUTBOX_TABLE


def _statements(sql: str) -> list[str]:
    lines = [line.split("--", 1)[0].strip() for line in sql.splitlines()]
    return [" ".join(s.split()) for s in " ".join(x for x in lines if x).split(";") if s.strip()]


def test_the_outbox_table_matches_outbox_ddl() -> None:
    migrations = Path(registry_app.MIGRATIONS)
    sql = "\n".join(p.read_text(encoding="utf-8") for p in sorted(migrations.glob("*.sql")))
    stated = _statements(sql)
    for statement in _statements(outbox_ddl(OUTBOX_TABLE)):
        assert statement in stated, statement


def test_settings_defaults_and_lifecycle_schema() -> None:
    settings = registry_app.RegistrySettings.model_construct()
    assert registry_app.RegistrySettings.model_fields["http_port"].default == 8082
    assert settings.model_config.get("env_prefix") == "TOLLGATE_REGISTRY_"
    assert registry_app.lifecycle_schema_id() == "models.lifecycle.v1"
