"""Wires the registry: settings → PostgreSQL repository and outbox, artifact store, model catalog, the
candidate subscriber, the outbox relay, the canary loop and the HTTP API. Nothing runs at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import asyncpg
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
from tollgate_registry import SERVICE
from tollgate_registry.api import install
from tollgate_registry.consumers import consumer_specs
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
    """One registry process, connected: build it with :meth:`create`."""

    def __init__(
        self,
        *,
        settings: RegistrySettings,
        metrics_registry: CollectorRegistry,
        metrics: RegistryMetrics,
        pool: asyncpg.Pool,
        outbox: Outbox,
        keys: KeyVerifier,
        producer: AIOKafkaProducer,
        core: ModelRegistry,
        registrar: Registrar,
        registrations: CompactedFollower,
        candidates_sink: BatchSink,
    ) -> None:
        self.settings = settings
        self.metrics_registry = metrics_registry
        self.metrics = metrics
        self.pool = pool
        self.outbox = outbox
        self.keys = keys
        self.producer = producer
        self.core = core
        self.registrar = registrar
        self.registrations = registrations
        self.candidates_sink = candidates_sink
        self._stopping = asyncio.Event()

    @classmethod
    async def create(cls, settings: RegistrySettings) -> Registry:
        """Connect to PostgreSQL and Kafka, follow the registrations up to their end (candidates are gated
        with the registered catalog from the first one on) and start the candidate consumer; what started
        is stopped again if a later step fails."""
        s = settings
        topics = Topics(s.topic_namespace)
        # The schemas/ seed, then every registration followed (tollgate_core.registrations).
        live = LiveCatalog(ContractRegistry.from_directory(), model_catalog(s.models_path()))
        artifacts = DirectoryArtifactStore(s.artifact_path())
        metrics_registry = CollectorRegistry()
        metrics = RegistryMetrics(metrics_registry)

        def count(model: str, change: Change) -> None:
            metrics.transitions.labels(model, change.transition.value).inc()

        async with contextlib.AsyncExitStack() as undo:
            pool = await create_pool(s.database_url, SERVICE, MIGRATIONS, max_size=s.db_pool_size)
            undo.push_async_callback(pool.close)
            outbox = Outbox(pool, OUTBOX_TABLE)
            keys = await key_verifier(pool)
            core = ModelRegistry(
                PostgresRepository(pool, outbox, topics.models_lifecycle),
                live.models,
                artifacts,
                lifecycle_schema=lifecycle_schema_id(),
                on_change=count,
            )
            producer = AIOKafkaProducer(
                **producer_config(s.kafka_bootstrap, s.client_id(SERVICE) + "-outbox")
            )
            await producer.start()
            undo.push_async_callback(producer.stop)
            registrar = Registrar(
                pool, outbox, topics.registrations, current_schema_id("registrations"), live
            )

            async def on_candidate(body: bytes) -> None:
                """Verify the artifact, evaluate the gates, store the version and its transitions; idempotent
                by event_id, committed only after the version and its lifecycle events are stored."""
                event = CandidateEvent.model_validate_json(body)
                outcome = await core.on_candidate(event)
                metrics.candidates.labels(outcome.value).inc()

            specs = bind_all(
                consumer_specs(s),
                {
                    f"{SERVICE}-candidates": per_record(on_candidate),
                    f"{SERVICE}-registrations": per_record(live.apply_record),
                },
            )
            registrations = build_follower(specs[f"{SERVICE}-registrations"], s, registry=metrics_registry)
            await registrations.start()
            undo.push_async_callback(registrations.stop)
            await registrations.catch_up()  # gate with the registered catalog from the first candidate on
            candidates_sink = build_sink(specs[f"{SERVICE}-candidates"], s, registry=metrics_registry)
            await candidates_sink.start()
            undo.push_async_callback(candidates_sink.stop)
            log.info(
                "registry: %d model(s) in the catalog, artifacts in %s", len(live.models), artifacts.root
            )
            registry = cls(
                settings=s,
                metrics_registry=metrics_registry,
                metrics=metrics,
                pool=pool,
                outbox=outbox,
                keys=keys,
                producer=producer,
                core=core,
                registrar=registrar,
                registrations=registrations,
                candidates_sink=candidates_sink,
            )
            undo.pop_all()
        return registry

    async def stop(self) -> None:
        self._stopping.set()
        await self.candidates_sink.stop()
        await self.registrations.stop()
        await self.producer.stop()
        await self.pool.close()

    def loops(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        return [
            self.candidates_sink.run,
            self.registrations.run,
            self.relay_lifecycle_events,
            self.end_canary_periods,
        ]

    async def relay_lifecycle_events(self) -> None:
        await self.outbox.relay(self.producer, poll_s=self.settings.outbox_poll_seconds)

    async def end_canary_periods(self) -> None:
        """Promote staging versions whose canary period ended; errors are logged and retried next tick."""
        while not self._stopping.is_set():
            try:
                await self.core.promote_due_canaries()
            except Exception:  # a database hiccup must not stop the loop; the same versions are due next tick
                if self._stopping.is_set():
                    return
                log.exception("canary promotion failed; retrying")
            await wait_event(self._stopping, self.settings.canary_poll_seconds)

    async def _kafka_ready(self) -> None:
        await self.producer.client.fetch_all_metadata()
        if not self.candidates_sink.healthy:
            raise RuntimeError("candidate consumer not running")
        if not self.registrations.healthy:
            raise RuntimeError("registrations follower not running")

    async def _db_ready(self) -> None:
        await ping(self.pool)

    def http_app(self) -> FastAPI:
        app = create_http_app(
            title="tollgate registry",
            version="1.0.0",
            description="Model versions, promotion gates, approvals and rollbacks; every change is published "
            "on models.lifecycle.",
            registry=self.metrics_registry,
            limits=self.settings.body_limits(),
            checks={"kafka": self._kafka_ready, "postgres": self._db_ready},
            keys=self.keys,
        )
        install(app, self.core, self.registrar)
        return app
