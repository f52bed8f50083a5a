"""Settings of the ingest service: one pydantic-settings class, every field documented."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from tollgate_core.settings import ServiceSettings


class IngestSettings(ServiceSettings):
    """Settings of the ingest service (environment prefix ``TOLLGATE_INGEST_``)."""

    model_config = SettingsConfigDict(env_prefix="TOLLGATE_INGEST_", extra="ignore")

    http_port: int = Field(8081, description="Port of the HTTP gateway.")
    max_body_bytes: int = Field(16 * 1024 * 1024, description="Largest accepted HTTP body (413 above).")
    max_events_per_request: int = Field(50_000, description="Most events in one HTTP request (413 above).")
    batch_max_records: int = Field(5000, description="Most raw messages processed in one transaction.")
    dedup_window_hours: int = Field(24 * 7, description="How long an event id stays claimed (raw retention).")
    trace_sample_ratio: float = Field(0.01, description="Share of new traces recorded as spans.")
    contracts_dir: str | None = Field(
        None, description="Dataset contracts folder (default schemas/datasets)."
    )
