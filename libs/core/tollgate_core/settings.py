"""Settings shared by every service; each service subclasses ``ServiceSettings`` with its own env prefix.

``TOLLGATE_KAFKA_BOOTSTRAP`` and ``TOLLGATE_DATABASE_URL`` are platform-wide and read without a service prefix;
everything else is read as ``TOLLGATE_<SERVICE>_<FIELD>``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from tollgate_core.limits import BodyLimits

DEFAULT_KAFKA_BOOTSTRAP = "localhost:9092"
DEFAULT_DATABASE_URL = "postgresql://tollgate:tollgate@127.0.0.1:5432/tollgate"
# The key personal data is hashed with outside production. It is public, so production must set its own.
DEVELOPMENT_PII_KEY = "tollgate-development-pii-key"
# The environments that may run without secrets of their own (the built-in development values stand in).
# Every other value of TOLLGATE_ENV, and TOLLGATE_ENV unset, is treated as production.
DEVELOPMENT_ENVIRONMENTS = frozenset({"development", "test"})
# The password in DEFAULT_DATABASE_URL: public, like the development PII key.
DEVELOPMENT_DATABASE_PASSWORD = "tollgate"


class MissingSecrets(SystemExit):
    """A service was started outside development and test without its secrets. A ``SystemExit``: raised
    from a service's entry point, the message (naming every missing setting) is printed and the process
    exits with status 1, without a traceback."""


class ServiceSettings(BaseSettings):
    """Fields every tollgate service has. Subclasses set ``model_config`` with ``env_prefix``."""

    model_config = SettingsConfigDict(env_prefix="TOLLGATE_", extra="ignore")

    kafka_bootstrap: str = Field(
        DEFAULT_KAFKA_BOOTSTRAP,
        validation_alias=AliasChoices("TOLLGATE_KAFKA_BOOTSTRAP", "kafka_bootstrap"),
        description="Kafka bootstrap servers, comma separated.",
    )
    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        validation_alias=AliasChoices("TOLLGATE_DATABASE_URL", "database_url"),
        description="PostgreSQL DSN.",
    )
    topic_namespace: str = Field(
        "tollgate",
        validation_alias=AliasChoices("TOLLGATE_TOPIC_NAMESPACE", "topic_namespace"),
        description="First segment of every topic name; tests use their own to stay isolated.",
    )
    instance_id: str = Field(
        "0",
        description=(
            "Stable identity of this replica (0, 1, ...). It names the Kafka transactional id, so a restarted "
            "replica fences its own unfinished transaction at once instead of waiting for it to time out."
        ),
    )
    artifact_dir: str | None = Field(
        None,
        validation_alias=AliasChoices("TOLLGATE_ARTIFACT_DIR", "artifact_dir"),
        description="Folder of the content-addressed model store (default <repo>/.local/artifacts); trainer, "
        "registry and scorer must share it.",
    )
    models_dir: str | None = Field(
        None,
        validation_alias=AliasChoices("TOLLGATE_MODELS_DIR", "models_dir"),
        description="Model catalog folder (default schemas/models).",
    )
    environment: str = Field(
        "production",
        validation_alias=AliasChoices("TOLLGATE_ENV", "environment"),
        description="development, test or production (the default). Outside development and test a service "
        "refuses to start without its secrets (require_secrets); the local stack sets development.",
    )
    kafka_security_protocol: str | None = Field(
        None,
        validation_alias=AliasChoices("TOLLGATE_KAFKA_SECURITY_PROTOCOL", "kafka_security_protocol"),
        description="PLAINTEXT, SASL_PLAINTEXT or SASL_SSL (default SASL_PLAINTEXT when a username is set). "
        "Every Kafka client reads this and the three below when it is built (tollgate_core.kafka_auth).",
    )
    kafka_sasl_mechanism: str | None = Field(
        None,
        validation_alias=AliasChoices("TOLLGATE_KAFKA_SASL_MECHANISM", "kafka_sasl_mechanism"),
        description="SCRAM-SHA-512 (default), SCRAM-SHA-256 or PLAIN.",
    )
    kafka_username: str | None = Field(
        None,
        validation_alias=AliasChoices("TOLLGATE_KAFKA_USERNAME", "kafka_username"),
        description="The service's own Kafka principal (its name in the local stack and docker-compose).",
    )
    kafka_password: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("TOLLGATE_KAFKA_PASSWORD", "kafka_password"),
        description="Password of that principal.",
    )
    pii_key: SecretStr = Field(
        SecretStr(DEVELOPMENT_PII_KEY),
        validation_alias=AliasChoices("TOLLGATE_PII_KEY", "pii_key"),
        description="HMAC-SHA256 key for hashing personal data before it reaches a log; one key platform-wide, "
        "so hashed values join across services.",
    )
    http_host: str = Field("127.0.0.1", description="Address the HTTP server binds.")
    http_max_body_bytes: int = Field(
        1024 * 1024,
        description="Largest HTTP request body; 413 above, before the body is read when its length is "
        "declared (services that take files, like ingest, have their own larger limit).",
    )
    http_max_json_depth: int = Field(
        32, description="Deepest nesting of arrays and objects in a JSON request body; 400 above."
    )
    log_level: str = Field("INFO", description="Python logging level.")
    otel_console: bool = Field(False, description="Print finished spans to stdout (debugging).")

    def is_development(self) -> bool:
        """development or test: the built-in development secrets may stand in for missing ones."""
        return self.environment in DEVELOPMENT_ENVIRONMENTS

    def missing_secrets(self) -> list[str]:
        """The secrets this service runs without (or with their public development values), each named by
        the setting that provides it. Services with secrets of their own extend the list."""
        missing = []
        if self.pii_key.get_secret_value() in ("", DEVELOPMENT_PII_KEY):
            missing.append("TOLLGATE_PII_KEY")
        if not self.kafka_username:
            missing.append("TOLLGATE_KAFKA_USERNAME")
        if self.kafka_password is None or not self.kafka_password.get_secret_value():
            missing.append("TOLLGATE_KAFKA_PASSWORD")
        password = urlsplit(self.database_url).password
        if password in (None, "", DEVELOPMENT_DATABASE_PASSWORD) and not os.environ.get("PGPASSWORD"):
            missing.append("TOLLGATE_DATABASE_URL (its password)")
        return missing

    def require_secrets(self) -> None:
        """Refuse to start (:class:`MissingSecrets`) outside development and test while a secret is missing.
        Every service's entry point calls this before it connects to anything."""
        if self.is_development():
            return
        missing = self.missing_secrets()
        if missing:
            raise MissingSecrets(
                f"TOLLGATE_ENV is {self.environment!r}: refusing to start without {', '.join(missing)}. "
                "Set them (the local stack generates its own into .local/secrets.env), or run with "
                "TOLLGATE_ENV=development or TOLLGATE_ENV=test, where public development values stand in."
            )

    def body_limits(self) -> BodyLimits:
        return BodyLimits(max_body_bytes=self.http_max_body_bytes, max_json_depth=self.http_max_json_depth)

    def artifact_path(self) -> Path:
        if self.artifact_dir:
            return Path(self.artifact_dir)
        from tollgate_core.paths import repo_root

        return repo_root() / ".local" / "artifacts"

    def models_path(self) -> Path | None:
        return Path(self.models_dir) if self.models_dir else None

    def client_id(self, service: str) -> str:
        return f"tollgate-{service}-{self.instance_id}@{socket.gethostname()}"

    def consumer_group(self, service: str, *role: str) -> str:
        """A service's Kafka consumer group in this namespace: ``<namespace>.<service>[.<role>]``. The
        AsyncAPI declarations and the running consumers both take their group from here."""
        return ".".join((self.topic_namespace, service, *role))
