"""What a row of the audit trail is, and how its hashes are computed.

The hashes must be recomputable from the stored row alone, by the service and by an offline verifier, so
everything hashed is kept in a form that survives the round trip through PostgreSQL byte for byte:

* the envelope is stored as the exact text that was hashed: the bytes the producer sent (or, for a data
  record whose personal data had to be protected first, its canonical JSON); the ``audit_trail`` view
  offers it as jsonb for ad-hoc SQL;
* timestamps are hashed as integer microseconds since the epoch (what ``timestamptz`` keeps);
* the event id is hashed as its canonical lowercase text.

``content_hash = sha256(header || "\\n" || envelope)`` where ``header`` is the canonical JSON array of the
other content fields (a JSON text never holds a raw newline, so the split is unambiguous and the envelope
is hashed as stored, without escaping), and ``row_hash = sha256(prev_hash || content_hash)``. The first row
of a stream links to a genesis hash derived from the stream's name, so rows cannot move between streams
unnoticed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from tollgate_audit_log import compiled
from tollgate_audit_log.merkle import leaf_hash

HASH_FORMAT = "tollgate-audit/1"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)

# Columns of audit_events in the order of a record made by chain_records().
COPY_COLUMNS = (
    "stream", "seq", "event_id", "topic", "kafka_partition", "kafka_offset", "event_type", "occurred_at",
    "recorded_at", "request_id", "entity_id", "model", "version", "trace_id", "envelope",
    "content_hash", "prev_hash", "row_hash",
)  # fmt: skip

Record = tuple[Any, ...]


def micros(moment: datetime) -> int:
    """Exact microseconds since the epoch (no float rounding), as PostgreSQL stores a ``timestamptz``."""
    return (moment - EPOCH) // _MICRO


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace: one text per JSON value, whatever order the producer used."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def genesis_hash(stream: str) -> bytes:
    """What the first row of a stream links to."""
    return hashlib.sha256(b"tollgate-audit-genesis\x00" + stream.encode()).digest()


@dataclass(slots=True)
class Entry:
    """One event to be appended: everything but its place in the chain."""

    event_id: str
    topic: str
    partition: int
    offset: int
    event_type: str
    occurred_at: datetime
    request_id: str | None
    entity_id: str | None
    model: str | None
    version: str | None
    trace_id: str | None
    envelope: str


def content_hash(
    stream: str,
    seq: int,
    event_id: str,
    topic: str,
    partition: int,
    offset: int,
    event_type: str,
    occurred_us: int,
    recorded_us: int,
    request_id: str | None,
    entity_id: str | None,
    model: str | None,
    version: str | None,
    trace_id: str | None,
    envelope: str,
) -> bytes:
    """sha256 over every content field of a row (index columns too: a query must not be redirectable)."""
    header = orjson.dumps((
        HASH_FORMAT, stream, seq, event_id, topic, partition, offset, event_type, occurred_us, recorded_us,
        request_id, entity_id, model, version, trace_id,
    ))  # fmt: skip
    h = hashlib.sha256(header)
    h.update(b"\n")
    h.update(envelope.encode())
    return h.digest()


def link(prev_hash: bytes, content: bytes) -> bytes:
    return hashlib.sha256(prev_hash + content).digest()


@dataclass(slots=True)
class Head:
    """The last row of a chain: its seq and row hash (seq 0 and the genesis hash for an empty chain)."""

    seq: int
    hash: bytes


# Entries the compiled loop places at a time: their rows go to the COPY as they are yielded.
CHAIN_SLICE = 200
ChainRows = Callable[
    [str, bytes, list[Entry], int, bytes, datetime, int], tuple[list[Record], list[bytes], bytes]
]


# The compiled loop (:mod:`tollgate_audit_log.compiled`); None: the Python loop places every entry (the
# tests run both).
chain_rows: ChainRows | None = compiled.function("chain_rows")


def header_prefix(stream: str) -> bytes:
    """The start of every header of ``stream`` (``HASH_FORMAT``, the stream and a comma), which the
    compiled loops continue with the row's other fields."""
    return orjson.dumps((HASH_FORMAT, stream))[:-1] + b","


def iter_chain(
    stream: str,
    entries: list[Entry],
    head: Head,
    recorded_at: datetime,
    leaves: list[bytes] | None = None,
) -> Iterator[Record]:
    """Place entries after ``head`` lazily: consecutive seqs, each row linked to the last.

    Yields the rows (:data:`COPY_COLUMNS` order) as they are placed, so a ``COPY`` can send and PostgreSQL
    insert the first rows while the next ones are hashed; ``head`` becomes the new head once every row has
    been taken. ``leaves``, when given, receives each row's Merkle leaf hash (by the time the row is
    yielded). The compiled loop (:data:`chain_rows`) places :data:`CHAIN_SLICE` entries at a time; an
    entry it does not take is placed by the Python loop here, the reference. Kept flat: the sink's hot loop.
    """
    recorded_us = micros(recorded_at)
    prev = head.hash
    seq = head.seq
    sha = hashlib.sha256
    dumps = orjson.dumps
    place = chain_rows
    prefix = header_prefix(stream)
    i, n = 0, len(entries)
    while i < n:
        if place is not None:
            part = entries[i : i + CHAIN_SLICE]
            rows, hashed, prev = place(stream, prefix, part, seq, prev, recorded_at, recorded_us)
            seq += len(rows)
            i += len(rows)
            if leaves is not None:
                leaves.extend(hashed)
            yield from rows
            if len(rows) == len(part):
                continue
        e = entries[i]
        seq += 1
        content = sha(b"%b\n%b" % (dumps((
            HASH_FORMAT, stream, seq, e.event_id, e.topic, e.partition, e.offset, e.event_type,
            (e.occurred_at - EPOCH) // _MICRO, recorded_us, e.request_id, e.entity_id, e.model, e.version,
            e.trace_id,
        )), e.envelope.encode())).digest()  # fmt: skip
        row = sha(prev + content).digest()
        if leaves is not None:
            leaves.append(leaf_hash(row))
        yield (
            stream, seq, e.event_id, e.topic, e.partition, e.offset, e.event_type, e.occurred_at, recorded_at,
            e.request_id, e.entity_id, e.model, e.version, e.trace_id, e.envelope, content, prev, row,
        )  # fmt: skip
        prev = row
        i += 1
    head.seq, head.hash = seq, prev


def chain_records(
    stream: str, entries: list[Entry], head_seq: int, head_hash: bytes, recorded_at: datetime
) -> tuple[list[Record], int, bytes]:
    """Place entries after the head ``(head_seq, head_hash)``: returns the rows and the new head."""
    head = Head(head_seq, head_hash)
    records = list(iter_chain(stream, entries, head, recorded_at))
    return records, head.seq, head.hash
