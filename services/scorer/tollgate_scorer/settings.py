"""Settings of the scorer (environment prefix ``TOLLGATE_SCORER_``), besides the shared ones
(``TOLLGATE_KAFKA_BOOTSTRAP``, ``TOLLGATE_DATABASE_URL``, ``TOLLGATE_TOPIC_NAMESPACE``,
``TOLLGATE_ARTIFACT_DIR``, ``TOLLGATE_PII_KEY``, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from tollgate_core.settings import ServiceSettings
from tollgate_scorer.model import GraphOptimization, SessionConfig
from tollgate_scorer.server import HttpLimits


class ScorerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TOLLGATE_SCORER_", extra="ignore")

    http_port: int = Field(8080, description="Port of the scoring API, the OIP endpoints and operations.")
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Worker processes serving the one HTTP port (SO_REUSEPORT: the kernel spreads "
        "connections over them). Each worker is a whole scorer with its own inference-log producer, spool "
        "and Kafka client id (instance id <instance_id>-w<N>); a supervisor restarts a worker "
        "that dies. 1: a single process, no supervisor.",
    )
    worker_index: int | None = Field(
        None,
        description="Set by the supervisor for each worker it starts (0 .. workers-1); not set by hand.",
    )
    worker_metrics_dir: str | None = Field(
        None,
        description="Set by the supervisor: the folder where workers share their metric snapshots, so "
        "any worker's /metrics answers for all of them.",
    )
    auth_required: bool = Field(
        True,
        description="Require an API key (role scorer-client or operator) on scoring and model endpoints.",
    )
    api_key_refresh_s: float = Field(
        30.0, description="How often active API keys are reloaded (revocation delay)."
    )
    api_key_cache_size: int = Field(4096, description="Presented keys whose check result is remembered.")
    max_body_bytes: int = Field(
        8 * 1024 * 1024, description="Largest request body; 413 above, before parsing."
    )
    max_instances: int = Field(10_000, description="Most instances in one request; 413 above.")
    http_max_connections: int = Field(
        1024, description="Connections the HTTP server serves at once; one more is answered 503 and closed."
    )
    http_max_request_line_bytes: int = Field(
        8 * 1024, description="Longest request target (path and query), counted as it arrives; 414 above."
    )
    http_max_header_bytes: int = Field(
        64 * 1024, description="Most bytes of request headers, counted as they arrive; 431 and closed above."
    )
    http_header_timeout_s: float = Field(
        10.0, description="Deadline for a request line and its headers, from the first byte; 408 and closed."
    )
    http_body_timeout_s: float = Field(
        10.0, description="Longest pause inside a request body; 408 and closed after it."
    )
    http_idle_timeout_s: float = Field(
        5.0, description="A kept-alive connection with no request for this long is closed."
    )
    coalesce: bool = Field(
        True,
        description="Score single-row /v1 requests parsed in the same event-loop turn (from different "
        "connections) for the same model in one onnxruntime run; each is still routed, answered, counted and "
        "logged by itself. Off: every request is scored alone as soon as it is parsed.",
    )
    coalesce_wait_us: int = Field(
        0,
        ge=0,
        le=10_000,
        description="With coalescing, how long (microseconds) the first request of a turn may wait for others "
        "before its batch is scored. 0 (default): no waiting; a request with nothing else ready is scored at "
        "once.",
    )
    coalesce_max_rows: int = Field(
        64,
        ge=1,
        le=1024,
        description="Most requests scored together; a batch that reaches it is scored at once.",
    )
    contracts_dir: str | None = Field(
        None, description="Dataset contracts folder (default schemas/datasets)."
    )

    request_id_reuse_window: int = Field(
        100_000,
        ge=0,
        le=10_000_000,
        description="Kafka request ids remembered (the latest, with their Kafka positions) to count a "
        "request id that comes back from another position: tollgate_scorer_reused_request_ids_total. "
        "A reused id is still scored and logged with event ids of its own; about 150 bytes each.",
    )
    inference_log: bool = Field(
        True, description="Produce inference.log events. Off only to measure what logging costs (benchmarks)."
    )
    log_bootstrap: str | None = Field(
        None, description="Bootstrap servers of the inference-log producer (default: the platform's Kafka)."
    )
    log_batch_size: int = Field(5000, description="Most inference-log events per produce call.")
    log_linger_ms: float = Field(
        20.0,
        description="How long log events may wait in memory to form a batch. Fewer, larger batches halved "
        "the broker's CPU per log event on the Kafka path (measured: 12 to 6 us per event).",
    )
    log_max_queue: int = Field(
        50_000,
        description="Log events waiting in memory before the sender spills them to the spool (Kafka slower "
        "than scoring); at four times this the spool policy applies to new inferences.",
    )
    log_send_timeout_s: float = Field(
        10.0, description="A batch not acknowledged in this time goes to the spool."
    )
    log_retry_s: float = Field(1.0, description="How often Kafka is retried while events are spooled.")
    log_spool_dir: str | None = Field(
        None, description="Spool folder (default <repo>/.local/spool/scorer-<instance_id>)."
    )
    log_spool_max_bytes: int = Field(
        256 * 1024 * 1024, description="Spooled bytes not yet replayed, at most."
    )
    log_spool_policy: Literal["refuse", "drop"] = Field(
        "refuse",
        description="When the spool is full: refuse scoring (503) until there is room, or drop events and "
        "count them in tollgate_scorer_inference_log_dropped_total.",
    )

    kafka_scoring: bool = Field(True, description="Consume scoring.requests and produce scoring.results.")
    batch_max_records: int = Field(5000, description="Most Kafka scoring requests per transaction.")

    ort_intra_op_threads: int = Field(1, description="onnxruntime threads per session run (see model.py).")
    ort_graph_optimization: GraphOptimization = Field(
        "all", description="onnxruntime graph optimisation level."
    )
    ort_cpu_mem_arena: bool = Field(False, description="onnxruntime CPU memory arena.")
    warmup_rounds: int = Field(
        20, description="Single-row runs of a freshly loaded version before it serves."
    )
    trace_sample_ratio: float = Field(0.01, description="Share of new traces recorded as spans (Kafka path).")
    explain_permutations: int = Field(
        32,
        ge=2,
        le=1024,
        multiple_of=2,
        description="Tree models: permutations (antithetic pairs) per sampled-Shapley explanation; each "
        "row explained costs permutations x (features - 1) + 1 model rows, scored in one run.",
    )
    explain_max_instances: int = Field(
        100,
        ge=1,
        description="Most instances one request may ask to explain (explain: true); 413 above. Kafka "
        "requests asking to explain are explained in runs of at most this many rows. Reason codes "
        "the catalog asks for are computed for every request, whatever its size.",
    )

    def session_config(self) -> SessionConfig:
        return SessionConfig(
            intra_op_threads=self.ort_intra_op_threads,
            graph_optimization=self.ort_graph_optimization,
            cpu_mem_arena=self.ort_cpu_mem_arena,
        )

    def http_limits(self) -> HttpLimits:
        return HttpLimits(
            max_connections=self.http_max_connections,
            max_request_line_bytes=self.http_max_request_line_bytes,
            max_header_bytes=self.http_max_header_bytes,
            header_timeout_s=self.http_header_timeout_s,
            body_timeout_s=self.http_body_timeout_s,
            idle_timeout_s=self.http_idle_timeout_s,
        )

    def spool_path(self) -> Path:
        if self.log_spool_dir:
            base = Path(self.log_spool_dir)
            # Workers of one scorer never share a spool: each replays only what it spooled itself.
            return base if self.worker_index is None else base / f"worker-{self.worker_index}"
        from tollgate_core.paths import repo_root

        return repo_root() / ".local" / "spool" / f"scorer-{self.instance_id}"
