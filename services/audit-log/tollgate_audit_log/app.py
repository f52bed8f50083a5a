"""Wires the audit-log service: migrations and grants as the owner, then everything else as the restricted
writer role; one stream worker per audited topic, the checkpoint timer, API keys, the HTTP API.
Nothing runs at import."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

import tollgate_core.apikeys as apikeys
from tollgate_audit_log import SERVICE, roles
from tollgate_audit_log.api import build_router
from tollgate_audit_log.chain import register_key
from tollgate_audit_log.consumers import contracts_follower
from tollgate_audit_log.dlq_api import DlqMetrics, build_dlq_router
from tollgate_audit_log.publish import PublishedHead, Publisher, WitnessDir
from tollgate_audit_log.settings import AuditLogSettings
from tollgate_audit_log.signing import Signer, key_id, load_or_create_private_key, load_public_key
from tollgate_audit_log.sink import Metrics, StreamWorker
from tollgate_audit_log.streams import EntryBuilder, stream_specs
from tollgate_core.contracts import ContractRegistry
from tollgate_core.db import create_pool, migrate, ping
from tollgate_core.dlq import DeadLetterQueues
from tollgate_core.http import create_http_app
from tollgate_core.kafka import producer_config
from tollgate_core.registrations import Applied, LiveCatalog, start_following
from tollgate_core.runtime import CompactedFollower
from tollgate_core.telemetry import setup_tracing
from tollgate_core.topics import Topics

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
_LOGIN_ERRORS = (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)


async def prepare_database(settings: AuditLogSettings) -> str | None:
    """As the owner: apply migrations, make sure the writer role has exactly its grants. Connected as the
    writer itself: only check that the migrations are applied.

    Returns why the writer role cannot be used (None when it can). Creating the role needs CREATEROLE; the
    owner normally lacks it, so the stack creates the role as the superuser (``roles.setup_sql``).
    """
    conn = await asyncpg.connect(settings.database_url)
    try:
        if settings.connects_as_writer():
            # The writer may create nothing: migrate (as the owner) applied the migrations and its grants.
            await migrate(conn, SERVICE, MIGRATIONS)
            await migrate(conn, apikeys.MIGRATION_SERVICE, apikeys.MIGRATIONS)
            return None
        await migrate(conn, SERVICE, MIGRATIONS)
        await migrate(conn, apikeys.MIGRATION_SERVICE, apikeys.MIGRATIONS)
        role = settings.writer_role
        if not await roles.role_exists(conn, role):
            if not await roles.can_create_roles(conn):
                return f"role {role} does not exist and {await conn.fetchval('SELECT current_user')} may not create roles"
            await conn.execute(roles.setup_sql(role, settings.writer_password.get_secret_value()))
            log.info("created the database role %s", role)
        await roles.grant(conn, role)
        return None
    finally:
        await conn.close()


class AuditLog:
    def __init__(self, settings: AuditLogSettings) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_namespace)
        self.metrics_registry = CollectorRegistry()
        self.metrics = Metrics(self.metrics_registry)
        self.contracts: ContractRegistry | None = None
        self.contracts_follower: CompactedFollower | None = None
        self.pool: Any = None
        self.runtime_dsn = settings.database_url
        self.role_problem: str | None = None
        self.keys = apikeys.KeyVerifier(self._load_keys, refresh_s=settings.api_key_refresh_s)
        self.signer: Signer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.workers: dict[str, StreamWorker] = {}
        self.page_max = settings.page_max
        self.verify_lock = asyncio.Lock()
        witness = settings.witness_path()
        self.witness = WitnessDir(witness) if witness is not None else None
        self.publisher: Publisher | None = None
        self.dlq = DeadLetterQueues(
            settings.kafka_bootstrap, settings.topic_namespace, settings.client_id(SERVICE) + "-dlq"
        )
        self.dlq_metrics = DlqMetrics(self.dlq)
        self.metrics_registry.register(self.dlq_metrics)
        # The audit-log only continues traces sampled upstream (ratio 0 for traces of its own).
        self.tracer = setup_tracing(SERVICE, sample_ratio=0.0, console=settings.otel_console).get_tracer(
            "tollgate.audit_log"
        )

    async def _load_keys(self) -> dict[str, apikeys.Principal]:
        return await apikeys.active_keys(self.pool)

    def trusted_keys(self) -> dict[str, Ed25519PublicKey]:
        assert self.signer is not None
        keys = {key_id(k): k for k in (load_public_key(Path(p)) for p in self.settings.trusted_public_keys)}
        return {**keys, self.signer.key_id: self.signer.public_key}

    def published_heads(self) -> dict[str, list[PublishedHead]] | None:
        """The heads in the witness directory, by stream (None without one)."""
        if self.witness is None:
            return None
        return {name: self.witness.heads(name) for name in self.witness.streams()}

    def known_heads(self, stream: str) -> list[tuple[int, bytes]] | None:
        """The heads the writer noted for ``stream`` outside the database (None without a journal)."""
        return self.witness.known_heads(stream) if self.witness is not None else None

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.runtime_dsn)

    async def start(self) -> None:
        await self.start_storage()
        await self.start_streams()

    async def start_storage(self) -> None:
        """Database (migrations, grants, runtime pool), signing key, API keys: everything the HTTP API needs."""
        s = self.settings
        self.role_problem = await prepare_database(s)
        if self.role_problem is None and s.connects_as_writer():
            self.runtime_dsn = s.database_url
        elif self.role_problem is None:
            try:
                probe = await asyncpg.connect(s.writer_dsn())
                await probe.close()
                self.runtime_dsn = s.writer_dsn()
            except _LOGIN_ERRORS as exc:
                self.role_problem = f"cannot log in as {s.writer_role}: {exc}"
        if self.role_problem is not None:
            if s.require_writer_role:
                raise RuntimeError(f"the restricted writer role is required: {self.role_problem}")
            log.warning("audit trail protected by triggers only: %s", self.role_problem)
        self.pool = await create_pool(self.runtime_dsn, SERVICE, None, max_size=4)
        self.signer = Signer(load_or_create_private_key(s.signing_key_file(), create=s.is_development()))
        await register_key(self.pool, self.signer)
        await self.keys.refresh()
        self.contracts = ContractRegistry.from_directory()

    async def start_streams(self) -> None:
        """The Kafka side: the DLQ producer and one worker per stream (their loops run in ``loops()``)."""
        s = self.settings
        assert self.signer is not None
        self.producer = AIOKafkaProducer(**producer_config(s.kafka_bootstrap, s.client_id(SERVICE)))
        await self.producer.start()
        pii_key = s.pii_key.get_secret_value().encode()
        # Contracts registered live: their PII rules protect data records from the first one on.
        assert self.contracts is not None
        live = LiveCatalog(self.contracts)
        live.on_change(self._contract_registered)
        self.contracts_follower = await start_following(
            contracts_follower(s), live, s, registry=self.metrics_registry
        )
        self.publisher = Publisher(
            self.witness,
            self.producer if s.publish_heads else None,
            self.topics.name("audit.checkpoints") if s.publish_heads else None,
        )
        for spec in stream_specs(audit_validated=s.audit_validated):
            self.workers[spec.name] = StreamWorker(
                builder=EntryBuilder(spec, self.contracts, pii_key),
                topic=self.topics.name(spec.topic),
                group_id=s.consumer_group(SERVICE, spec.name),
                dlq_topic=self.topics.dlq(SERVICE),
                bootstrap=s.kafka_bootstrap,
                client_id=s.client_id(SERVICE),
                connect=self._connect,
                signer=self.signer,
                producer=self.producer,
                metrics=self.metrics,
                batch_max_records=s.batch_max_records,
                checkpoint_rows=s.checkpoint_rows,
                checkpoint_max_rows=s.checkpoint_max_rows,
                tracer=self.tracer,
                alerts_topic=self.topics.name("monitor.alerts"),
                publisher=self.publisher,
            )

    def _contract_registered(self, applied: Applied) -> None:
        if applied.kind == "contract":
            for worker in self.workers.values():
                worker.builder.forget(applied.name)

    def loops(self) -> list[Any]:
        """Background loops for run_service: one per stream, the checkpoint timer, the DLQ figures (the API
        keys are reloaded by the HTTP app while it runs)."""
        follow = [self.contracts_follower.run] if self.contracts_follower is not None else []
        return [*(w.run for w in self.workers.values()), *follow, self.checkpoint_loop, self.dlq_loop]

    async def dlq_loop(self) -> None:
        """Every service's DLQ depth and oldest pending age, for /metrics."""
        await self.dlq_metrics.run(self.settings.dlq_refresh_s)

    async def checkpoint_loop(self) -> None:
        interval = self.settings.checkpoint_interval_s
        tick = min(interval / 4, 1.0)  # rows wait at most the interval for their checkpoint
        while True:
            await asyncio.sleep(tick)
            for worker in self.workers.values():
                if worker.checkpoint_due(interval, tick):
                    try:
                        await worker.checkpoint()
                    except Exception:  # the stream's own loop recovers its connection; try again next round
                        log.exception("stream %s: checkpoint failed", worker.stream)

    async def stop(self) -> None:
        for worker in self.workers.values():
            await worker.stop()
        if self.contracts_follower is not None:
            await self.contracts_follower.stop()
        if self.producer is not None:
            await self.producer.stop()
        if self.pool is not None:
            await self.pool.close()

    # ------------------------------------------------------------------ readiness

    async def _db_ready(self) -> None:
        await ping(self.pool)

    async def _kafka_ready(self) -> str:
        assert self.producer is not None
        await self.producer.client.fetch_all_metadata()
        states = {name: w.state for name, w in self.workers.items()}
        return "ok: " + ", ".join(f"{k} {v}" for k, v in states.items())

    async def _append_only(self) -> str:
        async with self.pool.acquire() as conn:
            status = await roles.append_only_status(conn, self.settings.writer_role)
        if not status.triggers:
            raise RuntimeError(status.summary)
        return status.summary

    async def _chains(self) -> str:
        damaged = {n: w.damaged for n, w in self.workers.items() if w.damaged}
        if damaged:
            raise RuntimeError("; ".join(f"{n}: {d}" for n, d in damaged.items()))
        return "ok"

    def http_app(self) -> FastAPI:
        app = create_http_app(
            title="tollgate audit-log",
            version="1.0.0",
            description="Append-only, hash-chained audit trail of the platform's events with signed Merkle "
            "checkpoints: compliance queries, lineage of an inference, export, verification.",
            registry=self.metrics_registry,
            limits=self.settings.body_limits(),
            checks={
                "postgres": self._db_ready,
                "kafka": self._kafka_ready,
                "append_only": self._append_only,
                "chains": self._chains,
            },
            keys=self.keys,
        )
        app.state.audit = self
        app.state.dlq = self.dlq
        app.state.dlq_metrics = self.dlq_metrics
        app.include_router(build_router())
        app.include_router(build_dlq_router())
        return app
