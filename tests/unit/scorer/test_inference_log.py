"""The inference log: batches in order, spool while Kafka is away, replay in order, policies when full,
and counters that account for every event."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.unit.scorer.support import PII_KEY, FakeSink, serving
from tollgate_core.pii import pii_hash
from tollgate_core.scoring import InferenceLogEvent
from tollgate_scorer.inference_log import InferenceEventEncoder, InferenceLog, LogEntry
from tollgate_scorer.spool import Spool

TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def entry(i: int, route: str = "champion", traceparent: bytes | None = None) -> LogEntry:
    instance = {
        "customer_id": f"C{i}",
        "student": "No",
        "balance": 10.0 * i,
        "income": None,
        "customer_email": f"c{i}@example.com",
    }
    return LogEntry(
        at=time.time(),
        request_id=f"req-{i}",
        model=serving("1"),
        route=route,
        channel="http",
        instance=instance,
        prediction=False,
        score=0.25,
        probabilities=[0.75, 0.25],
        latency_ms=0.4,
        traceparent=traceparent,
        event_id=None,
    )


def make_log(
    tmp_path: Path,
    sink: FakeSink,
    *,
    max_bytes: int = 10_000_000,
    policy: Any = "refuse",
    batch_size: int = 50,
    max_queue: int = 50_000,
    spool: str = "spool",
) -> InferenceLog:
    return InferenceLog(
        sink=sink,
        encoder=InferenceEventEncoder("inference.log.v1", "scorer-test"),
        spool=Spool(tmp_path / spool, max_bytes, segment_bytes=4096),
        policy=policy,
        batch_size=batch_size,
        max_queue=max_queue,
        retry_s=0.0,
    )


def accounted(log: InferenceLog) -> bool:
    return log.logged == log.acked + log.dropped + log.backlog


async def test_events_are_batched_in_order_and_counted(tmp_path: Path) -> None:
    sink = FakeSink()
    log = make_log(tmp_path, sink)
    for i in range(120):
        log.append(entry(i))
    await log._pump()
    assert sink.request_ids() == [f"req-{i}" for i in range(120)]
    assert (log.logged, log.produced, log.acked, log.failed, log.spooled) == (120, 120, 120, 0, 0)
    assert accounted(log)


async def test_event_content_pii_and_schema(tmp_path: Path) -> None:
    sink = FakeSink()
    log = make_log(tmp_path, sink)
    log.append(entry(7, traceparent=TRACEPARENT))
    log.append(entry(8, route="shadow"))
    await log._pump()
    (key, value, tp), (_, shadow, _) = sink.sent
    event = InferenceLogEvent.model_validate_json(value)
    assert key == b"credit-default-risk" and tp == TRACEPARENT
    p = event.payload
    assert (p.request_id, p.model, p.version, p.route, p.channel) == (
        "req-7",
        "credit-default-risk",
        "1",
        "champion",
        "http",
    )
    assert p.inputs["customer_email"] == pii_hash(PII_KEY, "c7@example.com") != "c7@example.com"
    assert p.inputs["customer_id"] == "C7" and p.entity_id == "C7" and p.inputs["income"] is None
    assert p.outputs.prediction is False and p.outputs.probabilities == {"false": 0.75, "true": 0.25}
    assert p.trace_id == "0af7651916cd43dd8448eb211c80319c" and p.contract == "credit-default.v1"
    assert InferenceLogEvent.model_validate_json(shadow).payload.route == "shadow"
    assert event.event_id != InferenceLogEvent.model_validate_json(shadow).event_id


async def test_outage_spools_then_replays_in_order_before_new_events(tmp_path: Path) -> None:
    sink = FakeSink()
    log = make_log(tmp_path, sink)
    for i in range(10):
        log.append(entry(i))
    await log._pump()
    sink.up = False
    for i in range(10, 130):
        log.append(entry(i))
    await log._pump()  # the send fails: that batch and the rest go to the spool
    assert log.failed == 50 and log.spooled == 120 and log.spool.records == 120 and not log.kafka_up
    for i in range(130, 140):
        log.append(entry(i))
    await log._pump()  # still down: the start fails, nothing more is produced
    assert log.spool.records == 130 and log.produced == 60 and accounted(log)
    sink.up = True
    for i in range(140, 150):
        log.append(entry(i))
    await log._pump()
    assert sink.request_ids() == [f"req-{i}" for i in range(150)]
    assert log.replayed == 130 and log.acked == 150 and log.spool.empty and log.backlog == 0
    assert accounted(log)
    assert sum(p.stat().st_size for p in (tmp_path / "spool").glob("*.seg")) == 0  # replayed bytes are gone


async def test_full_spool_with_policy_drop_counts_what_it_drops(tmp_path: Path) -> None:
    sink = FakeSink()
    sink.up = False
    log = make_log(tmp_path, sink, max_bytes=20_000, policy="drop")
    for i in range(200):
        log.append(entry(i))
    await log._pump()
    assert log.dropped > 0 and log.spool.records > 0 and log.accepting
    assert log.spool.bytes <= 20_000 and accounted(log)
    sink.up = True
    await log._pump()
    assert log.acked == len(sink.sent) and log.acked + log.dropped == 200 and accounted(log)
    ids = sink.request_ids()
    assert ids == sorted(ids, key=lambda r: int(r.split("-")[1]))  # in order, with a gap where events dropped


async def test_full_spool_with_policy_refuse_holds_and_refuses_then_recovers(tmp_path: Path) -> None:
    sink = FakeSink()
    sink.up = False
    log = make_log(tmp_path, sink, max_bytes=20_000, policy="refuse")
    for i in range(200):
        log.append(entry(i))
    await log._pump()
    assert not log.accepting and log.dropped == 0 and accounted(log)
    sink.up = True
    await log._pump()
    assert log.accepting and sink.request_ids() == [f"req-{i}" for i in range(200)]
    assert log.acked == 200 and log.backlog == 0 and accounted(log)


async def test_close_spools_what_is_left_and_a_new_process_replays_it(tmp_path: Path) -> None:
    sink = FakeSink()
    sink.up = False
    log = make_log(tmp_path, sink)
    for i in range(75):
        log.append(entry(i))
    await log.close()
    log.append(entry(75))  # an inference finishing during shutdown still lands on disk
    assert Spool(tmp_path / "spool", 10_000_000).records == 76
    sink2 = FakeSink()
    restarted = make_log(tmp_path, sink2)
    restarted.append(entry(76))
    await restarted._pump()
    assert sink2.request_ids() == [f"req-{i}" for i in range(77)]
    assert restarted.replayed == 76 and restarted.spool.empty


async def test_healthy_close_delivers_the_queue(tmp_path: Path) -> None:
    sink = FakeSink()
    log = make_log(tmp_path, sink)
    for i in range(30):
        log.append(entry(i))
    await log.close()
    assert len(sink.sent) == 30 and sink.stopped == 1 and log.closed


async def test_shutdown_with_a_full_spool_keeps_the_held_events(tmp_path: Path) -> None:
    sink = FakeSink()
    sink.up = False
    log = make_log(tmp_path, sink, max_bytes=20_000, policy="refuse")
    for i in range(100):
        log.append(entry(i))
    await log._pump()
    assert not log.accepting
    await log.close()
    log.append(entry(100))
    sink2 = FakeSink()
    restarted = make_log(tmp_path, sink2, max_bytes=20_000)
    await restarted._pump()
    assert sink2.request_ids() == [f"req-{i}" for i in range(101)]


async def test_memory_stays_bounded_when_kafka_is_slower_than_scoring(tmp_path: Path) -> None:
    sink = FakeSink()
    log = make_log(tmp_path, sink, batch_size=10, max_queue=25)
    for i in range(100):
        log.append(entry(i))
    await log._pump()
    assert log.spooled == 90  # the first batch went out; the 90 behind it exceeded the bound and were spooled
    await log._pump()
    assert sink.request_ids() == [f"req-{i}" for i in range(100)] and accounted(log)


async def test_a_sender_far_behind_refuses_or_drops_at_the_memory_limit(tmp_path: Path) -> None:
    for policy in ("refuse", "drop"):
        log = make_log(tmp_path, FakeSink(), policy=policy, batch_size=2000, max_queue=10, spool=policy)
        for i in range(60):
            log.append(entry(i))
        if policy == "refuse":
            assert not log.accepting and log.dropped == 0 and log.backlog == 60
        else:
            assert log.accepting and log.dropped == 20 and log.backlog == 40
        await log._pump()
        assert log.accepting and accounted(log)


async def test_deferred_entries_are_built_by_the_sender_in_queue_order(tmp_path: Path) -> None:
    """A batch request hands the log one deferred item: counted at once, built only when the sender takes
    it, delivered between the entries appended before and after it; during an outage it spools like the
    rest and is replayed in order."""
    sink = FakeSink()
    log = make_log(tmp_path, sink, batch_size=10)
    built: list[int] = []

    def build(first: int, count: int) -> list[LogEntry]:
        built.append(first)
        return [entry(i) for i in range(first, first + count)]

    log.append(entry(0))
    log.defer(25, lambda: build(1, 25))
    log.append(entry(26))
    assert (log.logged, log.backlog, built) == (27, 27, [])  # nothing built on the request path
    sink.up = False
    await log._pump()
    assert built == [1] and log.spooled == 27 and accounted(log)
    log.defer(3, lambda: build(27, 3))
    sink.up = True
    await log._pump()
    assert sink.request_ids() == [f"req-{i}" for i in range(30)]
    assert (log.logged, log.acked, log.backlog) == (30, 30, 0) and accounted(log)


async def test_deferred_entries_meet_the_memory_limit_and_shutdown(tmp_path: Path) -> None:
    log = make_log(tmp_path, FakeSink(), policy="drop", batch_size=2000, max_queue=10)
    log.defer(40, lambda: [entry(i) for i in range(40)])
    log.defer(5, lambda: [entry(i) for i in range(5)])  # past four times max_queue: dropped, counted
    assert (log.logged, log.dropped, log.backlog) == (45, 5, 40)
    await log.close()
    log.defer(2, lambda: [entry(i) for i in range(2)])  # after close: straight to the spool
    assert log.spool.records == 2 and accounted(log)
