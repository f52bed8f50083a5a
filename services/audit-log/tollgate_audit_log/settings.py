"""Settings of the audit-log service (environment prefix ``TOLLGATE_AUDIT_LOG_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from tollgate_core.settings import ServiceSettings

DEVELOPMENT_WRITER_PASSWORD = "tollgate-audit-writer"
WRITER_ROLE = "tollgate_audit_writer"


class AuditLogSettings(ServiceSettings):
    """Settings of the audit-log service (environment prefix ``TOLLGATE_AUDIT_LOG_``)."""

    model_config = SettingsConfigDict(env_prefix="TOLLGATE_AUDIT_LOG_", extra="ignore")

    http_port: int = Field(8084, description="Port of the compliance query API.")
    writer_role: str = Field(
        WRITER_ROLE,
        description="Restricted PostgreSQL role the service writes and reads with at run time (INSERT and "
        "SELECT only). When TOLLGATE_DATABASE_URL names this role the service connects with it and expects "
        "migrations and grants applied (python -m tollgate_core.migrate as the owner); when it names the "
        "owner, the service migrates, grants and then writes as this role.",
    )
    writer_password: SecretStr = Field(
        SecretStr(DEVELOPMENT_WRITER_PASSWORD),
        description="Password of the writer role (not needed when TOLLGATE_DATABASE_URL names the writer).",
    )
    require_writer_role: bool = Field(
        False,
        description="Refuse to start when the writer role cannot log in (always on in production); otherwise "
        "the service writes as the owner and /readyz reports the trail as protected by triggers only.",
    )
    signing_key_path: str | None = Field(
        None,
        description="Ed25519 private key (PEM) that signs checkpoints; default <repo>/.local/audit/ed25519.pem, "
        "generated on first start outside production.",
    )
    trusted_public_keys: list[str] = Field(
        default_factory=list,
        description="PEM public keys (paths) of earlier signing keys whose checkpoints /v1/audit/verify must "
        "still accept after a key rotation; the current key is always trusted. Keys found only in the "
        "database are never trusted by the service.",
    )
    witness_dir: str | None = Field(
        None,
        description="Append-only directory every signed tree head is also written to (<stream>.jsonl), "
        "ideally a mount of another host; default <repo>/.local/audit/witness/<topic namespace>.<database>. "
        "Empty string: none.",
    )
    publish_heads: bool = Field(
        True, description="Also publish every signed tree head to the audit.checkpoints topic."
    )
    checkpoint_rows: int = Field(
        10_000, ge=1, description="Sign a checkpoint once a stream has this many new rows."
    )
    checkpoint_interval_s: float = Field(
        5.0,
        gt=0,
        description="... or when this much time passed since the last one and there are new rows: the "
        "unsealed tail (rows no signed head covers yet) is at most this old.",
    )
    checkpoint_max_rows: int = Field(
        100_000, ge=1, description="Rows one checkpoint covers at most (a backlog is sealed in several)."
    )
    batch_max_records: int = Field(5000, ge=1, description="Records consumed and appended per batch.")
    audit_validated: bool = Field(
        False,
        description="Also record events.validated (every accepted data record). Off by default: volume, and "
        "the candidates' lineage already pins the exact training data by offsets.",
    )
    api_key_refresh_s: float = Field(
        30.0, gt=0, description="How often API keys are reloaded (revocation delay)."
    )
    page_max: int = Field(1000, ge=1, description="Largest page a query may ask for.")
    dlq_refresh_s: float = Field(
        15.0,
        gt=0,
        description="How often every service's DLQ depth and oldest pending age are read for /metrics.",
    )

    @model_validator(mode="after")
    def _production_writes_as_the_writer_role(self) -> AuditLogSettings:
        if not self.is_development():
            self.require_writer_role = True
        return self

    def missing_secrets(self) -> list[str]:
        missing = super().missing_secrets()
        if self.connects_as_writer():
            from urllib.parse import unquote, urlsplit

            if unquote(urlsplit(self.database_url).password or "") == DEVELOPMENT_WRITER_PASSWORD:
                missing.append("TOLLGATE_DATABASE_URL (its password)")
        elif self.writer_password.get_secret_value() in ("", DEVELOPMENT_WRITER_PASSWORD):
            missing.append("TOLLGATE_AUDIT_LOG_WRITER_PASSWORD")
        if not self.signing_key_path:
            missing.append("TOLLGATE_AUDIT_LOG_SIGNING_KEY_PATH")
        return missing

    def signing_key_file(self) -> Path:
        if self.signing_key_path:
            return Path(self.signing_key_path)
        from tollgate_core.paths import repo_root

        return repo_root() / ".local" / "audit" / "ed25519.pem"

    def witness_path(self) -> Path | None:
        if self.witness_dir == "":
            return None
        if self.witness_dir:
            return Path(self.witness_dir)
        from urllib.parse import urlsplit

        from tollgate_core.paths import repo_root

        # One folder per trail (topic namespace and database): a fresh database is a new trail, not one
        # whose published heads went missing.
        database = urlsplit(self.database_url).path.strip("/") or "default"
        return repo_root() / ".local" / "audit" / "witness" / f"{self.topic_namespace}.{database}"

    def connects_as_writer(self) -> bool:
        """TOLLGATE_DATABASE_URL names the writer role itself (its password is in it): the service neither
        migrates nor grants, and writes with that DSN."""
        from urllib.parse import unquote, urlsplit

        return unquote(urlsplit(self.database_url).username or "") == self.writer_role

    def writer_dsn(self) -> str:
        """TOLLGATE_DATABASE_URL with the writer role's credentials."""
        return with_credentials(self.database_url, self.writer_role, self.writer_password.get_secret_value())


def with_credentials(dsn: str, user: str, password: str) -> str:
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(dsn)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}" + (
        f":{parts.port}" if parts.port else ""
    )
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
