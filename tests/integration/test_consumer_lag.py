"""Consumers of the runtime report their lag per partition on /metrics (``tollgate_consumer_lag``), from
the real broker's highwater: what the lag alert and KEDA's scaling look at."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

from prometheus_client import CollectorRegistry

from tests.integration.test_kafka import _topic
from tests.kafka_helpers import produce
from tests.polling import eventually
from tollgate_core.kafka import BatchSink


def lag(registry: CollectorRegistry, consumer: str, topic: str) -> float | None:
    return registry.get_sample_value(
        "tollgate_consumer_lag", {"consumer": consumer, "topic": topic, "partition": "0"}
    )


async def test_lag_is_highwater_minus_position_while_a_batch_is_held(bootstrap: str) -> None:
    topic = await _topic(bootstrap, partitions=1)
    await produce(bootstrap, topic, [(None, f"m{i}".encode()) for i in range(100)])
    registry = CollectorRegistry()
    release = asyncio.Event()
    handled: list[int] = []

    async def handler(records: list[Any]) -> None:
        handled.append(len(records))
        await release.wait()

    sink = BatchSink(
        name="lag-test",
        bootstrap=bootstrap,
        topics=[topic],
        group_id=f"g-{uuid.uuid4().hex[:6]}",
        client_id="lag-test",
        handler=handler,
        max_records=10,
        registry=registry,
    )
    await sink.start()
    running = asyncio.create_task(sink.run())
    try:
        await eventually(lambda: handled, timeout=60, interval=0.05, what="the first batch handed over")
        # The first 10 records are being handled: the other 90 are the lag.
        assert handled == [10]
        assert lag(registry, "lag-test", topic) == 90
        release.set()
        await eventually(lambda: sum(handled) >= 100, timeout=60, interval=0.05, what="100 records handled")
        await eventually(
            lambda: lag(registry, "lag-test", topic) == 0,
            timeout=60,
            interval=0.1,
            what="no lag",
            seen=lambda: lag(registry, "lag-test", topic),
        )
        assert sum(handled) == 100 and lag(registry, "lag-test", topic) == 0
    finally:
        release.set()
        await sink.stop()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await running
