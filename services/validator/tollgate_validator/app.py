"""Wires the validator: contracts → compiled checks, Kafka stage, reference updates, HTTP for ops."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry

from tollgate_core.apikeys import KeyVerifier
from tollgate_core.auth import READERS, key_verifier, require
from tollgate_core.contracts import ContractRegistry
from tollgate_core.db import create_pool, ping
from tollgate_core.http import create_http_app
from tollgate_core.kafka import BatchSink, TransactionalStage
from tollgate_core.reference import ReferenceProfile
from tollgate_core.registrations import Applied, LiveCatalog, start_following
from tollgate_core.runtime import CompactedFollower, bind_all, build_follower, build_stage, per_record
from tollgate_core.telemetry import setup_tracing
from tollgate_core.topics import Topics
from tollgate_validator.consumers import consumer_specs
from tollgate_validator.settings import ValidatorSettings
from tollgate_validator.stage import SERVICE, References, ValidatorMetrics, ValidatorStage

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


class Validator:
    def __init__(self, settings: ValidatorSettings) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_namespace)
        self.contracts = ContractRegistry.from_directory(settings.contracts_dir)
        # The schemas/ seed, then every registration followed (tollgate_core.registrations).
        self.live = LiveCatalog(self.contracts)
        self.registrations: CompactedFollower | None = None
        self.references = References(settings.iqr_factor)
        self.registry = CollectorRegistry()
        self.metrics = ValidatorMetrics(self.registry)
        self.tracer = setup_tracing(
            SERVICE, sample_ratio=settings.trace_sample_ratio, console=settings.otel_console
        ).get_tracer("tollgate.validator")
        self.pool: Any = None
        self.keys: KeyVerifier | None = None
        self.stage: TransactionalStage | None = None
        self.references_sink: BatchSink | None = None

    async def on_candidate_record(self, body: bytes) -> None:
        """Keep the newest training reference per dataset contract for statistical expectations."""
        await self.on_candidate(orjson.loads(body))

    async def on_candidate(self, event: dict[str, Any]) -> None:
        payload = event["payload"]
        reference = ReferenceProfile.model_validate(payload["reference"])
        self.references.set(reference.contract, reference)
        async with self.pool.acquire() as conn:
            await conn.execute(
                """INSERT INTO validator_references (contract, model, version, reference, source_event)
                   VALUES ($1, $2, $3, $4::jsonb, $5)
                   ON CONFLICT (contract) DO UPDATE SET model = EXCLUDED.model, version = EXCLUDED.version,
                       reference = EXCLUDED.reference, source_event = EXCLUDED.source_event, updated_at = now()""",
                reference.contract,
                str(payload["model"]),
                str(payload["version"]),
                reference.model_dump_json(),
                event["event_id"],
            )

    async def start(self) -> None:
        s = self.settings
        self.pool = await create_pool(s.database_url, SERVICE, MIGRATIONS, max_size=4)
        self.keys = await key_verifier(self.pool)
        async with self.pool.acquire() as conn:
            for row in await conn.fetch("SELECT contract, reference FROM validator_references"):
                self.references.set(row["contract"], ReferenceProfile.model_validate_json(row["reference"]))
        handler = ValidatorStage(
            self.contracts,
            self.references,
            validated_topic=self.topics.events_validated,
            rejected_topic=self.topics.events_rejected,
            dlq_topic=self.topics.dlq(SERVICE),
            metrics=self.metrics,
            tracer=self.tracer,
            max_violations=s.max_violations,
        )
        self.live.on_change(lambda applied: self._recompile(handler, applied))
        specs = bind_all(
            consumer_specs(s),
            {
                SERVICE: handler,
                f"{SERVICE}-references": per_record(self.on_candidate_record),
                f"{SERVICE}-registrations": per_record(self.live.apply_record),
            },
        )
        # Judge the first event with every registered contract in force.
        self.registrations = await start_following(
            specs[f"{SERVICE}-registrations"], self.live, s, registry=self.registry
        )
        self.stage = build_stage(
            specs[SERVICE].bind(handler, max_records=s.batch_max_records), s, registry=self.registry
        )
        self.references_sink = build_follower(specs[f"{SERVICE}-references"], s, registry=self.registry)
        await self.stage.start()
        await self.references_sink.start()

    @staticmethod
    def _recompile(handler: ValidatorStage, applied: Applied) -> None:
        if applied.kind == "contract":
            handler.recompile(applied.name)

    def loops(self) -> list[Any]:
        assert self.stage is not None and self.references_sink is not None
        assert self.registrations is not None
        return [self.stage.run, self.references_sink.run, self.registrations.run]

    async def stop(self) -> None:
        if self.registrations is not None:
            await self.registrations.stop()
        if self.references_sink is not None:
            await self.references_sink.stop()
        if self.stage is not None:
            await self.stage.stop()
        if self.pool is not None:
            await self.pool.close()

    async def _kafka_ready(self) -> None:
        if self.stage is None or not self.stage.healthy:
            raise RuntimeError("stream stage not running")
        if self.references_sink is None or not self.references_sink.healthy:
            raise RuntimeError("reference consumer not running")
        if self.registrations is None or not self.registrations.healthy:
            raise RuntimeError("registrations follower not running")

    async def _db_ready(self) -> None:
        await ping(self.pool)

    def http_app(self) -> FastAPI:
        app = create_http_app(
            title="tollgate validator",
            version="1.0.0",
            description="Enforces dataset contracts on ingested events; operations endpoints only.",
            registry=self.registry,
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
