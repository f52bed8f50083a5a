"""Inference-log records into a partition's windows: parsing, idempotent offsets, grouping and counting.

A partition's state is everything the monitor knows about the records of that partition: window counts,
which windows were judged, the hysteresis of every series and the last offset included. It is restored from
its checkpoint when a replica takes the partition over, and records at or below the checkpointed offset are
skipped when Kafka redelivers them, so a restart neither loses nor double-counts a record.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import orjson

from tollgate_core.reference import category_key
from tollgate_monitor.alerts import Hysteresis
from tollgate_monitor.drift import Layout
from tollgate_monitor.windows import Series, WindowBook, WindowCounts, count_window


@dataclass(slots=True)
class LogEntry:
    """The parts of one ``inference.log`` event the monitor uses."""

    offset: int
    request_id: str
    model: str
    version: str
    route: str
    contract: str
    at: float  # event time, epoch seconds
    inputs: dict[str, Any]
    score: float  # the value compared with the reference's prediction summary (NaN if absent)
    predicted: str | None
    latency_ms: float
    entity_id: str | None


def parse_entry(offset: int, value: bytes | None) -> LogEntry:
    """Read an ``InferenceLogEvent`` (``tollgate_core.scoring``) from JSON.

    The envelope is trusted as the scorer validated it when it built it; only the fields used here are read
    (full pydantic validation per record would be the monitor's largest cost). Raises on a malformed record.
    """
    doc = orjson.loads(value or b"null")
    p = doc["payload"]
    outputs = p["outputs"]
    prediction = outputs.get("prediction")
    score = outputs.get("score")
    if score is None and isinstance(prediction, int | float) and not isinstance(prediction, bool):
        score = prediction  # regression: the reference summarises the predicted value
    return LogEntry(
        offset=offset,
        request_id=str(p["request_id"]),
        model=str(p["model"]),
        version=str(p["version"]),
        route=str(p.get("route", "")),
        contract=str(p["contract"]),
        at=datetime.fromisoformat(doc["occurred_at"]).timestamp(),
        inputs=p["inputs"],
        score=float(score) if score is not None else math.nan,
        predicted=None if prediction is None else category_key(prediction),
        latency_ms=float(p.get("latency_ms", math.nan)),
        entity_id=None if p.get("entity_id") is None else str(p["entity_id"]),
    )


@dataclass
class PartitionState:
    topic: str
    partition: int
    window_seconds: float
    span: int
    last_offset: int = -1
    watermark: float = -math.inf
    book: WindowBook = field(init=False)
    hysteresis: dict[Series, dict[str, Hysteresis]] = field(default_factory=dict)
    unreferenced: int = 0

    def __post_init__(self) -> None:
        self.book = WindowBook(self.window_seconds, self.span)

    def series_states(self, series: Series) -> dict[str, Hysteresis]:
        return self.hysteresis.setdefault(series, {})

    def to_json(self) -> dict[str, Any]:
        return {
            "window_seconds": self.window_seconds,
            "span": self.span,
            "last_offset": self.last_offset,
            "watermark": self.watermark if math.isfinite(self.watermark) else None,
            "unreferenced": self.unreferenced,
            "late": self.book.late_records,
            "series": [
                {
                    "model": m,
                    "version": v,
                    "evaluated_through": self.book.evaluated_through.get((m, v)),
                    "buckets": {str(b): c.to_json() for b, c in self.book.buckets.get((m, v), {}).items()},
                    "hysteresis": {k: h.to_json() for k, h in self.hysteresis.get((m, v), {}).items()},
                }
                for m, v in sorted(
                    set(self.book.buckets) | set(self.book.evaluated_through) | set(self.hysteresis)
                )
            ],
        }

    @classmethod
    def from_json(
        cls,
        topic: str,
        partition: int,
        doc: Mapping[str, Any],
        layout_of: Callable[[Series], Layout | None],
        window_seconds: float,
        span: int,
    ) -> PartitionState:
        """Restore a checkpoint. Buckets of another window length (settings changed) are not comparable and
        are dropped; hysteresis and offsets are kept."""
        state = cls(
            topic,
            partition,
            window_seconds,
            span,
            last_offset=int(doc["last_offset"]),
            watermark=-math.inf if doc.get("watermark") is None else float(doc["watermark"]),
            unreferenced=int(doc.get("unreferenced", 0)),
        )
        state.book.late_records = int(doc.get("late", 0))
        same_windows = float(doc.get("window_seconds", 0)) == window_seconds
        for item in doc.get("series", []):
            series = (str(item["model"]), str(item["version"]))
            state.hysteresis[series] = {
                k: Hysteresis.from_json(h) for k, h in item.get("hysteresis", {}).items()
            }
            layout = layout_of(series)
            if not same_windows or layout is None:
                continue
            if item.get("evaluated_through") is not None:
                state.book.evaluated_through[series] = int(item["evaluated_through"])
            for bucket, counts in item.get("buckets", {}).items():
                state.book.add(series, int(bucket), WindowCounts.from_json(counts, layout))
        return state


@dataclass
class Ingested:
    accepted: int = 0
    late: int = 0
    skipped: int = 0  # at or below the checkpointed offset (redelivered)


def ingest(
    state: PartitionState,
    entries: list[LogEntry],
    layout_of: Callable[[Series], Layout | None],
    unreferenced: frozenset[Series] = frozenset(),
) -> Ingested:
    """Count ``entries`` (one partition's, in offset order) into the partition's windows.

    Entries at or below the checkpointed offset are skipped: they were counted before a crash or a
    rebalance. Entries of ``unreferenced`` series (no reference profile arrived in time) are consumed and
    only counted; every other series must have a layout.
    """
    result = Ingested()
    groups: dict[tuple[str, str, int], list[LogEntry]] = defaultdict(list)
    for entry in entries:
        if entry.offset <= state.last_offset:
            result.skipped += 1
            continue
        state.last_offset = entry.offset
        series = (entry.model, entry.version)
        if series in unreferenced:
            state.unreferenced += 1
            continue
        bucket = state.book.bucket_of(entry.at)
        if state.book.is_late(series, bucket):
            result.late += 1
            continue
        groups[(entry.model, entry.version, bucket)].append(entry)
        if entry.at > state.watermark:
            state.watermark = entry.at
    for (model, version, bucket), group in groups.items():
        layout = layout_of((model, version))
        assert layout is not None, "entries of unknown versions are filtered out before ingest"
        counts = count_window(
            layout,
            [e.inputs for e in group],
            np.array([e.score for e in group], dtype=np.float64),
            np.array([e.latency_ms for e in group], dtype=np.float64),
            np.array([e.at for e in group]),
        )
        state.book.add((model, version), bucket, counts)
        result.accepted += len(group)
    state.book.late_records += result.late
    return result
