"""Zombie fencing of a transactional stage, on the in-memory broker (the mechanism; the real broker's case,
with a replica really expelled from its group, is tests/integration/test_stage_fencing.py).

Two replicas of one stage, built as a service builds them (``build_stage`` with distinct instance ids). The
first holds a batch and stalls; the second processes the same records and commits them; then the first
resumes and tries to commit the batch it held. The fake gives both replicas every partition, which is exactly
what a replica expelled from its group without knowing it believes."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from tests.fake_kafka import FakeBroker
from tests.polling import eventually
from tollgate_core.kafka import OutRecord, Record, RetryPolicy, TransactionalStage
from tollgate_core.runtime import ConsumerSpec, build_stage
from tollgate_core.settings import ServiceSettings

SRC, OUT, DLQ = "ns.in", "ns.out", "ns.dlq.svc"


def _replica(broker: FakeBroker, instance: str, handler: Any) -> TransactionalStage:
    spec = ConsumerSpec(
        service="svc",
        name="svc-stage",
        kind="transactional_stage",
        topics=(SRC,),
        group="ns.svc",
        description="Copy records.",
        dlq=DLQ,
        outputs=((OUT, "copies"),),
        retry=RetryPolicy(backoff_s=0.01, max_backoff_s=0.05),
    ).bind(handler)
    settings = ServiceSettings(topic_namespace="ns", instance_id=instance)
    return build_stage(spec, settings, consumer_factory=broker.consumer, producer_factory=broker.producer)


def _copies(records: list[Record]) -> list[OutRecord]:
    return [OutRecord(OUT, r.value or b"", r.key) for r in records]


async def test_a_stalled_replica_cannot_commit_a_batch_its_successor_already_committed() -> None:
    broker = FakeBroker()
    broker.create_topic(SRC, partitions=2)
    broker.create_topic(OUT)
    broker.create_topic(DLQ)
    for i in range(20):
        broker.append(SRC, i % 2, (None, f"id-{i}".encode(), []))

    stalled, release = asyncio.Event(), asyncio.Event()

    async def stalling(records: list[Record]) -> list[OutRecord]:
        if not stalled.is_set():
            stalled.set()
            await release.wait()  # the zombie: holds its batch while another replica takes over
        return _copies(records)

    async def copying(records: list[Record]) -> list[OutRecord]:
        return _copies(records)

    zombie = _replica(broker, "r1", stalling)
    successor = _replica(broker, "r2", copying)
    tasks: list[asyncio.Task[None]] = []
    try:
        await zombie.start()
        tasks.append(asyncio.create_task(zombie.run()))
        await asyncio.wait_for(stalled.wait(), 10)
        await successor.start()
        tasks.append(asyncio.create_task(successor.run()))
        await eventually(
            lambda: _async(len(broker.records(OUT)) >= 20), timeout=10, what="the successor's commits"
        )
        release.set()
        await eventually(
            lambda: _async(zombie.stats.failed_writes + zombie.stats.batches >= 1),
            timeout=10,
            what="the zombie's commit to end (committed or refused)",
        )
        copies = Counter(r.value for r in broker.records(OUT))
        assert {v: n for v, n in copies.items() if n > 1} == {}  # nothing twice
        assert sorted(copies) == sorted(f"id-{i}".encode() for i in range(20))
        assert zombie.stats.batches == 0 and zombie.stats.failed_writes >= 1  # fenced, not committed
    finally:
        release.set()
        for stage in (zombie, successor):
            if stage.started:
                await stage.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _async(value: Any) -> Any:
    return value
