"""Wires the validator: contracts → compiled checks, Kafka stage, reference updates, HTTP for ops."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from tollgate_core.apikeys import KeyVerifier
from tollgate_core.auth import READERS, key_verifier, require
from tollgate_core.bus import create_broker
from tollgate_core.contracts import ContractRegistry
from tollgate_core.db import create_pool, ping
from tollgate_core.http import create_http_app
from tollgate_core.kafka import TransactionalStage
from tollgate_core.reference import ReferenceProfile
from tollgate_core.settings import ServiceSettings
from tollgate_core.telemetry import setup_tracing
from tollgate_core.topics import Topics
from tollgate_validator.asyncapi import declare_reference_subscriber, stage_spec
from tollgate_validator.stage import SERVICE, References, ValidatorMetrics, ValidatorStage

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


class ValidatorSettings(ServiceSettings):
    """Settings of the validator (environment prefix ``TOLLGATE_VALIDATOR_``)."""

    model_config = SettingsConfigDict(env_prefix="TOLLGATE_VALIDATOR_", extra="ignore")

    http_port: int = Field(8085, description="Port of /healthz, /readyz, /metrics and the contracts listing.")
    batch_max_records: int = Field(5000, description="Most events validated in one transaction.")
    max_violations: int = Field(
        100, ge=1, description="Most violations one rejection record lists; the rest are counted."
    )
    iqr_factor: float = Field(3.0, description="How many IQRs beyond the 0.1%/99.9% training quantiles flag.")
    trace_sample_ratio: float = Field(0.01, description="Share of new traces recorded as spans.")
    contracts_dir: str | None = Field(
        None, description="Dataset contracts folder (default schemas/datasets)."
    )


class Validator:
    def __init__(self, settings: ValidatorSettings) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_namespace)
        self.contracts = ContractRegistry.from_directory(settings.contracts_dir)
        self.references = References(settings.iqr_factor)
        self.registry = CollectorRegistry()
        self.metrics = ValidatorMetrics(self.registry)
        self.tracer = setup_tracing(
            SERVICE, sample_ratio=settings.trace_sample_ratio, console=settings.otel_console
        ).get_tracer("tollgate.validator")
        self.broker = create_broker(settings, SERVICE)
        declare_reference_subscriber(self.broker, settings, self.on_candidate)
        self.pool: Any = None
        self.keys: KeyVerifier | None = None
        self.stage: TransactionalStage | None = None

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
        self.stage = TransactionalStage.from_spec(
            stage_spec(s), s, handler, s.batch_max_records, registry=self.registry
        )
        await self.stage.start()
        await self.broker.start()

    async def stop(self) -> None:
        await self.broker.stop()
        if self.stage is not None:
            await self.stage.stop()
        if self.pool is not None:
            await self.pool.close()

    async def _kafka_ready(self) -> None:
        if self.stage is None or not self.stage.healthy:
            raise RuntimeError("stream stage not running")
        if not await self.broker.ping(timeout=2):
            raise RuntimeError("broker not reachable")

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
