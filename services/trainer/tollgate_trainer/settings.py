"""Settings of the trainer service: one pydantic-settings class, every field documented."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from tollgate_core.settings import ServiceSettings

# Global feature importance of every candidate (tollgate_trainer.importance): its default bounds.
IMPORTANCE_ROWS = 2000
IMPORTANCE_REPEATS = 5


class TrainerSettings(ServiceSettings):
    """Settings of the trainer (environment prefix ``TOLLGATE_TRAINER_``)."""

    model_config = SettingsConfigDict(env_prefix="TOLLGATE_TRAINER_", extra="ignore")

    http_port: int = Field(8086, description="Port of the operations API (runs, training requests, metrics).")
    poll_seconds: float = Field(1.0, description="How often the scheduler checks the triggers.")
    code_version: str | None = Field(None, description="Recorded in lineage; default: the git commit.")
    contracts_dir: str | None = Field(
        None, description="Dataset contracts folder (default schemas/datasets)."
    )
    importance_rows: int = Field(
        IMPORTANCE_ROWS,
        ge=2,
        description="Global feature importance of every candidate (permutation on its ONNX model): most "
        "holdout rows measured (a seeded sample of a larger holdout).",
    )
    importance_repeats: int = Field(
        IMPORTANCE_REPEATS,
        ge=1,
        description="Global feature importance: shuffles per feature; the cost is 1 + features x repeats "
        "model runs of at most importance_rows rows.",
    )
    submission_max_file_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1,
        description="Largest ONNX or skops file of a model submission (each); 413 above. The submission "
        "route's body may hold both files plus 1 MiB of form fields.",
    )
