"""Wires the registry: settings → PostgreSQL repository and outbox, artifact store, model catalog, the
candidate subscriber, the outbox relay, the canary loop and the HTTP API. Nothing runs at import."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter

from tollgate_core.apikeys import KeyVerifier
from tollgate_core.artifacts import DirectoryArtifactStore
from tollgate_core.auth import key_verifier
from tollgate_core.contracts import ContractRegistry
from tollgate_core.db import create_pool, ping
from tollgate_core.http import create_http_app
from tollgate_core.kafka import BatchSink, producer_config
from tollgate_core.lifecycle import CandidateEvent
from tollgate_core.models import model_catalog
from tollgate_core.outbox import Outbox
from tollgate_core.registrations import LiveCatalog
from tollgate_core.runtime import CompactedFollower, bind_all, build_follower, build_sink, per_record
from tollgate_core.topics import Topics, current_schema_id
from tollgate_core.waiting import wait_event
from tollgate_registry.api import install
from tollgate_registry.consumers import SERVICE, consumer_specs
from tollgate_registry.core import ModelRegistry
from tollgate_registry.postgres import OUTBOX_TABLE, PostgresRepository
from tollgate_registry.registrar import Registrar
from tollgate_registry.settings import RegistrySettings
from tollgate_registry.state import Change

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


def lifecycle_schema_id() -> str:
    """``models.lifecycle.v<N>``: the schema id lifecycle events carry, from the topic catalog."""
    return current_schema_id("models.lifecycle")


class RegistryMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.candidates = Counter(
            "tollgate_registry_candidates", "Candidate events by outcome", ["outcome"], registry=registry
        )
        self.transitions = Counter(
            "tollgate_registry_transitions",
            "Version state changes",
            ["model", "transition"],
            registry=registry,
        )


class Registry:
    """One registry process."""

    def __init__(self, settings: RegistrySettings) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_namespace)
        # The schemas/ seed, then every registration followed (tollgate_core.registrations).
        self.live = LiveCatalog(ContractRegistry.from_directory(), model_catalog(settings.models_path()))
        self.catalog = self.live.models
        self.store = DirectoryArtifactStore(settings.artifact_path())
        self.registry = CollectorRegistry()
        self.metrics = RegistryMetrics(self.registry)
        self.pool: Any = None
        self.outbox: Outbox | None = None
        self.producer: AIOKafkaProducer | None = None
        self.core: ModelRegistry | None = None
        self.keys: KeyVerifier | None = None
        self.candidates_sink: BatchSink | None = None
        self.registrations: CompactedFollower | None = None
        self.registrar: Registrar | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        s = self.settings
        self.pool = await create_pool(s.database_url, SERVICE, MIGRATIONS, max_size=s.db_pool_size)
        self.outbox = Outbox(self.pool, OUTBOX_TABLE)
        self.keys = await key_verifier(self.pool)
        self.core = ModelRegistry(
            PostgresRepository(self.pool, self.outbox, self.topics.models_lifecycle),
            self.catalog,
            self.store,
            lifecycle_schema=lifecycle_schema_id(),
            on_change=self._count,
        )
        self.producer = AIOKafkaProducer(
            **producer_config(s.kafka_bootstrap, s.client_id(SERVICE) + "-outbox")
        )
        await self.producer.start()
        self.registrar = Registrar(
            self.pool,
            self.outbox,
            self.topics.registrations,
            current_schema_id("registrations"),
            self.live,
        )
        specs = bind_all(
            consumer_specs(s),
            {
                f"{SERVICE}-candidates": per_record(self.on_candidate),
                f"{SERVICE}-registrations": per_record(self.live.apply_record),
            },
        )
        self.registrations = build_follower(specs[f"{SERVICE}-registrations"], s, registry=self.registry)
        await self.registrations.start()
        await self.registrations.catch_up()  # gate with the registered catalog from the first candidate on
        self.candidates_sink = build_sink(specs[f"{SERVICE}-candidates"], s, registry=self.registry)
        await self.candidates_sink.start()
        log.info("registry: %d model(s) in the catalog, artifacts in %s", len(self.catalog), self.store.root)

    async def stop(self) -> None:
        self._stopping.set()
        if self.candidates_sink is not None:
            await self.candidates_sink.stop()
        if self.registrations is not None:
            await self.registrations.stop()
        if self.producer is not None:
            await self.producer.stop()
        if self.pool is not None:
            await self.pool.close()

    def _count(self, model: str, change: Change) -> None:
        self.metrics.transitions.labels(model, change.transition.value).inc()

    def loops(self) -> list[Any]:
        assert self.candidates_sink is not None and self.registrations is not None
        return [
            self.candidates_sink.run,
            self.registrations.run,
            self.relay_lifecycle_events,
            self.end_canary_periods,
        ]

    async def on_candidate(self, body: bytes) -> None:
        """Verify the artifact, evaluate the gates, store the version and its transitions; idempotent by
        event_id, committed only after the version and its lifecycle events are stored."""
        assert self.core is not None, "start() first"
        event = CandidateEvent.model_validate_json(body)
        outcome = await self.core.on_candidate(event)
        self.metrics.candidates.labels(outcome.value).inc()

    async def relay_lifecycle_events(self) -> None:
        assert self.outbox is not None and self.producer is not None
        await self.outbox.relay(self.producer, poll_s=self.settings.outbox_poll_seconds)

    async def end_canary_periods(self) -> None:
        """Promote staging versions whose canary period ended; errors are logged and retried next tick."""
        assert self.core is not None
        while not self._stopping.is_set():
            try:
                await self.core.promote_due_canaries()
            except Exception:  # a database hiccup must not stop the loop; the same versions are due next tick
                if self._stopping.is_set():
                    return
                log.exception("canary promotion failed; retrying")
            await wait_event(self._stopping, self.settings.canary_poll_seconds)

    async def _kafka_ready(self) -> None:
        assert self.producer is not None
        await self.producer.client.fetch_all_metadata()
        if self.candidates_sink is None or not self.candidates_sink.healthy:
            raise RuntimeError("candidate consumer not running")
        if self.registrations is None or not self.registrations.healthy:
            raise RuntimeError("registrations follower not running")

    async def _db_ready(self) -> None:
        await ping(self.pool)

    def http_app(self) -> FastAPI:
        assert self.core is not None, "start() first"
        app = create_http_app(
            title="tollgate registry",
            version="1.0.0",
            description="Model versions, promotion gates, approvals and rollbacks; every change is published "
            "on models.lifecycle.",
            registry=self.registry,
            limits=self.settings.body_limits(),
            checks={"kafka": self._kafka_ready, "postgres": self._db_ready},
            keys=self.keys,
        )
        install(app, self.core, self.registrar)
        return app
