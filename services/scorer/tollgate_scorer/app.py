"""Wires the scorer: lifecycle follower → model manager → route table; scoring core; inference log;
HTTP (hot routes in front of the FastAPI operations app); Kafka scoring stage. Nothing runs at import."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import asyncpg
from fastapi import FastAPI
from opentelemetry.trace import Tracer
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
from tollgate_scorer import SERVICE, consumers
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
from tollgate_scorer.stage import ScoringStage
from tollgate_scorer.workers import shared_registry

log = logging.getLogger(__name__)


def _version() -> str:
    try:
        return version("tollgate-scorer")
    except PackageNotFoundError:
        return "0.0.0"


@dataclass(frozen=True, slots=True)
class ScorerParts:
    """What scores, built from the settings alone (nothing connected yet): the route table and the model
    manager that fills it, the live catalog, the scoring core and its inference log."""

    topics: Topics
    contracts: ContractRegistry
    live: LiveCatalog
    table: ModelTable
    stats: ScoringStats
    manager: ModelManager
    inference_log: InferenceLog | None
    scorer: Scorer
    tracer: Tracer

    @classmethod
    def build(cls, settings: ScorerSettings) -> ScorerParts:
        topics = Topics(settings.topic_namespace)
        contracts = ContractRegistry.from_directory(settings.contracts_dir)
        # The schemas/ seed, then every registration followed (tollgate_core.registrations).
        live = LiveCatalog(contracts, model_catalog(settings.models_path()))
        table = ModelTable()
        stats = ScoringStats()
        manager = ModelManager(
            table,
            DirectoryArtifactStore(settings.artifact_path()),
            contracts,
            settings.session_config(),
            settings.pii_key.get_secret_value().encode(),
            warmup_rounds=settings.warmup_rounds,
            explain_permutations=settings.explain_permutations,
        )
        inference_log = _inference_log(settings, topics) if settings.inference_log else None
        # The catalog (seed, then registrations) says which models log reason codes with each inference.
        scorer = Scorer(table, inference_log, stats, live.models)
        tracer = setup_tracing(
            SERVICE, sample_ratio=settings.trace_sample_ratio, console=settings.otel_console
        ).get_tracer("tollgate.scorer")
        return cls(topics, contracts, live, table, stats, manager, inference_log, scorer, tracer)


def _inference_log(settings: ScorerSettings, topics: Topics) -> InferenceLog:
    return InferenceLog(
        sink=KafkaLogSink(
            settings.log_bootstrap or settings.kafka_bootstrap,
            topics.inference_log,
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


@dataclass(frozen=True, slots=True)
class ScoringKafkaStage:
    """Scoring requests read from Kafka: the transactional stage and the handler it runs."""

    stage: TransactionalStage
    handler: ScoringStage

    @classmethod
    def build(
        cls, settings: ScorerSettings, parts: ScorerParts, metrics_registry: CollectorRegistry
    ) -> ScoringKafkaStage:
        s = settings
        handler = ScoringStage(
            parts.scorer,
            results_topic=parts.topics.scoring_results,
            dlq_topic=parts.topics.dlq(SERVICE),
            request_schema=current_schema_id("scoring.requests"),
            result_schema=current_schema_id("scoring.results"),
            producer=f"{SERVICE}-{s.instance_id}",
            tracer=parts.tracer,
            recent_request_ids=s.request_id_reuse_window,
            explain_max_instances=s.explain_max_instances,
        )
        stage = build_stage(
            consumers.stage(s).bind(handler, max_records=s.batch_max_records), s, registry=metrics_registry
        )
        return cls(stage, handler)


class ScorerService:
    """One scorer process, connected: build it with :meth:`create`. The inference log, the Kafka scoring
    stage and the API keys' pool are absent only when the settings turn them off."""

    def __init__(
        self,
        *,
        settings: ScorerSettings,
        parts: ScorerParts,
        metrics_registry: CollectorRegistry,
        served_registry: CollectorRegistry,
        metrics_loop: Callable[[], Coroutine[Any, Any, None]] | None,
        pool: asyncpg.Pool | None,
        verifier: KeyVerifier | None,
        registrations: CompactedFollower,
        follower: LifecycleFollower,
        stage: ScoringKafkaStage | None,
    ) -> None:
        self.settings = settings
        self.topics = parts.topics
        self.contracts = parts.contracts
        self.live = parts.live
        self.table = parts.table
        self.stats = parts.stats
        self.manager = parts.manager
        self.inference_log = parts.inference_log
        self.scorer = parts.scorer
        self.tracer = parts.tracer
        self.metrics_registry = metrics_registry
        self.served_registry = served_registry  # with workers: every worker's metrics (see workers.py)
        self.metrics_loop = metrics_loop
        self.pool = pool
        self.verifier = verifier
        self.registrations = registrations
        self.follower = follower
        self.stage = stage

    @classmethod
    async def create(cls, settings: ScorerSettings) -> ScorerService:
        """The API keys (when required), the registrations followed up to their end, the lifecycle followed
        (the right versions served from the first request on) and the Kafka scoring stage (when on); what
        started is stopped again if a later step fails."""
        s = settings
        parts = ScorerParts.build(s)
        metrics_registry = CollectorRegistry()
        async with contextlib.AsyncExitStack() as undo:
            pool: asyncpg.Pool | None = None
            verifier: KeyVerifier | None = None
            if s.auth_required:
                pool = await asyncpg.create_pool(s.database_url, min_size=1, max_size=2)
                undo.push_async_callback(pool.close)
                await ensure_schema(pool)
                verifier = KeyVerifier.from_pool(
                    pool, refresh_s=s.api_key_refresh_s, cache_size=s.api_key_cache_size
                )
                await verifier.refresh()

            async def contract_registered(applied: Applied) -> None:
                if applied.kind == "contract":
                    await parts.manager.contract_changed(applied.name)

            parts.live.on_change(contract_registered)
            # Contracts first, so that versions load against the registered ones.
            registrations = await start_following(
                consumers.registrations(s), parts.live, s, registry=metrics_registry
            )
            undo.push_async_callback(registrations.stop)
            follower = LifecycleFollower(
                spec=consumers.lifecycle(s),
                settings=s,
                client_id=s.client_id(SERVICE) + "-lifecycle",
                apply=parts.manager.apply,
                registry=metrics_registry,
            )
            await follower.start()  # serve the right versions from the first request on
            undo.push_async_callback(follower.stop)
            stage: ScoringKafkaStage | None = None
            if s.kafka_scoring:
                stage = ScoringKafkaStage.build(s, parts, metrics_registry)
                await stage.stage.start()
                undo.push_async_callback(stage.stage.stop)
            metrics_registry.register(
                ScorerCollector(
                    parts.stats,
                    parts.table,
                    parts.manager,
                    parts.inference_log,
                    lambda: follower,
                    lambda: stage.stage.stats if stage is not None else None,
                    lambda: stage.handler.reused_request_ids if stage is not None else 0,
                )
            )
            served_registry, metrics_loop = shared_registry(metrics_registry, s)
            service = cls(
                settings=s,
                parts=parts,
                metrics_registry=metrics_registry,
                served_registry=served_registry,
                metrics_loop=metrics_loop,
                pool=pool,
                verifier=verifier,
                registrations=registrations,
                follower=follower,
                stage=stage,
            )
            undo.pop_all()
        return service

    def loops(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        """Background loops for ``run_service``; each runs until the process stops."""
        loops: list[Callable[[], Coroutine[Any, Any, None]]] = [self.registrations.run, self.follower.run]
        if self.inference_log is not None:
            loops.append(self.inference_log.run)
        if self.stage is not None:
            loops.append(self.stage.stage.run)
        if self.verifier is not None:
            loops.append(self.verifier.run)
        if self.metrics_loop is not None:
            loops.append(self.metrics_loop)
        return loops

    async def stop(self) -> None:
        if self.stage is not None:
            await self.stage.stage.stop()
        await self.follower.stop()
        await self.registrations.stop()
        if self.inference_log is not None:
            await self.inference_log.close()
        if self.pool is not None:
            await self.pool.close()

    # ---- readiness

    def not_ready(self) -> str | None:
        """Why the scorer cannot serve yet (None when it can)."""
        if not self.follower.caught_up:
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
        if self.stage is not None and not self.stage.stage.healthy:
            raise RuntimeError("Kafka scoring stage not running")

    async def _log_ready(self) -> None:
        log_ = self.inference_log
        if log_ is not None and not log_.accepting:
            raise RuntimeError("inference log spool full: scoring is refused until Kafka is back")

    async def _db_ready(self) -> None:
        if self.pool is not None:
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
