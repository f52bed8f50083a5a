"""Settings of the registry service: one pydantic-settings class, every field documented."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from tollgate_core.settings import ServiceSettings


class RegistrySettings(ServiceSettings):
    """Settings of the registry (environment prefix ``TOLLGATE_REGISTRY_``; the artifact store and the model
    catalog are shared settings: ``TOLLGATE_ARTIFACT_DIR``, ``TOLLGATE_MODELS_DIR``)."""

    model_config = SettingsConfigDict(env_prefix="TOLLGATE_REGISTRY_", extra="ignore")

    http_port: int = Field(8082, description="Port of the registry API.")
    canary_poll_seconds: float = Field(
        1.0, gt=0, description="How often ended canary periods are looked for."
    )
    outbox_poll_seconds: float = Field(
        0.5, gt=0, description="Outbox relay poll interval (it is also woken after every commit)."
    )
    db_pool_size: int = Field(5, ge=2, description="Most PostgreSQL connections.")
