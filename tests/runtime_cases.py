"""The consumer runtime's behaviour, written once and run against two brokers: the in-memory fake
(tests/unit/core/test_runtime.py) and the real Kafka (tests/integration/test_runtime.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from aiokafka.structs import ConsumerRecord

from tests.polling import eventually
from tollgate_core.kafka import BatchSink, OutRecord, RetryPolicy, TransactionalStage, TransientError
from tollgate_core.runtime import CompactedFollower

Record = ConsumerRecord[bytes, bytes]
FAST_RETRY = RetryPolicy(backoff_s=0.01, max_backoff_s=0.05)


class Harness(Protocol):
    bootstrap: str

    async def topic(self, name: str, partitions: int = 1, max_bytes: int | None = None) -> str: ...

    async def produce(self, topic: str, values: Sequence[bytes]) -> None: ...

    async def read(self, topic: str, expect: int) -> list[Record]: ...

    def factories(self) -> dict[str, Any]: ...


async def _topics(h: Harness, out_max_bytes: int | None = None) -> tuple[str, str, str]:
    tag = uuid.uuid4().hex[:8]
    return (
        await h.topic(f"rt-{tag}-in"),
        await h.topic(f"rt-{tag}-out", max_bytes=out_max_bytes),
        await h.topic(f"rt-{tag}-dlq"),
    )


def _stage(h: Harness, src: str, dlq: str, handler: Any, **kw: Any) -> TransactionalStage:
    tag = uuid.uuid4().hex[:6]
    return TransactionalStage(
        name="svc",
        bootstrap=h.bootstrap,
        source_topics=[src],
        group_id=f"g-{tag}",
        transactional_id=f"tx-{tag}",
        client_id=f"c-{tag}",
        handler=handler,
        dlq_topic=dlq,
        **h.factories(),
        **kw,
    )


def _sink(h: Harness, src: str, dlq: str, handler: Any, **kw: Any) -> BatchSink:
    tag = uuid.uuid4().hex[:6]
    return BatchSink(
        name="svc-sink",
        service="svc",
        bootstrap=h.bootstrap,
        topics=[src],
        group_id=f"g-{tag}",
        client_id=f"c-{tag}",
        handler=handler,
        dlq_topic=dlq,
        **h.factories(),
        **kw,
    )


def _follower(h: Harness, src: str, dlq: str, handler: Any, **kw: Any) -> CompactedFollower:
    tag = uuid.uuid4().hex[:6]
    return CompactedFollower(
        name="svc-follower",
        service="svc",
        bootstrap=h.bootstrap,
        topics=[src],
        client_id=f"c-{tag}",
        handler=handler,
        dlq_topic=dlq,
        **h.factories(),
        **kw,
    )


async def _running(
    loop: TransactionalStage | BatchSink | CompactedFollower, body: Callable[[], Awaitable[None]]
) -> None:
    await loop.start()
    task = asyncio.create_task(loop.run())
    try:
        await body()
    finally:
        await loop.stop()
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass


def _check_dead(dead: list[Record], src: str, values: list[bytes], error_type: bytes) -> None:
    assert sorted(r.value for r in dead) == sorted(values)
    for r in dead:
        h = dict(r.headers)
        assert h["tollgate-dlq-source-topic"] == src.encode()
        assert h["tollgate-dlq-source-partition"] == b"0"
        assert h["tollgate-dlq-source-offset"].isdigit()
        assert h["tollgate-dlq-service"] == b"svc"
        assert h["tollgate-dlq-error-type"] == error_type
        assert h["tollgate-dlq-error"]
        assert h["tollgate-dlq-failed-at"].isdigit()
        assert h["tollgate-dlq-attempt"] == b"1"


def _inputs(n: int, bad: dict[int, bytes]) -> list[bytes]:
    return [bad.get(i, f"rec-{i}".encode()) for i in range(n)]


async def stage_isolates_poison_and_goes_on(h: Harness) -> None:
    src, out, dlq = await _topics(h)

    async def handler(records: list[Record]) -> list[OutRecord]:
        for r in records:
            if r.value == b"poison":
                raise ValueError("cannot handle this record")
        return [OutRecord(out, r.value or b"", r.key) for r in records]

    values = _inputs(10, {3: b"poison", 7: b"poison"})
    stage = _stage(h, src, dlq, handler)

    async def body() -> None:
        await h.produce(src, values)
        got = await h.read(out, 8)
        dead = await h.read(dlq, 2)
        assert sorted(r.value for r in got) == sorted(v for v in values if v != b"poison")
        _check_dead(dead, src, [b"poison", b"poison"], b"ValueError")
        assert stage.stats.dead_lettered == 2 and stage.healthy

    await _running(stage, body)


async def stage_retries_transient_errors_and_never_dead_letters_them(h: Harness) -> None:
    src, out, dlq = await _topics(h)
    calls = {"n": 0}

    async def handler(records: list[Record]) -> list[OutRecord]:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise TransientError("database unreachable")
        return [OutRecord(out, r.value or b"", r.key) for r in records]

    values = _inputs(5, {})
    stage = _stage(h, src, dlq, handler, retry=FAST_RETRY)

    async def body() -> None:
        await h.produce(src, values)
        got = await h.read(out, 5)
        assert sorted(r.value for r in got) == sorted(values)
        assert stage.stats.aborted >= 2
        assert stage.stats.dead_lettered == 0

    await _running(stage, body)
    assert await h.read(dlq, 0) == []


async def stage_dead_letters_an_output_too_large_for_its_topic(h: Harness) -> None:
    src, out, dlq = await _topics(h)

    async def handler(records: list[Record]) -> list[OutRecord]:
        return [OutRecord(out, (r.value or b"") * (2000 if r.value == b"big" else 1)) for r in records]

    values = _inputs(6, {2: b"big"})
    stage = _stage(h, src, dlq, handler, max_message_bytes=lambda topic: 4000)

    async def body() -> None:
        await h.produce(src, values)
        got = await h.read(out, 5)
        dead = await h.read(dlq, 1)
        assert sorted(r.value for r in got) == sorted(v for v in values if v != b"big")
        _check_dead(dead, src, [b"big"], b"OutputTooLarge")

    await _running(stage, body)


async def stage_survives_a_refused_write_rebuilds_its_producer_and_isolates_the_record(h: Harness) -> None:
    # The topic takes 5,000 bytes but the stage believes 1 MiB: the broker refuses the transaction's batch.
    src, out, dlq = await _topics(h, out_max_bytes=5000)

    async def handler(records: list[Record]) -> list[OutRecord]:
        return [OutRecord(out, (r.value or b"") * (4000 if r.value == b"huge" else 1)) for r in records]

    values = _inputs(8, {4: b"huge"})
    stage = _stage(h, src, dlq, handler, retry=FAST_RETRY)

    async def body() -> None:
        await h.produce(src, values)
        got = await h.read(out, 7)
        dead = await h.read(dlq, 1)
        assert sorted(r.value for r in got) == sorted(v for v in values if v != b"huge")
        _check_dead(dead, src, [b"huge"], b"OutputTooLarge")
        assert stage.stats.failed_writes >= 1 and stage.stats.producer_rebuilds >= 1
        await h.produce(src, [b"after"])
        later = await h.read(out, 8)
        assert b"after" in [r.value for r in later]
        assert stage.healthy  # writes go through again

    await _running(stage, body)


async def sink_isolates_poison_and_refused_records_before_committing(h: Harness) -> None:
    src, _out, dlq = await _topics(h)
    stored: set[bytes] = set()

    async def handler(records: list[Record]) -> list[tuple[Record, str]]:
        for r in records:
            if r.value == b"poison":
                raise KeyError("payload")
        stored.update(r.value or b"" for r in records if r.value != b"refuse")
        return [(r, "refused by the sink") for r in records if r.value == b"refuse"]

    values = _inputs(9, {1: b"poison", 5: b"refuse"})
    sink = _sink(h, src, dlq, handler)

    async def body() -> None:
        await h.produce(src, values)
        await eventually(lambda: sink.stats.consumed >= 9, interval=0.05, what="9 records consumed")
        dead = await h.read(dlq, 2)
        assert stored == {v for v in values if v not in (b"poison", b"refuse")}
        assert sorted(r.value for r in dead) == [b"poison", b"refuse"]
        types = sorted(dict(r.headers)["tollgate-dlq-error-type"] for r in dead)
        assert types == [b"KeyError", b"Rejected"]
        assert sink.stats.dead_lettered == 2

    await _running(sink, body)


async def sink_retries_transient_errors(h: Harness) -> None:
    src, _out, dlq = await _topics(h)
    stored: list[bytes] = []
    calls = {"n": 0}

    async def handler(records: list[Record]) -> None:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise ConnectionRefusedError("database down")
        stored.extend(r.value or b"" for r in records)

    sink = _sink(h, src, dlq, handler, retry=FAST_RETRY)

    async def body() -> None:
        await h.produce(src, _inputs(4, {}))
        await eventually(lambda: len(stored) >= 4, interval=0.05, what="4 records stored")
        assert sorted(stored) == sorted(_inputs(4, {}))
        assert sink.stats.aborted >= 2 and sink.stats.dead_lettered == 0

    await _running(sink, body)
    assert await h.read(dlq, 0) == []


async def follower_reads_from_the_beginning_catches_up_then_follows(h: Harness) -> None:
    src, _out, dlq = await _topics(h)
    applied: list[bytes] = []
    caught_up_at: list[int] = []

    async def handler(records: list[Record]) -> None:
        applied.extend(r.value or b"" for r in records)

    async def on_caught_up() -> None:
        caught_up_at.append(len(applied))

    before = _inputs(6, {})
    await h.produce(src, before)
    follower = _follower(h, src, dlq, handler, on_caught_up=on_caught_up)
    await follower.start()
    try:
        await follower.catch_up()
        assert follower.caught_up and applied == before and caught_up_at == [6]
        task = asyncio.create_task(follower.run())
        after = [b"later-1", b"later-2"]
        await h.produce(src, after)
        await eventually(lambda: len(applied) >= 8, interval=0.05, what="8 records applied")
        assert applied == before + after and caught_up_at == [6]  # caught up once
        # Another replica (no group, nothing committed) reads the whole topic too.
        again: list[bytes] = []

        async def record(records: list[Record]) -> None:
            again.extend(r.value or b"" for r in records)

        second = _follower(h, src, dlq, record)
        await second.start()
        await second.catch_up()
        assert again == before + after
        await second.stop()
    finally:
        await follower.stop()
    await asyncio.wait_for(task, 30)  # run() returns once stopped


async def follower_dead_letters_poison_and_goes_on(h: Harness) -> None:
    src, _out, dlq = await _topics(h)
    applied: list[bytes] = []

    async def handler(records: list[Record]) -> None:
        if any(r.value == b"poison" for r in records):  # parse the batch first: a bad record folds nothing
            raise ValueError("not a lifecycle event")
        applied.extend(r.value or b"" for r in records)

    values = _inputs(10, {2: b"poison", 8: b"poison"})
    await h.produce(src, values)
    follower = _follower(h, src, dlq, handler)

    async def body() -> None:
        await eventually(lambda: follower.caught_up, interval=0.05, what="the follower caught up")
        assert applied == [v for v in values if v != b"poison"]  # in order, each once
        _check_dead(await h.read(dlq, 2), src, [b"poison", b"poison"], b"ValueError")
        await h.produce(src, [b"next"])
        await eventually(lambda: b"next" in applied, interval=0.05, what="the next record applied")
        assert follower.stats.dead_lettered == 2 and follower.healthy

    await _running(follower, body)


async def follower_retries_transient_errors_and_never_dead_letters_them(h: Harness) -> None:
    src, _out, dlq = await _topics(h)
    applied: list[bytes] = []
    calls = {"n": 0}

    async def handler(records: list[Record]) -> None:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise TransientError("artifact store unreachable")
        applied.extend(r.value or b"" for r in records)

    values = _inputs(5, {})
    await h.produce(src, values)
    follower = _follower(h, src, dlq, handler, retry=FAST_RETRY)

    async def body() -> None:
        await eventually(lambda: follower.caught_up, interval=0.05, what="the follower caught up")
        assert applied == values  # sought back to the first record not applied: nothing skipped or doubled
        assert follower.stats.aborted >= 2 and follower.stats.dead_lettered == 0

    await _running(follower, body)
    assert await h.read(dlq, 0) == []


CASES = [
    stage_isolates_poison_and_goes_on,
    stage_retries_transient_errors_and_never_dead_letters_them,
    stage_dead_letters_an_output_too_large_for_its_topic,
    stage_survives_a_refused_write_rebuilds_its_producer_and_isolates_the_record,
    sink_isolates_poison_and_refused_records_before_committing,
    sink_retries_transient_errors,
    follower_reads_from_the_beginning_catches_up_then_follows,
    follower_dead_letters_poison_and_goes_on,
    follower_retries_transient_errors_and_never_dead_letters_them,
]
