"""Wires the scorer: lifecycle follower → model manager → route table; scoring core; inference log;
HTTP (hot routes in front of the FastAPI operations app); Kafka scoring stage. Nothing runs at import."""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import asyncpg
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from tollgate_core.apikeys import KeyVerifier, ensure_schema
from tollgate_core.artifacts import DirectoryArtifactStore
from tollgate_core.contracts import ContractRegistry
from tollgate_core.db import ping
from tollgate_core.http import create_http_app
from tollgate_core.kafka import TransactionalStage
from tollgate_core.limits import BodyLimits
from tollgate_core.models import model_catalog
from tollgate_core.registrations import Applied, LiveCatalog, start_following
from tollgate_core.runtime import CompactedFollower, build_stage
from tollgate_core.telemetry import setup_tracing
from tollgate_core.topics import Topics, current_schema_id
from tollgate_scorer import consumers
from tollgate_scorer.auth import Authenticator
from tollgate_scorer.core import Scorer, ScoringStats
from tollgate_scorer.follower import LifecycleFollower
from tollgate_scorer.http import ScoringApp
from tollgate_scorer.inference_log import InferenceEventEncoder, InferenceLog, KafkaLogSink
from tollgate_scorer.manager import ModelManager
from tollgate_scorer.metrics import ScorerCollector
from tollgate_scorer.openapi import add_scoring_routes
from tollgate_scorer.routing import ModelTable
from tollgate_scorer.settings import ScorerSettings
from tollgate_scorer.spool import Spool
from tollgate_scorer.stage import SERVICE, ScoringStage
from tollgate_scorer.workers import shared_registry

log = logging.getLogger(__name__)


def _version() -> str:
    try:
        return version("tollgate-scorer")
    except PackageNotFoundError:
        return "0.0.0"


class ScorerService:
    """One scorer process."""

    def __init__(self, settings: ScorerSettings) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_namespace)
        self.contracts = ContractRegistry.from_directory(settings.contracts_dir)
        # The schemas/ seed, then every registration followed (tollgate_core.registrations).
        self.live = LiveCatalog(self.contracts, model_catalog(settings.models_path()))
        self.registrations: CompactedFollower | None = None
        self.table = ModelTable()
        self.stats = ScoringStats()
        self.manager = ModelManager(
            self.table,
            DirectoryArtifactStore(settings.artifact_path()),
            self.contracts,
            settings.session_config(),
            settings.pii_key.get_secret_value().encode(),
            warmup_rounds=settings.warmup_rounds,
            explain_permutations=settings.explain_permutations,
        )
        self.inference_log: InferenceLog | None = None
        if settings.inference_log:
            self.inference_log = InferenceLog(
                sink=KafkaLogSink(
                    settings.log_bootstrap or settings.kafka_bootstrap,
                    self.topics.inference_log,
                    settings.client_id(SERVICE) + "-log",
                    settings.log_send_timeout_s,
                ),
                encoder=InferenceEventEncoder(
                    current_schema_id("inference.log"), f"{SERVICE}-{settings.instance_id}"
                ),
                spool=Spool(settings.spool_path(), settings.log_spool_max_bytes),
                policy=settings.log_spool_policy,
                batch_size=settings.log_batch_size,
                linger_s=settings.log_linger_ms / 1000.0,
                retry_s=settings.log_retry_s,
                max_queue=settings.log_max_queue,
            )
        # The catalog (seed, then registrations) says which models log reason codes with each inference.
        self.scorer = Scorer(self.table, self.inference_log, self.stats, self.live.models)
        self.tracer = setup_tracing(
            SERVICE, sample_ratio=settings.trace_sample_ratio, console=settings.otel_console
        ).get_tracer("tollgate.scorer")
        self.follower: LifecycleFollower | None = None
        self.stage: TransactionalStage | None = None
        self.handler: ScoringStage | None = None
        self.pool: Any = None
        self.verifier: KeyVerifier | None = None
        self.registry = CollectorRegistry()
        self.served_registry = self.registry  # with workers: every worker's metrics (see workers.py)
        self.metrics_loop: Any = None
        self.registry.register(
            ScorerCollector(
                self.stats,
                self.table,
                self.manager,
                self.inference_log,
                lambda: self.follower,
                lambda: self.stage.stats if self.stage is not None else None,
                lambda: self.handler.reused_request_ids if self.handler is not None else 0,
            )
        )

    async def start(self) -> None:
        s = self.settings
        self.served_registry, self.metrics_loop = shared_registry(self.registry, s)
        if s.auth_required:
            self.pool = await asyncpg.create_pool(s.database_url, min_size=1, max_size=2)
            await ensure_schema(self.pool)
            self.verifier = KeyVerifier.from_pool(
                self.pool, refresh_s=s.api_key_refresh_s, cache_size=s.api_key_cache_size
            )
            await self.verifier.refresh()
        self.live.on_change(self._contract_registered)
        # Contracts first, so that versions load against the registered ones.
        self.registrations = await start_following(
            consumers.registrations(s), self.live, s, registry=self.registry
        )
        self.follower = LifecycleFollower(
            spec=consumers.lifecycle(s),
            settings=s,
            client_id=s.client_id(SERVICE) + "-lifecycle",
            apply=self.manager.apply,
            registry=self.registry,
        )
        await self.follower.start()  # serve the right versions from the first request on
        if s.kafka_scoring:
            handler = ScoringStage(
                self.scorer,
                results_topic=self.topics.scoring_results,
                dlq_topic=self.topics.dlq(SERVICE),
                request_schema=current_schema_id("scoring.requests"),
                result_schema=current_schema_id("scoring.results"),
                producer=f"{SERVICE}-{s.instance_id}",
                tracer=self.tracer,
                recent_request_ids=s.request_id_reuse_window,
                explain_max_instances=s.explain_max_instances,
            )
            self.handler = handler
            self.stage = build_stage(
                consumers.stage(s).bind(handler, max_records=s.batch_max_records), s, registry=self.registry
            )
            await self.stage.start()

    def loops(self) -> list[Any]:
        """Background loops for ``run_service``; each runs until the process stops."""
        loops: list[Any] = []
        if self.registrations is not None:
            loops.append(self.registrations.run)
        if self.follower is not None:
            loops.append(self.follower.run)
        if self.inference_log is not None:
            loops.append(self.inference_log.run)
        if self.stage is not None:
            loops.append(self.stage.run)
        if self.verifier is not None:
            loops.append(self.verifier.run)
        if self.metrics_loop is not None:
            loops.append(self.metrics_loop)
        return loops

    async def stop(self) -> None:
        if self.stage is not None:
            await self.stage.stop()
        if self.follower is not None:
            await self.follower.stop()
        if self.registrations is not None:
            await self.registrations.stop()
        if self.inference_log is not None:
            await self.inference_log.close()
        if self.pool is not None:
            await self.pool.close()

    async def _contract_registered(self, applied: Applied) -> None:
        if applied.kind == "contract":
            await self.manager.contract_changed(applied.name)

    # ---- readiness

    def not_ready(self) -> str | None:
        """Why the scorer cannot serve yet (None when it can)."""
        if self.follower is None or not self.follower.caught_up:
            return "catching up on the model lifecycle"
        missing = [route.name for route in self.table if route.production is None and route.staging is None]
        if missing:
            return f"no loadable version of {', '.join(sorted(missing))}"
        return None

    async def _lifecycle_ready(self) -> None:
        problem = self.not_ready()
        if problem is not None:
            raise RuntimeError(problem)

    async def _kafka_ready(self) -> None:
        if self.stage is not None and not self.stage.healthy:
            raise RuntimeError("Kafka scoring stage not running")

    async def _log_ready(self) -> None:
        log_ = self.inference_log
        if log_ is not None and not log_.accepting:
            raise RuntimeError("inference log spool full: scoring is refused until Kafka is back")

    async def _db_ready(self) -> None:
        await ping(self.pool)

    def http_app(self) -> Any:
        checks = {
            "lifecycle": self._lifecycle_ready,
            "kafka": self._kafka_ready,
            "inference_log": self._log_ready,
        }
        if self.pool is not None:
            checks["postgres"] = self._db_ready
        ops: FastAPI = create_http_app(
            title="tollgate scorer",
            version=_version(),
            description="Scores ONNX model versions promoted by the registry over HTTP, the Open Inference "
            "Protocol and Kafka, with canary and shadow routing and a complete inference log.",
            registry=self.served_registry,
            checks=checks,
            keys=self.verifier,
            auth_required=self.settings.auth_required,
            limits=BodyLimits(self.settings.max_body_bytes, self.settings.http_max_json_depth),
        )
        base_openapi = ops.openapi

        def openapi() -> dict[str, Any]:
            if ops.openapi_schema is None:
                add_scoring_routes(base_openapi())
            assert ops.openapi_schema is not None
            return ops.openapi_schema

        ops.openapi = openapi  # type: ignore[method-assign]
        return ScoringApp(
            self.scorer,
            ops,
            authenticator=Authenticator(self.verifier) if self.verifier is not None else None,
            max_body_bytes=self.settings.max_body_bytes,
            max_instances=self.settings.max_instances,
            explain_max_instances=self.settings.explain_max_instances,
            ready=self.not_ready,
            model_errors=self.manager.errors.get,
            server_version=_version(),
            tracer=self.tracer,
            coalesce=self.settings.coalesce,
            coalesce_wait_us=self.settings.coalesce_wait_us,
            coalesce_max_rows=self.settings.coalesce_max_rows,
        )
