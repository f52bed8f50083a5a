"""Wires the audit-log service: migrations and grants as the owner, then everything else as the restricted
writer role; one stream worker per audited topic, the checkpoint timer, API keys, the HTTP API.
Nothing runs at import; :meth:`AuditLog.create` connects everything before the service exists (the storage
first, :meth:`AuditStorage.open`), so none of its parts is ever missing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import FastAPI
from opentelemetry.trace import Tracer
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
from tollgate_core.http import ReadinessCheck, create_http_app
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


async def runtime_dsn(settings: AuditLogSettings, role_problem: str | None) -> tuple[str, str | None]:
    """The DSN the service runs on (the writer role's when it can log in) and why the writer role cannot
    be used (None when it can); raises when the settings require the writer role and it cannot be used."""
    dsn = settings.database_url
    if role_problem is None and not settings.connects_as_writer():
        try:
            probe = await asyncpg.connect(settings.writer_dsn())
            await probe.close()
            dsn = settings.writer_dsn()
        except _LOGIN_ERRORS as exc:
            role_problem = f"cannot log in as {settings.writer_role}: {exc}"
    if role_problem is not None:
        if settings.require_writer_role:
            raise RuntimeError(f"the restricted writer role is required: {role_problem}")
        log.warning("audit trail protected by triggers only: %s", role_problem)
    return dsn, role_problem


def trusted_keys(public_key_files: Iterable[str], signer: Signer) -> dict[str, Ed25519PublicKey]:
    """The keys checkpoints may be signed with, by key id: the rotated ones named in the settings and the
    signer's own (never keys read from the database)."""
    keys = {key_id(k): k for k in (load_public_key(Path(p)) for p in public_key_files)}
    return {**keys, signer.key_id: signer.public_key}


class AuditStorage:
    """The database side, connected: the runtime pool, the signing key, the API keys, the contracts and the
    witness directory; everything the HTTP API reads. Build it with :meth:`open`."""

    def __init__(
        self,
        *,
        settings: AuditLogSettings,
        pool: asyncpg.Pool,
        runtime_dsn: str,
        role_problem: str | None,
        signer: Signer,
        keys: apikeys.KeyVerifier,
        contracts: ContractRegistry,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.runtime_dsn = runtime_dsn
        self.role_problem = role_problem
        self.signer = signer
        self.keys = keys
        self.contracts = contracts
        self.page_max = settings.page_max
        self.verify_lock = asyncio.Lock()
        witness = settings.witness_path()
        self.witness = WitnessDir(witness) if witness is not None else None

    @classmethod
    async def open(cls, settings: AuditLogSettings) -> AuditStorage:
        """Migrations and grants, the runtime pool (as the writer role when it can log in), the signing key
        (registered in the database), the API keys and the contracts; the pool is closed again if a later
        step fails."""
        s = settings
        dsn, role_problem = await runtime_dsn(s, await prepare_database(s))
        pool = await create_pool(dsn, SERVICE, None, max_size=4)
        try:
            signer = Signer(load_or_create_private_key(s.signing_key_file(), create=s.is_development()))
            await register_key(pool, signer)
            keys = apikeys.KeyVerifier.from_pool(pool, refresh_s=s.api_key_refresh_s)
            await keys.refresh()
            contracts = ContractRegistry.from_directory()
        except BaseException:
            await pool.close()
            raise
        return cls(
            settings=s,
            pool=pool,
            runtime_dsn=dsn,
            role_problem=role_problem,
            signer=signer,
            keys=keys,
            contracts=contracts,
        )

    async def close(self) -> None:
        await self.pool.close()

    async def connect(self) -> asyncpg.Connection:
        """A connection of its own on the runtime DSN (a stream's writer holds one)."""
        return await asyncpg.connect(self.runtime_dsn)

    def trusted_keys(self) -> dict[str, Ed25519PublicKey]:
        return trusted_keys(self.settings.trusted_public_keys, self.signer)

    def published_heads(self) -> dict[str, list[PublishedHead]] | None:
        """The heads in the witness directory, by stream (None without one)."""
        if self.witness is None:
            return None
        return {name: self.witness.heads(name) for name in self.witness.streams()}

    def known_heads(self, stream: str) -> list[tuple[int, bytes]] | None:
        """The heads the writer noted for ``stream`` outside the database (None without a journal)."""
        return self.witness.known_heads(stream) if self.witness is not None else None

    def readiness_checks(self) -> dict[str, ReadinessCheck]:
        """The database's part of /readyz: reachable, and how the trail is protected."""
        return {"postgres": self._db_ready, "append_only": self._append_only}

    async def _db_ready(self) -> None:
        await ping(self.pool)

    async def _append_only(self) -> str:
        async with self.pool.acquire() as conn:
            status = await roles.append_only_status(conn, self.settings.writer_role)
        if not status.triggers:
            raise RuntimeError(status.summary)
        return status.summary


def create_app(
    storage: AuditStorage,
    *,
    workers: Mapping[str, StreamWorker],
    metrics_registry: CollectorRegistry,
    dlq: DeadLetterQueues,
    dlq_metrics: DlqMetrics,
    checks: Mapping[str, ReadinessCheck],
) -> FastAPI:
    """The HTTP API over ``storage`` and the streams this replica writes (``workers``)."""
    app = create_http_app(
        title="tollgate audit-log",
        version="1.0.0",
        description="Append-only, hash-chained audit trail of the platform's events with signed Merkle "
        "checkpoints: compliance queries, lineage of an inference, export, verification.",
        registry=metrics_registry,
        limits=storage.settings.body_limits(),
        checks=checks,
        keys=storage.keys,
    )
    app.state.audit = storage
    app.state.workers = workers
    app.state.dlq = dlq
    app.state.dlq_metrics = dlq_metrics
    app.include_router(build_router())
    app.include_router(build_dlq_router())
    return app


class AuditLog:
    """One audit-log replica, connected: build it with :meth:`create`."""

    def __init__(
        self,
        *,
        settings: AuditLogSettings,
        storage: AuditStorage,
        metrics_registry: CollectorRegistry,
        dlq: DeadLetterQueues,
        dlq_metrics: DlqMetrics,
        producer: AIOKafkaProducer,
        contracts_follower: CompactedFollower,
        workers: Mapping[str, StreamWorker],
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.metrics_registry = metrics_registry
        self.dlq = dlq
        self.dlq_metrics = dlq_metrics
        self.producer = producer
        self.contracts_follower = contracts_follower
        self.workers = dict(workers)

    @classmethod
    async def create(cls, settings: AuditLogSettings) -> AuditLog:
        """The storage (:meth:`AuditStorage.open`), then the Kafka side: the producer, the registrations
        followed up to their end, one worker per stream (their loops run in :meth:`loops`); what started is
        stopped again if a later step fails."""
        s = settings
        topics = Topics(s.topic_namespace)
        metrics_registry = CollectorRegistry()
        metrics = Metrics(metrics_registry)
        dlq = DeadLetterQueues(s.kafka_bootstrap, s.topic_namespace, s.client_id(SERVICE) + "-dlq")
        dlq_metrics = DlqMetrics(dlq)
        metrics_registry.register(dlq_metrics)
        # The audit-log only continues traces sampled upstream (ratio 0 for traces of its own).
        tracer = setup_tracing(SERVICE, sample_ratio=0.0, console=s.otel_console).get_tracer(
            "tollgate.audit_log"
        )
        workers: dict[str, StreamWorker] = {}
        async with contextlib.AsyncExitStack() as undo:
            storage = await AuditStorage.open(s)
            undo.push_async_callback(storage.close)
            producer = AIOKafkaProducer(**producer_config(s.kafka_bootstrap, s.client_id(SERVICE)))
            await producer.start()
            undo.push_async_callback(producer.stop)
            # Contracts registered live: their PII rules protect data records from the first one on.
            live = LiveCatalog(storage.contracts)
            live.on_change(lambda applied: _contract_registered(workers, applied))
            follower = await start_following(contracts_follower(s), live, s, registry=metrics_registry)
            undo.push_async_callback(follower.stop)
            publisher = Publisher(
                storage.witness,
                producer if s.publish_heads else None,
                topics.name("audit.checkpoints") if s.publish_heads else None,
            )
            workers.update(_stream_workers(s, storage, topics, producer, metrics, tracer, publisher))
            service = cls(
                settings=s,
                storage=storage,
                metrics_registry=metrics_registry,
                dlq=dlq,
                dlq_metrics=dlq_metrics,
                producer=producer,
                contracts_follower=follower,
                workers=workers,
            )
            undo.pop_all()
        return service

    def loops(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        """Background loops for run_service: one per stream, the registrations, the checkpoint timer, the DLQ
        figures (the API keys are reloaded by the HTTP app while it runs)."""
        return [
            *(w.run for w in self.workers.values()),
            self.contracts_follower.run,
            self.checkpoint_loop,
            self.dlq_loop,
        ]

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
        await self.contracts_follower.stop()
        await self.producer.stop()
        await self.storage.close()

    # ------------------------------------------------------------------ readiness

    async def _kafka_ready(self) -> str:
        await self.producer.client.fetch_all_metadata()
        states = {name: w.state for name, w in self.workers.items()}
        return "ok: " + ", ".join(f"{k} {v}" for k, v in states.items())

    async def _chains(self) -> str:
        damaged = {n: w.damaged for n, w in self.workers.items() if w.damaged}
        if damaged:
            raise RuntimeError("; ".join(f"{n}: {d}" for n, d in damaged.items()))
        return "ok"

    def http_app(self) -> FastAPI:
        return create_app(
            self.storage,
            workers=self.workers,
            metrics_registry=self.metrics_registry,
            dlq=self.dlq,
            dlq_metrics=self.dlq_metrics,
            checks={**self.storage.readiness_checks(), "kafka": self._kafka_ready, "chains": self._chains},
        )


def _contract_registered(workers: Mapping[str, StreamWorker], applied: Applied) -> None:
    if applied.kind == "contract":
        for worker in workers.values():
            worker.builder.forget(applied.name)


def _stream_workers(
    s: AuditLogSettings,
    storage: AuditStorage,
    topics: Topics,
    producer: AIOKafkaProducer,
    metrics: Metrics,
    tracer: Tracer,
    publisher: Publisher,
) -> dict[str, StreamWorker]:
    """One worker per audited stream (not started: each runs in its own loop)."""
    pii_key = s.pii_key.get_secret_value().encode()
    return {
        spec.name: StreamWorker(
            builder=EntryBuilder(spec, storage.contracts, pii_key),
            topic=topics.name(spec.topic),
            group_id=s.consumer_group(SERVICE, spec.name),
            dlq_topic=topics.dlq(SERVICE),
            bootstrap=s.kafka_bootstrap,
            client_id=s.client_id(SERVICE),
            connect=storage.connect,
            signer=storage.signer,
            producer=producer,
            metrics=metrics,
            batch_max_records=s.batch_max_records,
            checkpoint_rows=s.checkpoint_rows,
            checkpoint_max_rows=s.checkpoint_max_rows,
            tracer=tracer,
            alerts_topic=topics.name("monitor.alerts"),
            publisher=publisher,
        )
        for spec in stream_specs(audit_validated=s.audit_validated)
    }
