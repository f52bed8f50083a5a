"""Windows of inference records per (model, version), kept as mergeable counts.

Event time is cut into buckets of ``window_seconds``. A bucket holds, per feature, the counts per reference
bin (numbers) or per category, the counts of the score per reference bin, and a latency histogram. Counts
add, so a window of N buckets (sliding) is the sum of its buckets, and state from several batches or
partitions combines by addition. A partition's state (its open buckets, the buckets a sliding window still
needs, the hysteresis of its models and its last offset) is a few kilobytes of JSON, checkpointed in
PostgreSQL with every batch.

A bucket is evaluated once the partition's newest event time (its watermark) passed the bucket's end by the
allowed lateness; records that arrive for an evaluated bucket later still are counted as late and dropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tollgate_monitor.drift import IntArray, Layout

# Latency histogram: 10 buckets per decade from 0.1 ms to 100 s, plus under- and overflow.
LATENCY_EDGES_MS = np.round(np.geomspace(0.1, 100_000.0, 61), 6)


def latency_counts(latencies_ms: np.ndarray) -> IntArray:
    values = latencies_ms[~np.isnan(latencies_ms)]
    index = np.searchsorted(LATENCY_EDGES_MS, values, side="right")
    return np.bincount(index, minlength=len(LATENCY_EDGES_MS) + 1).astype(np.int64)


def latency_quantile(counts: IntArray, q: float) -> float | None:
    """The ``q`` quantile as the upper edge of its histogram bucket (at most 26 % above the true value)."""
    total = int(counts.sum())
    if total == 0:
        return None
    rank = math.ceil(q * total)
    index = int(np.searchsorted(np.cumsum(counts), rank, side="left"))
    if index >= len(LATENCY_EDGES_MS):
        return float(LATENCY_EDGES_MS[-1])
    return float(LATENCY_EDGES_MS[index])


@dataclass
class WindowCounts:
    """Counts of one bucket (or of several merged)."""

    rows: int
    numeric: IntArray
    category: IntArray
    prediction: IntArray
    latency: IntArray
    first_at: float = math.inf
    last_at: float = -math.inf

    @classmethod
    def empty(cls, layout: Layout) -> WindowCounts:
        return cls(
            rows=0,
            numeric=np.zeros((len(layout.numeric.names), layout.numeric.bins + 1), dtype=np.int64),
            category=np.zeros((len(layout.category.names), layout.category.width), dtype=np.int64),
            prediction=np.zeros(layout.prediction.bins + 1, dtype=np.int64),
            latency=np.zeros(len(LATENCY_EDGES_MS) + 1, dtype=np.int64),
        )

    def add(self, other: WindowCounts) -> WindowCounts:
        """Add ``other`` into this window (in place) and return it."""
        self.rows += other.rows
        self.numeric += other.numeric
        self.category += other.category
        self.prediction += other.prediction
        self.latency += other.latency
        self.first_at = min(self.first_at, other.first_at)
        self.last_at = max(self.last_at, other.last_at)
        return self

    def copy(self) -> WindowCounts:
        return WindowCounts(
            self.rows,
            self.numeric.copy(),
            self.category.copy(),
            self.prediction.copy(),
            self.latency.copy(),
            self.first_at,
            self.last_at,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "numeric": self.numeric.tolist(),
            "category": self.category.tolist(),
            "prediction": self.prediction.tolist(),
            "latency": self.latency.tolist(),
            "first_at": self.first_at if math.isfinite(self.first_at) else None,
            "last_at": self.last_at if math.isfinite(self.last_at) else None,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any], layout: Layout) -> WindowCounts:
        empty = cls.empty(layout)
        return cls(
            rows=int(doc["rows"]),
            numeric=np.asarray(doc["numeric"], dtype=np.int64).reshape(empty.numeric.shape),
            category=np.asarray(doc["category"], dtype=np.int64).reshape(empty.category.shape),
            prediction=np.asarray(doc["prediction"], dtype=np.int64).reshape(empty.prediction.shape),
            latency=np.asarray(doc["latency"], dtype=np.int64).reshape(empty.latency.shape),
            first_at=math.inf if doc.get("first_at") is None else float(doc["first_at"]),
            last_at=-math.inf if doc.get("last_at") is None else float(doc["last_at"]),
        )


def count_window(
    layout: Layout,
    records: list[dict[str, Any]],
    scores: np.ndarray,
    latencies_ms: np.ndarray,
    times: np.ndarray,
) -> WindowCounts:
    """Counts of a group of records of one version and bucket (inputs, scores, latencies, event times)."""
    prediction = layout.prediction.count(scores.reshape(-1, 1))[0]
    return WindowCounts(
        rows=len(records),
        numeric=layout.numeric.count(layout.numeric_matrix(records)),
        category=layout.category.count(layout.category_columns(records)),
        prediction=prediction,
        latency=latency_counts(latencies_ms),
        first_at=float(times.min()) if len(times) else math.inf,
        last_at=float(times.max()) if len(times) else -math.inf,
    )


Series = tuple[str, str]  # (model, version)


@dataclass(frozen=True)
class DueWindow:
    """A window whose last bucket just closed: ready to be judged."""

    model: str
    version: str
    bucket: int  # index of its last bucket
    start: float  # epoch seconds
    end: float
    counts: WindowCounts
    buckets: int  # buckets that had data


@dataclass
class WindowBook:
    """Buckets of every (model, version) one partition carries, and which have been evaluated."""

    window_seconds: float
    span: int
    buckets: dict[Series, dict[int, WindowCounts]] = field(default_factory=dict)
    evaluated_through: dict[Series, int] = field(default_factory=dict)
    late_records: int = 0

    def bucket_of(self, t: float) -> int:
        return math.floor(t / self.window_seconds)

    def is_late(self, series: Series, bucket: int) -> bool:
        done = self.evaluated_through.get(series)
        return done is not None and bucket <= done

    def add(self, series: Series, bucket: int, counts: WindowCounts) -> None:
        held = self.buckets.setdefault(series, {})
        if bucket in held:
            held[bucket].add(counts)
        else:
            held[bucket] = counts

    def due(self, watermark: float, lateness: float) -> Iterator[DueWindow]:
        """Windows whose last bucket closed (end + lateness <= watermark), oldest first; marks them done and
        drops buckets no later window needs. Nothing is due before the partition has an event time (a
        watermark of -inf: only unreadable records so far)."""
        if not math.isfinite(watermark):
            return
        closed_below = self.bucket_of(watermark - lateness)  # buckets < this one have ended
        for series in sorted(self.buckets):
            held = self.buckets[series]
            done = self.evaluated_through.get(series)
            for bucket in sorted(b for b in held if b < closed_below and (done is None or b > done)):
                members = [held[b] for b in range(bucket - self.span + 1, bucket + 1) if b in held]
                merged = members[0].copy()
                for other in members[1:]:
                    merged.add(other)
                yield DueWindow(
                    series[0],
                    series[1],
                    bucket,
                    (bucket - self.span + 1) * self.window_seconds,
                    (bucket + 1) * self.window_seconds,
                    merged,
                    len(members),
                )
                self.evaluated_through[series] = bucket
            done = self.evaluated_through.get(series)
            if done is not None:
                for b in [b for b in held if b <= done - self.span + 1]:
                    del held[b]
            if not held:
                del self.buckets[series]
