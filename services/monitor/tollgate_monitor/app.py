"""Wires the monitor: PostgreSQL store and outbox, the Kafka producer, the use cases of
:mod:`tollgate_monitor.core` bound to their consumers (inference-log windows and the label join on batch
sinks, candidates and lifecycle, registrations), and the loops (relay, staleness, idle windows). The HTTP
dashboard and JSON API are in :mod:`tollgate_monitor.api`. Nothing runs at import; :meth:`Monitor.create`
connects everything before the monitor exists, so none of its parts is ever missing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from tollgate_core.apikeys import KeyVerifier
from tollgate_core.auth import key_verifier
from tollgate_core.db import create_pool, ping
from tollgate_core.kafka import BatchSink, OutRecord, producer_config
from tollgate_core.registrations import LiveCatalog, start_following
from tollgate_core.runtime import CompactedFollower, bind_all, build_sink, per_record
from tollgate_monitor import SERVICE
from tollgate_monitor.consumers import consumer_specs
from tollgate_monitor.core import MonitorCore
from tollgate_monitor.settings import MonitorSettings
from tollgate_monitor.store import MonitorStore

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


class KafkaDeadLetters:
    """:class:`tollgate_monitor.ports.DeadLetters` on the service's producer (each record acknowledged)."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer

    async def publish(self, records: Sequence[OutRecord]) -> None:
        for out in records:
            await self.producer.send_and_wait(out.topic, out.value, key=out.key, headers=out.headers)


class Monitor:
    """One monitor replica, connected: build it with :meth:`create`."""

    def __init__(
        self,
        *,
        settings: MonitorSettings,
        metrics_registry: CollectorRegistry,
        pool: asyncpg.Pool,
        store: MonitorStore,
        keys: KeyVerifier,
        producer: AIOKafkaProducer,
        core: MonitorCore,
        live: LiveCatalog,
        registrations: CompactedFollower,
        windows_sink: BatchSink,
        sinks: Sequence[BatchSink],
    ) -> None:
        self.settings = settings
        self.metrics_registry = metrics_registry
        self.pool = pool
        self.store = store
        self.keys = keys
        self.producer = producer
        self.core = core
        self.live = live
        self.registrations = registrations
        self.windows_sink = windows_sink
        self.sinks = list(sinks)

    @classmethod
    async def create(cls, settings: MonitorSettings) -> Monitor:
        """Connect to PostgreSQL and Kafka, follow the registrations up to their end and start the
        consumers; what started is stopped again if a later step fails."""
        s = settings
        metrics_registry = CollectorRegistry()
        async with contextlib.AsyncExitStack() as undo:
            pool = await create_pool(s.database_url, SERVICE, MIGRATIONS, max_size=5)
            undo.push_async_callback(pool.close)
            store = MonitorStore(pool)
            keys = await key_verifier(pool)
            producer = AIOKafkaProducer(**producer_config(s.kafka_bootstrap, s.client_id(SERVICE)))
            await producer.start()
            undo.push_async_callback(producer.stop)
            core = MonitorCore(s, store, KafkaDeadLetters(producer), metrics_registry)
            # The schemas/ seed, then every registration followed (tollgate_core.registrations).
            live = LiveCatalog(core.contracts)
            live.on_change(core.contract_registered)
            specs = bind_all(
                consumer_specs(s),
                {
                    f"{SERVICE}-windows": core.on_inference,
                    f"{SERVICE}-labels": core.on_labels,
                    f"{SERVICE}-candidates": per_record(core.on_candidate),
                    f"{SERVICE}-lifecycle": per_record(core.on_lifecycle),
                    f"{SERVICE}-registrations": per_record(live.apply_record),
                },
            )
            registrations = await start_following(
                specs.pop(f"{SERVICE}-registrations"), live, s, registry=metrics_registry
            )
            undo.push_async_callback(registrations.stop)
            specs[f"{SERVICE}-windows"] = specs[f"{SERVICE}-windows"].bind(
                core.on_inference, max_records=s.max_batch_records
            )
            built = {name: build_sink(spec, s, registry=metrics_registry) for name, spec in specs.items()}
            order = ("candidates", "lifecycle", "windows", "labels")
            sinks = [built[f"{SERVICE}-{name}"] for name in order]
            for sink in sinks:
                await sink.start()
                undo.push_async_callback(sink.stop)
            monitor = cls(
                settings=s,
                metrics_registry=metrics_registry,
                pool=pool,
                store=store,
                keys=keys,
                producer=producer,
                core=core,
                live=live,
                registrations=registrations,
                windows_sink=built[f"{SERVICE}-windows"],
                sinks=sinks,
            )
            undo.pop_all()
        return monitor

    async def stop(self) -> None:
        await self.registrations.stop()
        for sink in self.sinks:
            await sink.stop()
        await self.producer.stop()
        await self.pool.close()

    def loops(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        return [
            *(sink.run for sink in self.sinks),
            self.registrations.run,
            self.relay,
            self.watch_staleness,
            self.close_idle_windows,
        ]

    async def relay(self) -> None:
        await self.store.outbox.relay(self.producer)

    async def close_idle_windows(self) -> None:
        """Close windows on the wall clock for partitions that went quiet (:meth:`MonitorCore.close_idle`)."""
        every = min(max(self.settings.idle_close_seconds / 2, 0.5), 5.0)
        while True:
            await asyncio.sleep(every)
            try:
                await self.core.close_idle(self.windows_sink.assignment())
            except Exception:  # retried at the next check; the monitor keeps serving
                log.exception("monitor: closing idle windows failed")

    async def watch_staleness(self) -> None:
        while True:
            try:
                await self.core.housekeeping()
            except Exception:  # retried at the next poll; the monitor keeps serving
                log.exception("monitor: staleness check failed")
            await asyncio.sleep(self.settings.staleness_poll_seconds)

    # ---------------------------------------------------------------------------------------- readiness

    async def kafka_ready(self) -> None:
        if not all(sink.healthy for sink in self.sinks):
            raise RuntimeError("a consumer is not running")
        await self.producer.client.fetch_all_metadata()

    async def db_ready(self) -> None:
        await ping(self.pool)
