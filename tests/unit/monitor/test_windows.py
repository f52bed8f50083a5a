"""Windows are mergeable counts: merging equals counting together; sliding windows, lateness, checkpoints
and redelivered offsets behave."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import orjson
import pytest

from tests.unit.monitor.standin import stand_in_scores
from tollgate_core.contracts import DatasetContract
from tollgate_demo.datasets import generate_records
from tollgate_monitor.drift import Layout
from tollgate_monitor.processor import LogEntry, PartitionState, ingest, parse_entry
from tollgate_monitor.windows import WindowBook, count_window, latency_counts, latency_quantile


def counts_of(contract: DatasetContract, layout: Layout, n: int, seed: int):  # type: ignore[no-untyped-def]
    records = generate_records(contract, n, seed=seed)
    return count_window(layout, records, stand_in_scores(records), np.full(n, 3.0), np.arange(n, dtype=float))


def test_merging_equals_counting_together(contract: DatasetContract, layout: Layout) -> None:
    records = generate_records(contract, 900, seed=3)
    scores = stand_in_scores(records)
    whole = count_window(layout, records, scores, np.full(900, 2.0), np.zeros(900))
    a = count_window(layout, records[:400], scores[:400], np.full(400, 2.0), np.zeros(400))
    b = count_window(layout, records[400:], scores[400:], np.full(500, 2.0), np.zeros(500))
    merged = a.copy().add(b)
    assert merged.rows == whole.rows == 900
    for name in ("numeric", "category", "prediction", "latency"):
        assert np.array_equal(getattr(merged, name), getattr(whole, name)), name
    assert int(whole.numeric[0].sum()) == 900  # every record in exactly one bin (or the null column)


def test_latency_quantile_is_an_upper_bound_within_a_bucket() -> None:
    values = np.concatenate([np.full(990, 4.0), np.full(10, 900.0)])
    counts = latency_counts(values)
    p99 = latency_quantile(counts, 0.99)
    assert p99 is not None and 4.0 <= p99 <= 4.0 * 1.26
    assert latency_quantile(counts, 0.999) == pytest.approx(1000.0)
    assert latency_quantile(latency_counts(np.array([])), 0.99) is None


def test_sliding_windows_merge_their_buckets_and_late_records_are_dropped(
    contract: DatasetContract, layout: Layout
) -> None:
    book = WindowBook(window_seconds=10.0, span=3)
    for bucket in range(5):
        book.add(("m", "1"), bucket, counts_of(contract, layout, 100 + bucket, seed=bucket))
    due = list(book.due(watermark=45.0, lateness=2.0))  # buckets 0..3 ended before 43 s
    assert [(d.bucket, d.counts.rows, d.buckets) for d in due] == [
        (0, 100, 1),
        (1, 201, 2),
        (2, 303, 3),
        (3, 306, 3),
    ]
    assert (due[-1].start, due[-1].end) == (10.0, 40.0)
    assert book.is_late(("m", "1"), 3) and not book.is_late(("m", "1"), 4)
    assert sorted(book.buckets[("m", "1")]) == [2, 3, 4]  # what the next window (4) still needs


def entry(offset: int, at: float, record: dict, version: str = "1") -> LogEntry:  # type: ignore[type-arg]
    return LogEntry(
        offset=offset,
        request_id=f"r{offset}",
        model="m",
        version=version,
        route="champion",
        contract="synthetic-risk.v1",
        at=at,
        inputs=record,
        score=0.4,
        predicted="false",
        latency_ms=2.0,
        entity_id=None,
    )


def test_checkpoint_round_trip_and_redelivery_is_not_counted_twice(
    contract: DatasetContract, layout: Layout
) -> None:
    records = generate_records(contract, 60, seed=8)
    layouts = {("m", "1"): layout}
    state = PartitionState("topic", 0, window_seconds=10.0, span=1)
    first = [entry(i, float(i), r) for i, r in enumerate(records[:40])]
    assert ingest(state, first, layouts.get).accepted == 40
    assert [d.counts.rows for d in state.book.due(state.watermark, 0.0)] == [
        10,
        10,
        10,
    ]  # bucket 3 still open

    restored = PartitionState.from_json(
        "topic", 0, orjson.loads(orjson.dumps(state.to_json())), layouts.get, 10.0, 1
    )
    assert restored.last_offset == 39 and restored.watermark == 39.0
    # Kafka redelivers 30..59 after a crash: 30..39 are already in the checkpoint.
    again = [entry(i, float(i), r) for i, r in enumerate(records) if i >= 30]
    result = ingest(restored, again, layouts.get)
    assert (result.skipped, result.accepted) == (10, 20)
    due = list(restored.book.due(watermark=100.0, lateness=0.0))
    assert [(d.bucket, d.counts.rows) for d in due] == [(3, 10), (4, 10), (5, 10)]


def test_unreferenced_series_are_consumed_but_not_counted(contract: DatasetContract, layout: Layout) -> None:
    records = generate_records(contract, 5, seed=2)
    state = PartitionState("topic", 1, window_seconds=10.0, span=1)
    result = ingest(
        state, [entry(i, 1.0, r, version="9") for i, r in enumerate(records)], {}.get, frozenset({("m", "9")})
    )
    assert (result.accepted, state.unreferenced, state.last_offset) == (0, 5, 4)


def test_parse_inference_log_event(contract: DatasetContract) -> None:
    from tollgate_core.scoring import InferenceLogEvent

    record = generate_records(contract, 1, seed=1)[0]
    event = InferenceLogEvent.model_validate(
        {
            "event_id": "6b0f7c1e-4b1a-4d59-9a53-0f4f5d1b2c3d",
            "event_type": "inference",
            "schema": "inference.log.v1",
            "occurred_at": "2026-01-01T00:00:30Z",
            "producer": "scorer",
            "payload": {
                "request_id": "req-1",
                "model": "m",
                "version": "2",
                "route": "canary",
                "channel": "http",
                "contract": "synthetic-risk.v1",
                "entity_id": "e-1",
                "inputs": record,
                "outputs": {"prediction": True, "score": 0.83},
                "latency_ms": 1.7,
            },
        }
    )
    got = parse_entry(7, orjson.dumps(event.model_dump(mode="json", by_alias=True)))
    assert (got.offset, got.model, got.version, got.route, got.score, got.predicted, got.entity_id) == (
        7,
        "m",
        "2",
        "canary",
        0.83,
        "true",
        "e-1",
    )
    assert got.at == datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC).timestamp() and math.isclose(
        got.latency_ms, 1.7
    )
    with pytest.raises((KeyError, ValueError)):
        parse_entry(8, b'{"payload": {}}')


def test_nothing_is_due_before_a_partition_has_an_event_time(
    contract: DatasetContract, layout: Layout
) -> None:
    # Regression: a first batch of a partition holding only unreadable records left the watermark at -inf,
    # and judging due windows raised OverflowError; the runtime then dead-lettered those records a second
    # time (once by the monitor, once as the batch's failure).
    book = WindowBook(60.0, 3)
    assert list(book.due(-math.inf, 0.0)) == []
    book.add(("m", "1"), 5, counts_of(contract, layout, 10, seed=1))
    assert list(book.due(-math.inf, 30.0)) == []
    assert [w.bucket for w in book.due(10_000.0, 0.0)] == [5]
