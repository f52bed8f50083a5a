"""A transactional stage replica expelled from its group mid-batch ("zombie") must not commit what the replica
that took over its partitions already committed (the duplicates of the 100,000-event kill run).

Against the real broker. Replica A runs in a thread of its own, with its own event loop; its handler blocks
that thread (heartbeats included, as a loop starved of CPU would) on its first batch until the test releases
it. The group's session timeout is short, so the broker expels A and gives its partitions to replica B, which
processes the same records and commits them. Then A is released and tries to commit the batch it held. Every
input id must appear exactly once downstream (read_committed), and the stage must go on processing new
records with both replicas. The two replicas are built as the services build them (``build_stage``, distinct
instance ids, as ``make up REPLICAS=N`` starts them)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.kafka_helpers import committed_reader, produce
from tests.polling import eventually
from tollgate_core.kafka import OutRecord, Record, RetryPolicy, TransactionalStage, read_committed_consumer
from tollgate_core.kafka_auth import kafka_security
from tollgate_core.runtime import ConsumerSpec, build_stage
from tollgate_core.settings import ServiceSettings

# The broker's smallest allowed session (group.min.session.timeout.ms, 6 s by default): A is expelled soon.
GROUP_TIMEOUTS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500, "max_poll_interval_ms": 20000}
STALL_LIMIT_S = 120  # A's handler gives up blocking after this (the test has failed by then)


def _short_session_consumer(*args: Any, **overrides: Any) -> AIOKafkaConsumer:
    return read_committed_consumer(*args, **{**overrides, **GROUP_TIMEOUTS})


def _replica(bootstrap: str, tag: str, instance: str, src: str, out: str, handler: Any) -> TransactionalStage:
    spec = ConsumerSpec(
        service="svc",
        name=f"svc-stage-{instance}",
        kind="transactional_stage",
        topics=(src,),
        group=f"fence-{tag}",
        description="Copy records.",
        dlq=out,
        outputs=((out, "copies"),),
        retry=RetryPolicy(backoff_s=0.2, max_backoff_s=1.0),
        max_records=500,
    ).bind(handler)
    settings = ServiceSettings(
        kafka_bootstrap=bootstrap, topic_namespace=f"fence-{tag}", instance_id=instance
    )
    return build_stage(spec, settings, consumer_factory=_short_session_consumer)


def _copies(out: str, records: list[Record]) -> list[OutRecord]:
    return [OutRecord(out, r.value or b"", r.key) for r in records]


class ThreadedReplica:
    """Replica A: a stage on an event loop of its own thread, so that blocking that loop stalls A alone."""

    def __init__(self, make: Any) -> None:
        self._make = make
        self.stage: TransactionalStage | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="zombie-replica", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(60):
            raise AssertionError("replica A did not start")
        if self.error is not None:
            raise self.error

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported to the test
            self.error = exc
            self._ready.set()

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        stage = self.stage = self._make()
        await stage.start()
        task = asyncio.create_task(stage.run())
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await stage.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def stop(self) -> None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)


async def _read_all(bootstrap: str, topic: str) -> list[Record]:
    """Every committed record of ``topic`` up to its end offsets (the last stable offsets) now."""
    consumer = committed_reader(bootstrap, topic)
    await consumer.start()
    got: list[Record] = []
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        end = await consumer.end_offsets(parts)
        while [tp for tp in parts if await consumer.position(tp) < end[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                got.extend(records)
    finally:
        await consumer.stop()
    return got


async def test_an_expelled_replica_cannot_commit_what_its_successor_committed(bootstrap: str) -> None:
    tag = uuid.uuid4().hex[:8]
    src, out = f"fence-{tag}-in", f"fence-{tag}-out"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_security())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(src, 2, 1), NewTopic(out, 2, 1)])
    finally:
        await admin.close()
    first = [f"id-{i}".encode() for i in range(200)]
    await produce(bootstrap, src, [(v, v) for v in first])

    stalled, release = threading.Event(), threading.Event()

    async def stalling(records: list[Record]) -> list[OutRecord]:
        if not stalled.is_set():
            stalled.set()
            # Blocks A's whole event loop: no heartbeat, so the broker expels A after its session timeout.
            release.wait(STALL_LIMIT_S)
        return _copies(out, records)

    async def copying(records: list[Record]) -> list[OutRecord]:
        return _copies(out, records)

    a = ThreadedReplica(lambda: _replica(bootstrap, tag, "a", src, out, stalling))
    b = _replica(bootstrap, tag, "b", src, out, copying)
    b_task: asyncio.Task[None] | None = None
    try:
        a.start()
        await eventually(lambda: _now(stalled.is_set()), timeout=60, what="replica A to hold a batch")
        await b.start()
        b_task = asyncio.create_task(b.run())
        # B is given both partitions once the broker expels A, and commits every record.
        await eventually(
            lambda: _count(bootstrap, out, len(first)), timeout=90, what="B to commit every record"
        )
        zombie = a.stage
        assert zombie is not None
        release.set()
        await eventually(
            lambda: _now(zombie.stats.batches + zombie.stats.failed_writes >= 1),
            timeout=60,
            what="A's commit of the batch it held to end (committed or refused)",
        )
        # The group goes on with both replicas: new records arrive once each.
        later = [f"later-{i}".encode() for i in range(100)]
        await produce(bootstrap, src, [(v, v) for v in later])
        await eventually(
            lambda: _count(bootstrap, out, len(first) + len(later)), timeout=90, what="the later records"
        )
        copies = Counter(r.value for r in await _read_all(bootstrap, out))
        assert {v: n for v, n in copies.items() if n > 1} == {}  # nothing twice
        assert set(copies) == set(first + later)
        assert zombie.stats.failed_writes >= 1  # A's stale transaction was refused (fenced)
        assert a.error is None
    finally:
        release.set()
        a.stop()
        if b.started:
            await b.stop()
        if b_task is not None:
            b_task.cancel()
            await asyncio.gather(b_task, return_exceptions=True)


async def _now(value: Any) -> Any:
    return value


async def _count(bootstrap: str, topic: str, at_least: int) -> bool:
    return len(await _read_all(bootstrap, topic)) >= at_least
