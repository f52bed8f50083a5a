"""Settings of the monitor (environment prefix ``TOLLGATE_MONITOR_``).

The drift thresholds are effect sizes, not p-values: with a few thousand rows per window every p-value test
calls the smallest harmless wobble "significant", while an effect size stays put as windows grow. The
defaults follow the practice of credit-risk model monitoring and of the common drift tools:

* PSI >= 0.2 on a numeric feature is the long-standing "significant shift" rule (< 0.1 stable, 0.1-0.2
  moderate). A one-standard-deviation shift of a normal feature gives PSI of about 1, half a standard
  deviation about 0.25; sampling noise at the minimum window size (500 rows, 10 bins) stays below 0.06 in
  99.9 % of windows.
* Jensen-Shannon distance (natural log, as scipy and Evidently compute it) >= 0.1 on a category or boolean:
  a 50/50 boolean must move by about 14 points to reach it; noise at 500 rows stays below 0.07.
* Hysteresis: a condition must hold for ``raise_after`` consecutive windows before an alert is raised and be
  absent for ``clear_after`` consecutive windows before it clears, so one unlucky window never pages anyone.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from tollgate_core.settings import ServiceSettings

DAY = 86_400.0


class MonitorSettings(ServiceSettings):
    """Settings of the monitor service."""

    model_config = SettingsConfigDict(env_prefix="TOLLGATE_MONITOR_", extra="ignore")

    http_port: int = Field(8083, description="Port of the dashboard and the monitoring API.")
    contracts_dir: str | None = Field(
        None, description="Dataset contracts folder (default schemas/datasets)."
    )

    # Windows (event time: the inference log's occurred_at).
    window_seconds: float = Field(
        60.0, gt=0, description="Length of one window step (a bucket of event time)."
    )
    window_buckets: int = Field(
        1,
        ge=1,
        le=60,
        description="Buckets one evaluated window spans: 1 = tumbling windows, N > 1 = sliding windows of N "
        "steps that move one step at a time.",
    )
    allowed_lateness_seconds: float = Field(
        5.0,
        ge=0,
        description="A bucket is evaluated once the partition's newest event time passed its end by this.",
    )
    idle_close_seconds: float = Field(
        10.0,
        gt=0,
        description="Windows also close on the wall clock: once a partition received nothing for this long, "
        "every window whose end plus the allowed lateness has passed is judged, traffic or not (a window "
        "closes at most window + lateness + this + one check interval after its start).",
    )
    min_window_rows: int = Field(
        500,
        ge=1,
        description="Windows with fewer rows decide nothing (neither drifted nor clean): too noisy.",
    )

    # Drift decisions (effect sizes; p-values are reported only).
    psi_threshold: float = Field(
        0.2, gt=0, description="PSI at or above which a numeric feature has drifted."
    )
    js_threshold: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Jensen-Shannon distance at or above which a category feature has drifted.",
    )
    prediction_psi_threshold: float = Field(
        0.2, gt=0, description="PSI of the score that counts as prediction drift."
    )
    min_drifted_features: int = Field(
        1, ge=1, description="Drifted features a window needs to count as drifted."
    )

    # Hysteresis.
    raise_after: int = Field(3, ge=1, description="Consecutive bad windows before an alert is raised.")
    clear_after: int = Field(3, ge=1, description="Consecutive good windows before a raised alert clears.")

    # Latency SLO and performance.
    latency_p99_slo_ms: float = Field(
        250.0, gt=0, description="p99 inference latency above this breaks the SLO."
    )
    min_labels: int = Field(200, ge=1, description="Labels a window needs before performance is judged.")
    performance_tolerance: float = Field(
        0.05, ge=0, description="Largest allowed drop of ROC AUC or accuracy below the holdout value."
    )
    performance_relative_tolerance: float = Field(
        0.25,
        ge=0,
        description="Largest allowed relative rise of log loss, MAE or RMSE above the holdout value.",
    )

    # Staleness.
    max_model_age_seconds: float = Field(
        30 * DAY, gt=0, description="Production versions older than this are stale."
    )
    max_label_gap_seconds: float = Field(
        7 * DAY, gt=0, description="Time without a joined label after which a production version is stale."
    )
    staleness_poll_seconds: float = Field(30.0, gt=0, description="How often staleness is checked.")

    # Retraining and housekeeping.
    retrain_cooldown_seconds: float = Field(
        3600.0, ge=0, description="At most one training request per model within this time."
    )
    label_join_ttl_seconds: float = Field(
        7 * DAY, gt=0, description="Predictions wait this long for their label."
    )
    reference_wait_seconds: float = Field(
        60.0,
        ge=0,
        description="Inference records of a version whose reference is unknown are retried this long, then "
        "counted as unreferenced and skipped.",
    )
    history_windows: int = Field(96, ge=1, le=2000, description="Windows per version shown by the dashboard.")
    max_batch_records: int = Field(2000, ge=1, description="Largest batch read from the inference log.")

    # Dashboard login: an API key exchanged for a session cookie.
    session_secret: SecretStr | None = Field(
        None,
        description="Key that signs dashboard session cookies; replicas behind one address need the same. "
        "Unset: a random key per process (sessions end when it restarts).",
    )
    session_ttl_seconds: float = Field(8 * 3600.0, gt=0, description="How long a dashboard login lasts.")
    session_cookie_secure: bool = Field(
        False, description="Mark the session cookie Secure (set it when the dashboard is served over HTTPS)."
    )

    @model_validator(mode="after")
    def _hysteresis(self) -> MonitorSettings:
        if self.window_buckets * self.window_seconds > 7 * DAY:
            raise ValueError("a window longer than seven days cannot be checkpointed compactly")
        return self

    def missing_secrets(self) -> list[str]:
        missing = super().missing_secrets()
        if self.session_secret is None or not self.session_secret.get_secret_value():
            missing.append("TOLLGATE_MONITOR_SESSION_SECRET")
        return missing
