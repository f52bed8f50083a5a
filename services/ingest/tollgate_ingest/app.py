"""Wires ingest together: settings → PostgreSQL claims, Kafka stage, HTTP gateway. Nothing runs at import."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from fastapi import Depends, FastAPI
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
from tollgate_ingest import consumers
from tollgate_ingest.claims import PostgresClaimStore
from tollgate_ingest.core import Normaliser
from tollgate_ingest.gateway import gateway_router
from tollgate_ingest.settings import IngestSettings
from tollgate_ingest.stage import SERVICE, IngestMetrics, IngestStage

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


class Ingest:
    """One ingest process: the stage consuming ``events.raw`` and the HTTP gateway writing to it."""

    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_namespace)
        self.contracts = ContractRegistry.from_directory(settings.contracts_dir)
        self.normaliser = Normaliser(self.contracts)
        # The schemas/ seed, then every registration followed (tollgate_core.registrations).
        self.live = LiveCatalog(self.contracts)
        self.live.on_change(lambda applied: self.normaliser.refresh())
        self.registrations: CompactedFollower | None = None
        self.registry = CollectorRegistry()
        self.metrics = IngestMetrics(self.registry)
        self.tracer = setup_tracing(
            SERVICE, sample_ratio=settings.trace_sample_ratio, console=settings.otel_console
        ).get_tracer("tollgate.ingest")
        self.pool: Any = None
        self.keys: KeyVerifier | None = None
        self.stage: TransactionalStage | None = None
        self.producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        s = self.settings
        self.pool = await create_pool(s.database_url, SERVICE, MIGRATIONS)
        self.keys = await key_verifier(self.pool)
        self.producer = AIOKafkaProducer(
            **producer_config(s.kafka_bootstrap, s.client_id(SERVICE) + "-gateway")
        )
        await self.producer.start()
        self.registrations = await start_following(
            consumers.registrations(s), self.live, s, registry=self.registry
        )
        handler = IngestStage(
            self.normaliser,
            PostgresClaimStore(self.pool),
            output_topic=self.topics.events_ingested,
            dlq_topic=self.topics.dlq(SERVICE),
            metrics=self.metrics,
            tracer=self.tracer,
        )
        self.stage = build_stage(
            consumers.stage(s).bind(handler, max_records=s.batch_max_records), s, registry=self.registry
        )
        await self.stage.start()

    def loops(self) -> list[Any]:
        assert self.stage is not None and self.registrations is not None
        return [self.stage.run, self.registrations.run, self.prune_claims]

    async def stop(self) -> None:
        if self.stage is not None:
            await self.stage.stop()
        if self.registrations is not None:
            await self.registrations.stop()
        if self.producer is not None:
            await self.producer.stop()
        if self.pool is not None:
            await self.pool.close()

    async def publish_raw(
        self, events: Sequence[tuple[bytes | None, bytes]], headers: list[tuple[str, bytes]]
    ) -> None:
        assert self.producer is not None
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
        assert self.producer is not None
        await self.producer.client.fetch_all_metadata()
        if self.stage is None or not self.stage.healthy:
            raise RuntimeError("stream stage not running")
        if self.registrations is None or not self.registrations.healthy:
            raise RuntimeError("registrations follower not running")

    async def _db_ready(self) -> None:
        await ping(self.pool)

    def http_app(self) -> FastAPI:
        app = create_http_app(
            title="tollgate ingest",
            version="1.0.0",
            description="HTTP gateway for producers that do not speak Kafka; writes to events.raw.",
            registry=self.registry,
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
