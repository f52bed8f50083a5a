"""Services refuse to start without their secrets unless TOLLGATE_ENV is development or test."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tollgate_audit_log.settings import AuditLogSettings
from tollgate_core.settings import MissingSecrets, ServiceSettings
from tollgate_monitor.settings import MonitorSettings

SHARED_SECRETS = {
    "TOLLGATE_PII_KEY": "a-real-pii-key",
    "TOLLGATE_KAFKA_USERNAME": "registry",
    "TOLLGATE_KAFKA_PASSWORD": "kafka-s3cret",
    "TOLLGATE_DATABASE_URL": "postgresql://registry:db-s3cret@db.internal:5432/tollgate",
}
SERVICES = ["ingest", "validator", "trainer", "registry", "scorer", "monitor", "audit-log"]


@pytest.fixture
def bare_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No secret and no TOLLGATE_ENV in the environment (the suite itself runs as test)."""
    for name in list(os.environ):
        if name.startswith("TOLLGATE_") or name == "PGPASSWORD":
            monkeypatch.delenv(name)


def test_an_unset_environment_is_production_and_names_every_missing_secret(bare_environment: None) -> None:
    settings = ServiceSettings()
    assert settings.environment == "production" and not settings.is_development()
    with pytest.raises(MissingSecrets) as refused:
        settings.require_secrets()
    message = str(refused.value)
    for name in [
        "TOLLGATE_PII_KEY",
        "TOLLGATE_KAFKA_USERNAME",
        "TOLLGATE_KAFKA_PASSWORD",
        "TOLLGATE_DATABASE_URL",
    ]:
        assert name in message
    assert "TOLLGATE_ENV is 'production'" in message


@pytest.mark.parametrize("environment", ["development", "test"])
def test_development_and_test_start_without_secrets(
    bare_environment: None, monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    monkeypatch.setenv("TOLLGATE_ENV", environment)
    for settings in (ServiceSettings(), AuditLogSettings(), MonitorSettings()):
        assert settings.missing_secrets()  # missing, and allowed
        settings.require_secrets()


@pytest.mark.parametrize("environment", ["production", "staging", "Development", ""])
def test_any_other_environment_needs_the_secrets(
    bare_environment: None, monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    monkeypatch.setenv("TOLLGATE_ENV", environment)
    with pytest.raises(MissingSecrets, match="TOLLGATE_PII_KEY"):
        ServiceSettings().require_secrets()
    for name, value in SHARED_SECRETS.items():
        monkeypatch.setenv(name, value)
    ServiceSettings().require_secrets()


@pytest.mark.parametrize(
    ("dsn", "refused"),
    [
        ("postgresql://tollgate:tollgate@127.0.0.1:5432/tollgate", True),  # the public development password
        ("postgresql://registry@db/tollgate", True),
        ("postgresql://registry:@db/tollgate", True),
        ("postgresql://registry:s3cret@db/tollgate", False),
    ],
)
def test_the_database_url_needs_a_password_of_its_own(
    bare_environment: None, monkeypatch: pytest.MonkeyPatch, dsn: str, refused: bool
) -> None:
    for name, value in SHARED_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TOLLGATE_DATABASE_URL", dsn)
    assert ("TOLLGATE_DATABASE_URL (its password)" in ServiceSettings().missing_secrets()) is refused
    monkeypatch.setenv("PGPASSWORD", "from-the-environment")
    assert ServiceSettings().missing_secrets() == []


def test_services_with_secrets_of_their_own_name_them(
    bare_environment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SHARED_SECRETS.items():
        monkeypatch.setenv(name, value)
    assert AuditLogSettings().missing_secrets() == [
        "TOLLGATE_AUDIT_LOG_WRITER_PASSWORD",
        "TOLLGATE_AUDIT_LOG_SIGNING_KEY_PATH",
    ]
    assert MonitorSettings().missing_secrets() == ["TOLLGATE_MONITOR_SESSION_SECRET"]
    monkeypatch.setenv("TOLLGATE_AUDIT_LOG_WRITER_PASSWORD", "w")
    monkeypatch.setenv("TOLLGATE_AUDIT_LOG_SIGNING_KEY_PATH", "/keys/audit.pem")
    monkeypatch.setenv("TOLLGATE_MONITOR_SESSION_SECRET", "s")
    AuditLogSettings().require_secrets()
    MonitorSettings().require_secrets()


def service_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_") and k != "PGPASSWORD"}
    # Nothing is listening here: a service that got past its secrets would fail on this, differently.
    env["TOLLGATE_KAFKA_BOOTSTRAP"] = "127.0.0.1:1"
    return {**env, **extra}


def test_each_service_process_refuses_to_start_without_its_secrets() -> None:
    """The real entry points (``python -m tollgate_<service>``, all seven at once) exit with status 1 and a
    one-line reason, before they connect to anything."""
    procs = {
        service: subprocess.Popen(
            [sys.executable, "-m", f"tollgate_{service.replace('-', '_')}"],
            env=service_env(TOLLGATE_ENV="production"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for service in SERVICES
    }
    for service, proc in procs.items():
        _, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 1, f"{service}: {stderr[-2000:]}"
        assert "refusing to start without TOLLGATE_PII_KEY" in stderr, f"{service}: {stderr[-2000:]}"
        assert "Traceback" not in stderr, f"{service}: {stderr[-2000:]}"
