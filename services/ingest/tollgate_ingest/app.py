"""Wires ingest together: settings → PostgreSQL claims, Kafka stage, HTTP gateway. Nothing runs at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from fastapi import Depends, FastAPI
from opentelemetry.trace import Tracer
from prometheus_client import CollectorRegistry

from tollgate_core.apikeys import PRODUCER, KeyVerifier
from tollgate_core.auth import key_verifier, require
from tollgate_core.contracts import ContractRegistry
from tollgate_core.db import create_pool, ping
from tollgate_core.http import create_http_app
from tollgate_core.kafka import TransactionalStage, producer_config
from tollgate_core.limits import BodyLimits
from tollgate_core.registrations import LiveCatalog, start_following
from tollgate_core.runtime import CompactedFollower, build_stage
from tollgate_core.telemetry import setup_tracing
from tollgate_core.topics import Topics
from tollgate_ingest import SERVICE, consumers
from tollgate_ingest.claims import PostgresClaimStore
from tollgate_ingest.core import Normaliser
from tollgate_ingest.gateway import gateway_router
from tollgate_ingest.settings import IngestSettings
from tollgate_ingest.stage import IngestMetrics, IngestStage

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


class Ingest:
    """One ingest process: the stage consuming ``events.raw`` and the HTTP gateway writing to it."""

    def __init__(
        self,
        *,
        settings: IngestSettings,
        metrics_registry: CollectorRegistry,
        metrics: IngestMetrics,
        tracer: Tracer,
        contracts: ContractRegistry,
        normaliser: Normaliser,
        pool: asyncpg.Pool,
        keys: KeyVerifier,
        producer: AIOKafkaProducer,
        registrations: CompactedFollower,
        stage: TransactionalStage,
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_namespace)
        self.metrics_registry = metrics_registry
        self.metrics = metrics
        self.tracer = tracer
        self.contracts = contracts
        self.normaliser = normaliser
        self.pool = pool
        self.keys = keys
        self.producer = producer
        self.registrations = registrations
        self.stage = stage

    @classmethod
    async def create(cls, settings: IngestSettings) -> Ingest:
        """Connect to PostgreSQL and Kafka, follow the registrations up to their end and start the stage;
        what started is stopped again if a later step fails."""
        s = settings
        contracts = ContractRegistry.from_directory(s.contracts_dir)
        normaliser = Normaliser(contracts)
        # The schemas/ seed, then every registration followed (tollgate_core.registrations).
        live = LiveCatalog(contracts)
        live.on_change(lambda applied: normaliser.refresh())
        metrics_registry = CollectorRegistry()
        metrics = IngestMetrics(metrics_registry)
        tracer = setup_tracing(SERVICE, sample_ratio=s.trace_sample_ratio, console=s.otel_console).get_tracer(
            "tollgate.ingest"
        )
        topics = Topics(s.topic_namespace)
        async with contextlib.AsyncExitStack() as undo:
            pool = await create_pool(s.database_url, SERVICE, MIGRATIONS)
            undo.push_async_callback(pool.close)
            keys = await key_verifier(pool)
            producer = AIOKafkaProducer(
                **producer_config(s.kafka_bootstrap, s.client_id(SERVICE) + "-gateway")
            )
            await producer.start()
            undo.push_async_callback(producer.stop)
            registrations = await start_following(
                consumers.registrations(s), live, s, registry=metrics_registry
            )
            undo.push_async_callback(registrations.stop)
            handler = IngestStage(
                normaliser,
                PostgresClaimStore(pool),
                output_topic=topics.events_ingested,
                dlq_topic=topics.dlq(SERVICE),
                metrics=metrics,
                tracer=tracer,
            )
            stage = build_stage(
                consumers.stage(s).bind(handler, max_records=s.batch_max_records),
                s,
                registry=metrics_registry,
            )
            await stage.start()
            undo.push_async_callback(stage.stop)
            ingest = cls(
                settings=s,
                metrics_registry=metrics_registry,
                metrics=metrics,
                tracer=tracer,
                contracts=contracts,
                normaliser=normaliser,
                pool=pool,
                keys=keys,
                producer=producer,
                registrations=registrations,
                stage=stage,
            )
            undo.pop_all()
        return ingest

    def loops(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        return [self.stage.run, self.registrations.run, self.prune_claims]

    async def stop(self) -> None:
        await self.stage.stop()
        await self.registrations.stop()
        await self.producer.stop()
        await self.pool.close()

    async def publish_raw(
        self, events: Sequence[tuple[bytes | None, bytes]], headers: list[tuple[str, bytes]]
    ) -> None:
        futures = [
            await self.producer.send(self.topics.events_raw, value, key=key, headers=headers)
            for key, value in events
        ]
        await asyncio.gather(*futures)

    async def prune_claims(self) -> None:
        store = PostgresClaimStore(self.pool)
        while True:
            await asyncio.sleep(600)
            removed = await store.prune(timedelta(hours=self.settings.dedup_window_hours))
            log.info("pruned %d expired event-id claims", removed)

    async def _kafka_ready(self) -> None:
        await self.producer.client.fetch_all_metadata()
        if not self.stage.healthy:
            raise RuntimeError("stream stage not running")
        if not self.registrations.healthy:
            raise RuntimeError("registrations follower not running")

    async def _db_ready(self) -> None:
        await ping(self.pool)

    def http_app(self) -> FastAPI:
        app = create_http_app(
            title="tollgate ingest",
            version="1.0.0",
            description="HTTP gateway for producers that do not speak Kafka; writes to events.raw.",
            registry=self.metrics_registry,
            checks={"kafka": self._kafka_ready, "postgres": self._db_ready},
            keys=self.keys,
            # Files come here: the gateway's own limit is the body limit.
            limits=BodyLimits(self.settings.max_body_bytes, self.settings.http_max_json_depth),
        )
        app.include_router(
            gateway_router(
                contracts=self.contracts,
                normaliser=self.normaliser,
                publish=self.publish_raw,
                max_body_bytes=self.settings.max_body_bytes,
                max_events=self.settings.max_events_per_request,
                on_accepted=lambda source, n: self.metrics.http_events.labels(source).inc(n),
                tracer=self.tracer,
            ),
            dependencies=[Depends(require("send events", PRODUCER))],
            responses={
                401: {"description": "No API key, or an invalid, revoked or rotated one"},
                403: {"description": "The key has no producer role"},
            },
        )
        return app
