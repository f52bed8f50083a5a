"""The registry's migration carries the outbox table exactly as the core library defines it."""

from __future__ import annotations

import tollgate_registry.app as registry_app
from tests.unit.outbox_support import missing_outbox_statements
from tollgate_registry.postgres import OUTBOX_TABLE
from tollgate_registry.settings import RegistrySettings


def test_the_outbox_table_matches_outbox_ddl() -> None:
    assert missing_outbox_statements(registry_app.MIGRATIONS, OUTBOX_TABLE) == []


def test_settings_defaults_and_lifecycle_schema() -> None:
    settings = RegistrySettings.model_construct()
    assert RegistrySettings.model_fields["http_port"].default == 8082
    assert settings.model_config.get("env_prefix") == "TOLLGATE_REGISTRY_"
    assert registry_app.lifecycle_schema_id() == "models.lifecycle.v1"
