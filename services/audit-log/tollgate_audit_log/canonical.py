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
import re
import struct
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from tollgate_audit_log import compiled
from tollgate_audit_log.merkle import leaf_hash

HASH_FORMAT = "tollgate-audit/1"
# An event id as the trail hashes it: a UUID's canonical text (what PostgreSQL prints for a uuid).
CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
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


# Entries a chunk of the writer's COPY holds at most (:func:`iter_copy`): sent as soon as they are hashed;
# and the bytes after which a chunk takes no more rows (so a chunk is at most that plus one row).
CHAIN_SLICE = 200
CHUNK_BYTES = 1 << 20
ChainCopy = Callable[
    [str, bytes, list[Entry], int, bytes, int, int], tuple[bytes, list[bytes], list[bytes], bytes]
]


# The writer's compiled loop (:mod:`tollgate_audit_log.compiled`): it places and encodes the rows of
# :func:`iter_copy`; None: the Python loop does (the tests run both).
chain_copy: ChainCopy | None = compiled.function("chain_copy")


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
    yielded). The reference of the compiled loop (:data:`chain_copy`). Kept flat: a hot loop.
    """
    recorded_us = micros(recorded_at)
    prev = head.hash
    seq = head.seq
    sha = hashlib.sha256
    dumps = orjson.dumps
    for e in entries:
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
    head.seq, head.hash = seq, prev


def chain_records(
    stream: str, entries: list[Entry], head_seq: int, head_hash: bytes, recorded_at: datetime
) -> tuple[list[Record], int, bytes]:
    """Place entries after the head ``(head_seq, head_hash)``: returns the rows and the new head."""
    head = Head(head_seq, head_hash)
    records = list(iter_chain(stream, entries, head, recorded_at))
    return records, head.seq, head.hash


# A binary COPY stream (PostgreSQL's COPY docs, "Binary Format"): a signature, flags and an empty header
# extension; one tuple a row; a field count of -1 after the last.
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
COPY_TRAILER = struct.pack("!h", -1)
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_NULL = struct.pack("!i", -1)
_HASH = struct.pack("!i", 32)
_TUPLE = struct.Struct("!hi").pack  # the field count, the stream's length
_INT8 = struct.Struct("!iq").pack  # a bigint or timestamptz field: 8, the value
_INT4 = struct.Struct("!ii").pack
_SIZE = struct.Struct("!i").pack
_UUID = _SIZE(16)


def _uuid_bytes(text: str) -> bytes:
    if CANONICAL_UUID.match(text):
        return bytes.fromhex(text.replace("-", ""))
    return uuid.UUID(text).bytes


def copy_tuple(row: Record) -> bytes:
    """A placed row (:data:`COPY_COLUMNS` order) as one tuple of a binary ``COPY audit_events`` of those
    columns: what :data:`chain_copy` writes for the rows it places, written here for the rows the Python
    loop places. Every value as the column stores it: timestamps as their microseconds since 2000-01-01,
    even at the edges of ``datetime`` (where asyncpg's codec writes PostgreSQL's infinities instead)."""
    name, event_type, topic, envelope = row[0].encode(), row[6].encode(), row[3].encode(), row[14].encode()
    parts = [
        _TUPLE(len(COPY_COLUMNS), len(name)),
        name,
        _INT8(8, row[1]),
        _UUID,
        _uuid_bytes(row[2]),
        _SIZE(len(topic)),
        topic,
        _INT4(4, row[4]),
        _INT8(8, row[5]),
        _SIZE(len(event_type)),
        event_type,
        _INT8(8, (row[7] - _PG_EPOCH) // _MICRO),
        _INT8(8, (row[8] - _PG_EPOCH) // _MICRO),
    ]
    for value in row[9:14]:
        if value is None:
            parts.append(_NULL)
        else:
            text = value.encode()
            parts += (_SIZE(len(text)), text)
    parts += (_SIZE(len(envelope)), envelope, _HASH, row[15], _HASH, row[16], _HASH, row[17])
    return b"".join(parts)


def iter_copy(
    stream: str,
    entries: list[Entry],
    head: Head,
    recorded_at: datetime,
    hashes: list[bytes],
    leaves: list[bytes],
) -> Iterator[bytes]:
    """:func:`iter_chain` as the chunks of a binary ``COPY audit_events (COPY_COLUMNS) FROM STDIN``: at
    most :data:`CHAIN_SLICE` rows a chunk, and no more rows once a chunk holds :data:`CHUNK_BYTES` (a
    chunk is at most that plus one row). The compiled loop (:data:`chain_copy`) places and encodes the
    entries with no Python object a value; the entries it leaves (and all of them without it) are placed by
    :func:`iter_chain` and encoded by :func:`copy_tuple`. ``hashes`` and ``leaves`` receive each row's hash
    and Merkle leaf hash by the time its chunk is yielded; ``head`` becomes the new head once every chunk
    has been taken."""
    recorded_us = micros(recorded_at)
    prefix = header_prefix(stream)
    place = chain_copy
    seq, prev = head.seq, head.hash
    yield COPY_SIGNATURE
    i, n = 0, len(entries)
    while i < n:
        take = CHAIN_SLICE
        if place is not None:
            part = entries[i : i + CHAIN_SLICE]
            data, placed, hashed, prev = place(stream, prefix, part, seq, prev, recorded_us, CHUNK_BYTES)
            seq += len(placed)
            i += len(placed)
            hashes += placed
            leaves += hashed
            if data:
                yield data
            if len(placed) == len(part) or len(data) >= CHUNK_BYTES:
                continue
            take = 1  # the entry it left
        tuples: list[bytes] = []
        size = 0
        for row in iter_chain(stream, entries[i : i + take], Head(seq, prev), recorded_at, leaves):
            tuples.append(copy_tuple(row))
            hashes.append(row[17])
            seq, prev, size = row[1], row[17], size + len(tuples[-1])
            i += 1
            if size >= CHUNK_BYTES:
                break
        yield b"".join(tuples)
    yield COPY_TRAILER
    head.seq, head.hash = seq, prev
