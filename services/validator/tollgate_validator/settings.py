"""Settings of the validator service: one pydantic-settings class, every field documented."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from tollgate_core.settings import ServiceSettings


class ValidatorSettings(ServiceSettings):
    """Settings of the validator (environment prefix ``TOLLGATE_VALIDATOR_``)."""

    model_config = SettingsConfigDict(env_prefix="TOLLGATE_VALIDATOR_", extra="ignore")

    http_port: int = Field(8085, description="Port of /healthz, /readyz, /metrics and the contracts listing.")
    batch_max_records: int = Field(5000, description="Most events validated in one transaction.")
    max_violations: int = Field(
        100, ge=1, description="Most violations one rejection record lists; the rest are counted."
    )
    iqr_factor: float = Field(3.0, description="How many IQRs beyond the 0.1%/99.9% training quantiles flag.")
    trace_sample_ratio: float = Field(0.01, description="Share of new traces recorded as spans.")
    contracts_dir: str | None = Field(
        None, description="Dataset contracts folder (default schemas/datasets)."
    )
