"""Wires the validator: contracts → compiled checks, Kafka stage, reference updates, HTTP for ops."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry

from tollgate_core.apikeys import KeyVerifier
from tollgate_core.auth import READERS, key_verifier, require
from tollgate_core.contracts import ContractRegistry
from tollgate_core.db import create_pool, ping
from tollgate_core.http import create_http_app
from tollgate_core.kafka import TransactionalStage
from tollgate_core.registrations import Applied, LiveCatalog, start_following
from tollgate_core.runtime import CompactedFollower, bind_all, build_follower, build_stage, per_record
from tollgate_core.telemetry import setup_tracing
from tollgate_core.topics import Topics
from tollgate_validator import SERVICE
from tollgate_validator.consumers import consumer_specs
from tollgate_validator.settings import ValidatorSettings
from tollgate_validator.stage import References, ValidatorMetrics, ValidatorStage
from tollgate_validator.storage import (
    PostgresReferenceStore,
    ReferenceStore,
    keep_candidate_reference,
    load_references,
)

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


class Validator:
    """One validator process, connected: build it with :meth:`create`."""

    def __init__(
        self,
        *,
        settings: ValidatorSettings,
        metrics_registry: CollectorRegistry,
        pool: asyncpg.Pool,
        keys: KeyVerifier,
        contracts: ContractRegistry,
        references: References,
        reference_store: ReferenceStore,
        stage: TransactionalStage,
        references_sink: CompactedFollower,
        registrations: CompactedFollower,
    ) -> None:
        self.settings = settings
        self.metrics_registry = metrics_registry
        self.pool = pool
        self.keys = keys
        self.contracts = contracts
        self.references = references
        self.reference_store = reference_store
        self.stage = stage
        self.references_sink = references_sink
        self.registrations = registrations

    @classmethod
    async def create(cls, settings: ValidatorSettings) -> Validator:
        """Connect to PostgreSQL, put the kept references back in force, follow the registrations up to
        their end and start the consumers; what started is stopped again if a later step fails."""
        s = settings
        topics = Topics(s.topic_namespace)
        contracts = ContractRegistry.from_directory(s.contracts_dir)
        # The schemas/ seed, then every registration followed (tollgate_core.registrations).
        live = LiveCatalog(contracts)
        references = References(s.iqr_factor)
        metrics_registry = CollectorRegistry()
        metrics = ValidatorMetrics(metrics_registry)
        tracer = setup_tracing(SERVICE, sample_ratio=s.trace_sample_ratio, console=s.otel_console).get_tracer(
            "tollgate.validator"
        )
        async with contextlib.AsyncExitStack() as undo:
            pool = await create_pool(s.database_url, SERVICE, MIGRATIONS, max_size=4)
            undo.push_async_callback(pool.close)
            keys = await key_verifier(pool)
            reference_store = PostgresReferenceStore(pool)
            await load_references(references, reference_store)
            handler = ValidatorStage(
                contracts,
                references,
                validated_topic=topics.events_validated,
                rejected_topic=topics.events_rejected,
                dlq_topic=topics.dlq(SERVICE),
                metrics=metrics,
                tracer=tracer,
                max_violations=s.max_violations,
            )
            live.on_change(lambda applied: cls._recompile(handler, applied))

            async def on_candidate_record(body: bytes) -> None:
                """Keep the newest training reference per dataset contract for statistical expectations."""
                await keep_candidate_reference(orjson.loads(body), references, reference_store)

            specs = bind_all(
                consumer_specs(s),
                {
                    SERVICE: handler,
                    f"{SERVICE}-references": per_record(on_candidate_record),
                    f"{SERVICE}-registrations": per_record(live.apply_record),
                },
            )
            # Judge the first event with every registered contract in force.
            registrations = await start_following(
                specs[f"{SERVICE}-registrations"], live, s, registry=metrics_registry
            )
            undo.push_async_callback(registrations.stop)
            stage = build_stage(
                specs[SERVICE].bind(handler, max_records=s.batch_max_records), s, registry=metrics_registry
            )
            references_sink = build_follower(specs[f"{SERVICE}-references"], s, registry=metrics_registry)
            await stage.start()
            undo.push_async_callback(stage.stop)
            await references_sink.start()
            undo.push_async_callback(references_sink.stop)
            validator = cls(
                settings=s,
                metrics_registry=metrics_registry,
                pool=pool,
                keys=keys,
                contracts=contracts,
                references=references,
                reference_store=reference_store,
                stage=stage,
                references_sink=references_sink,
                registrations=registrations,
            )
            undo.pop_all()
        return validator

    @staticmethod
    def _recompile(handler: ValidatorStage, applied: Applied) -> None:
        if applied.kind == "contract":
            handler.recompile(applied.name)

    def loops(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        return [self.stage.run, self.references_sink.run, self.registrations.run]

    async def stop(self) -> None:
        await self.registrations.stop()
        await self.references_sink.stop()
        await self.stage.stop()
        await self.pool.close()

    async def _kafka_ready(self) -> None:
        if not self.stage.healthy:
            raise RuntimeError("stream stage not running")
        if not self.references_sink.healthy:
            raise RuntimeError("reference consumer not running")
        if not self.registrations.healthy:
            raise RuntimeError("registrations follower not running")

    async def _db_ready(self) -> None:
        await ping(self.pool)

    def http_app(self) -> FastAPI:
        app = create_http_app(
            title="tollgate validator",
            version="1.0.0",
            description="Enforces dataset contracts on ingested events; operations endpoints only.",
            registry=self.metrics_registry,
            limits=self.settings.body_limits(),
            checks={"kafka": self._kafka_ready, "postgres": self._db_ready},
            keys=self.keys,
        )

        @app.get(
            "/v1/contracts",
            tags=["contracts"],
            summary="Dataset contracts this validator enforces",
            dependencies=[Depends(require("read the contracts", READERS))],
        )
        async def contracts() -> list[dict[str, Any]]:
            return [
                {
                    "schema": c.schema_id,
                    "digest": c.digest,
                    "features": c.feature_names,
                    "reference": c.schema_id in self.references.by_contract,
                }
                for c in self.contracts
            ]

        return app
