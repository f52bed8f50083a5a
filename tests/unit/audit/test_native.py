"""The compiled hot loops (tollgate_audit_native) against the Python reference. The verifier's
(accept_rows) writes every header byte for byte as orjson does (the hashes the writer computed), accepts
exactly the rows that hold, and stops, leaving the row to the Python loop, at everything else. The writer's
(chain_copy) places entries exactly as the Python loop does and writes them as the binary COPY tuples the
Python code writes for them (canonical.copy_tuple), and leaves it every entry it does not encode."""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tollgate_audit_native import CopyRows, accept_rows, chain_copy, parent_level

from tests.audit_support import inference_entry
from tests.unit.audit.test_chain import checkpoints
from tollgate_audit_log import canonical, compiled, merkle, verify
from tollgate_audit_log.canonical import (
    COPY_COLUMNS,
    Entry,
    chain_records,
    content_hash,
    genesis_hash,
    header_prefix,
    link,
    micros,
)
from tollgate_audit_log.compiled import COMPILED_ENV
from tollgate_audit_log.merkle import leaf_hash
from tollgate_audit_log.signing import Signer
from tollgate_audit_log.verify import ChainChecker

STREAM = "inference"
RECORDED = datetime(2026, 2, 1, 12, 0, 0, 123456, tzinfo=UTC)
PREFIX = header_prefix(STREAM)
END = 2**63 - 1

# Text that orjson escapes (every control character, quote, backslash) or writes as it is (DEL, non-ASCII,
# U+2028, astral code points), and values at the edges of what a column holds.
TEXTS = [
    "".join(map(chr, range(0x80))),
    '"quoted" \\ back\\slash \\u0041',
    "é ü ß — \u2028 \u2029 \U0001f600 \x7f",
    "",
    "x" * 10_000,
    "\n\r\t\b\f\x00\x1f",
]


def selected(record: tuple[Any, ...]) -> tuple[Any, ...]:
    """A COPY record as VERIFY_SQL returns it (timestamps as microseconds, no stream column)."""
    return (*record[1:7], micros(record[7]), micros(record[8]), *record[9:])


def chain(entries: list[Entry]) -> list[tuple[Any, ...]]:
    records, _, _ = chain_records(STREAM, entries, 0, genesis_hash(STREAM), RECORDED)
    return [selected(r) for r in records]


def tricky_entries() -> list[Entry]:
    out = []
    for i, text in enumerate(TEXTS):
        base = inference_entry(i)
        out.append(
            dataclasses.replace(
                base,
                topic=text or "t",
                event_type=text,
                request_id=text,
                entity_id=None if i % 2 else text,
                model=text[::-1],
                version=None,
                trace_id=text[:7],
                envelope=orjson.dumps({"payload": text, "i": i}).decode(),
            )
        )
    far = inference_entry(len(out), at=datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
    out.append(dataclasses.replace(far, partition=2**31 - 1, offset=2**63 - 1))
    out.append(dataclasses.replace(inference_entry(len(out)), partition=-(2**31), offset=-(2**63)))
    return out


def test_every_header_is_written_as_orjson_writes_it() -> None:
    rows = chain(tricky_entries())
    accepted, prev, leaves = accept_rows(PREFIX, rows, 1, genesis_hash(STREAM), END)
    assert accepted == len(rows)
    assert prev == rows[-1][16]
    assert leaves == [leaf_hash(r[16]) for r in rows]


def test_the_envelope_may_come_as_bytes_or_text() -> None:
    rows = chain([inference_entry(i) for i in range(20)])
    as_bytes = [(*r[:13], r[13].encode(), *r[14:]) for r in rows]
    assert accept_rows(PREFIX, as_bytes, 1, genesis_hash(STREAM), END) == accept_rows(
        PREFIX, rows, 1, genesis_hash(STREAM), END
    )


@pytest.fixture(scope="module")
def rows() -> list[tuple[Any, ...]]:
    return chain([inference_entry(i) for i in range(50)])


def replace(row: tuple[Any, ...], index: int, value: Any) -> tuple[Any, ...]:
    return (*row[:index], value, *row[index + 1 :])


STOPS = {
    "envelope byte": lambda r: replace(r, 13, r[13].replace("champion", "champioN")),
    "index column": lambda r: replace(r, 10, "another-model"),
    "null for a value": lambda r: replace(r, 8, None),
    "timestamp": lambda r: replace(r, 6, r[6] + 1),
    "content hash": lambda r: replace(r, 14, bytes(32)),
    "prev hash": lambda r: replace(r, 15, bytes(32)),
    "row hash": lambda r: replace(r, 16, bytes(32)),
    "short hash": lambda r: replace(r, 16, r[16][:31]),
    "hash as text": lambda r: replace(r, 16, r[16].hex()),
    "seq moved": lambda r: replace(r, 0, r[0] + 1),
    "a bool for an int": lambda r: replace(r, 3, True),
    "a float for an int": lambda r: replace(r, 4, float(r[4])),
    "an int past 64 bits": lambda r: replace(r, 4, 2**64),
    "bytes for text": lambda r: replace(r, 2, r[2].encode()),
    "a lone surrogate": lambda r: replace(r, 9, "\ud800"),
    "a column missing": lambda r: r[:16],
    "a column too many": lambda r: (*r, b""),
    "not a row": lambda r: 17,
}


@pytest.mark.parametrize("tamper", STOPS.values(), ids=STOPS.keys())
def test_it_stops_at_the_first_row_that_does_not_hold(rows: list[tuple[Any, ...]], tamper: Any) -> None:
    bad = list(rows)
    bad[30] = tamper(bad[30])
    accepted, prev, leaves = accept_rows(PREFIX, bad, 1, genesis_hash(STREAM), END)
    assert (accepted, prev, len(leaves)) == (30, rows[29][16], 30)


def test_it_stops_at_the_limit_and_starts_mid_chain(rows: list[tuple[Any, ...]]) -> None:
    assert accept_rows(PREFIX, rows, 1, genesis_hash(STREAM), 11)[0] == 10
    accepted, prev, _ = accept_rows(PREFIX, rows[20:], 21, rows[19][16], END)
    assert (accepted, prev) == (30, rows[-1][16])
    assert accept_rows(PREFIX, rows[20:], 21, rows[18][16], END)[0] == 0  # links elsewhere
    assert accept_rows(PREFIX, [], 1, genesis_hash(STREAM), END) == (0, genesis_hash(STREAM), [])


def test_a_bad_starting_hash_is_an_error(rows: list[tuple[Any, ...]]) -> None:
    with pytest.raises(ValueError, match="32-byte"):
        accept_rows(PREFIX, rows, 1, b"short", END)


def test_a_row_it_leaves_is_checked_by_the_python_loop() -> None:
    """orjson writes integers up to 2**64 - 1; the compiled loop stops at one past 2**63 - 1 and the
    Python loop accepts that row: the verdict is the reference's."""
    entries = [inference_entry(i) for i in range(10)]
    entries[4] = dataclasses.replace(entries[4], offset=2**63)
    rows = chain(entries)
    assert accept_rows(PREFIX, rows, 1, genesis_hash(STREAM), END)[0] == 4
    checker = ChainChecker(STREAM)
    assert checker.feed(rows)
    checker.finish()
    assert checker.problem is None and checker.rows == 10


def test_the_compiled_loops_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    names = {
        "accept_rows": accept_rows,
        "CopyRows": CopyRows,
        "chain_copy": chain_copy,
        "parent_level": parent_level,
    }
    assert (
        verify.accept_rows,
        verify.copy_rows,
        canonical.chain_copy,
        merkle.parent_level,
    ) == tuple(names.values())
    for name, loop in names.items():
        assert compiled.function(name) is loop
    monkeypatch.setenv(COMPILED_ENV, "0")
    for name in names:
        assert compiled.function(name) is None


def _outcome(rows: list[tuple[Any, ...]], cps: list[Any], signer: Any, chunk: int) -> tuple[Any, ...]:
    checker = ChainChecker(STREAM, cps, {signer.key_id: signer.public_key})
    for i in range(0, len(rows), chunk):
        if not checker.feed(rows[i : i + chunk]):
            break
    checker.finish()
    return checker.problem, checker.rows, checker.checkpoints_verified, checker.prev, checker.done


def _rehashed(rows: list[tuple[Any, ...]], at: int) -> list[tuple[Any, ...]]:
    out, prev = list(rows[: at - 1]), rows[at - 2][16]
    for r in rows[at - 1 :]:
        envelope = r[13].replace("champion", "shadow") if r[0] == at else r[13]
        content = content_hash(STREAM, *r[:13], envelope)
        out.append((*r[:13], envelope, content, prev, link(prev, content)))
        prev = out[-1][16]
    return out


CHANGES = {
    "intact": lambda rows: rows,
    "row changed": lambda rows: [*rows[:70], replace(rows[70], 10, "m"), *rows[71:]],
    "row deleted": lambda rows: rows[:33] + rows[34:],
    "rows swapped": lambda rows: [
        *rows[:40],
        replace(rows[45], 0, 41),
        *rows[41:45],
        replace(rows[40], 0, 46),
        *rows[46:],
    ],
    "tail truncated": lambda rows: rows[:-7],
    "re-hashed after signing": lambda rows: _rehashed(rows, 83),
    "row hash rewritten": lambda rows: [*rows[:99], replace(rows[99], 16, bytes(32)), *rows[100:]],
}


@pytest.mark.parametrize("chunk", [1, 7, 64, 500])
@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_the_verdict_is_the_same_with_or_without_the_compiled_loop(
    change: Any, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = chain([inference_entry(i) for i in range(150)])
    signer = Signer(Ed25519PrivateKey.generate())
    cps = checkpoints(rows, 25, signer)
    changed = change(rows)
    compiled = _outcome(changed, cps, signer, chunk)
    monkeypatch.setattr(verify, "accept_rows", None)
    reference = _outcome(changed, cps, signer, chunk)
    assert compiled == reference


def _placed(entries: list[Entry]) -> tuple[Any, ...]:
    """The Python loop's rows, leaves and head (the reference)."""
    head = canonical.Head(5, bytes(range(32)))
    leaves: list[bytes] = []
    rows = list(canonical.iter_chain(STREAM, entries, head, RECORDED, leaves))
    return rows, leaves, head.seq, head.hash


def writer_entries() -> list[Entry]:
    """Entries at the edges of what the header and a COPY hold, and some the compiled loop leaves to the
    Python code: a bool partition, a time not in UTC, an event id in capitals."""
    out = [*tricky_entries(), *(inference_entry(i) for i in range(450))]
    moments = [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2024, 2, 29, 12, 0, 0, 1, tzinfo=UTC),
        datetime(2100, 3, 1, tzinfo=UTC),
        datetime(1600, 2, 29, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(2026, 6, 1, 2, 0, tzinfo=timezone(timedelta(hours=2))),  # not UTC: the Python loop's
    ]
    for k, moment in enumerate(moments):
        out[20 + 37 * k] = dataclasses.replace(out[20 + 37 * k], occurred_at=moment)
    out[300] = dataclasses.replace(out[300], partition=True)  # a bool: orjson writes true
    out[77] = dataclasses.replace(out[77], event_id=out[77].event_id.upper())
    return out


def _copied(entries: list[Entry], on: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, ...]:
    """What the writer's binary COPY sends with the compiled loop (``on``) or the Python loop alone, the
    row and leaf hashes and the head."""
    monkeypatch.setattr(canonical, "chain_copy", chain_copy if on else None)
    head = canonical.Head(5, bytes(range(32)))
    hashes: list[bytes] = []
    leaves: list[bytes] = []
    data = b"".join(canonical.iter_copy(STREAM, entries, head, RECORDED, hashes, leaves))
    return data, hashes, leaves, head.seq, head.hash


def test_the_writer_writes_copy_tuples_as_the_reference_encodes_the_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entries = writer_entries()
    rows, leaves, seq, prev = _placed(entries)
    data = canonical.COPY_SIGNATURE + b"".join(map(canonical.copy_tuple, rows)) + canonical.COPY_TRAILER
    reference = data, [r[17] for r in rows], leaves, seq, prev
    assert _copied(entries, True, monkeypatch) == reference
    assert _copied(entries, False, monkeypatch) == reference
    assert seq == 5 + len(entries) and leaves == [leaf_hash(r[17]) for r in rows]


def test_a_naive_timestamp_fails_as_in_the_python_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    entries = [dataclasses.replace(inference_entry(0), occurred_at=datetime(2026, 1, 1))]
    with pytest.raises(TypeError):
        _placed(entries)
    for on in (True, False):
        with pytest.raises(TypeError):
            _copied(entries, on, monkeypatch)


def test_a_copy_tuple_holds_each_column_in_its_binary_form() -> None:
    """canonical.copy_tuple, field by field: what asyncpg's codecs write for these column types."""
    entry = dataclasses.replace(inference_entry(3), entity_id=None, version="é")
    (row,), _, _ = chain_records(STREAM, [entry], 0, genesis_hash(STREAM), RECORDED)
    data = canonical.copy_tuple(row)
    (count,) = struct.unpack_from("!h", data)
    fields, at = [], 2
    for _ in range(count):
        (size,) = struct.unpack_from("!i", data, at)
        at += 4
        fields.append(None if size < 0 else data[at : at + size])
        at += max(size, 0)
    assert at == len(data) and count == len(COPY_COLUMNS)
    by_name = dict(zip(COPY_COLUMNS, fields, strict=True))
    assert by_name["stream"] == b"inference" and by_name["seq"] == struct.pack("!q", 1)
    assert by_name["event_id"] == bytes.fromhex(entry.event_id.replace("-", ""))
    assert by_name["kafka_partition"] == struct.pack("!i", entry.partition)
    assert by_name["kafka_offset"] == struct.pack("!q", entry.offset)
    assert by_name["occurred_at"] == struct.pack("!q", micros(entry.occurred_at) - PG_EPOCH_US)
    assert by_name["recorded_at"] == struct.pack("!q", micros(RECORDED) - PG_EPOCH_US)
    assert by_name["entity_id"] is None and by_name["version"] == "é".encode()
    assert by_name["envelope"] == entry.envelope.encode()
    assert (by_name["content_hash"], by_name["prev_hash"], by_name["row_hash"]) == row[15:18]


UNTAKEN = {
    "event id in capitals": lambda e: dataclasses.replace(e, event_id=e.event_id.upper()),
    "event id without hyphens": lambda e: dataclasses.replace(e, event_id=e.event_id.replace("-", "")),
    "event id not a UUID": lambda e: dataclasses.replace(e, event_id="g" * 8 + e.event_id[8:]),
    "partition past 32 bits": lambda e: dataclasses.replace(e, partition=2**31),
    "partition a bool": lambda e: dataclasses.replace(e, partition=True),
    "offset past 64 bits": lambda e: dataclasses.replace(e, offset=2**63),  # orjson writes it
    "topic None": lambda e: dataclasses.replace(e, topic=None),
    "event type None": lambda e: dataclasses.replace(e, event_type=None),
    "model a float": lambda e: dataclasses.replace(e, model=1.5),
    "time not in UTC": lambda e: dataclasses.replace(
        e, occurred_at=e.occurred_at.astimezone(timezone(timedelta(hours=-5)))
    ),
    "envelope bytes": lambda e: dataclasses.replace(e, envelope=e.envelope.encode()),
    "lone surrogate": lambda e: dataclasses.replace(e, request_id="\ud800"),
}


@pytest.mark.parametrize("change", UNTAKEN.values(), ids=UNTAKEN.keys())
def test_the_writer_loop_stops_before_an_entry_it_does_not_encode(change: Any) -> None:
    entries = [inference_entry(i) for i in range(5)]
    entries[2] = change(entries[2])
    data, hashes, leaves, prev = chain_copy(
        STREAM, PREFIX, entries, 0, genesis_hash(STREAM), micros(RECORDED), canonical.CHUNK_BYTES
    )
    rows, _, _ = chain_records(STREAM, entries[:2], 0, genesis_hash(STREAM), RECORDED)
    assert data == b"".join(map(canonical.copy_tuple, rows))
    assert (hashes, leaves, prev) == ([r[17] for r in rows], [leaf_hash(r[17]) for r in rows], rows[-1][17])
    with pytest.raises(ValueError, match="32-byte"):
        chain_copy(STREAM, PREFIX, entries, 0, b"", 0, canonical.CHUNK_BYTES)


@pytest.mark.parametrize("on", [True, False], ids=["compiled", "python"])
def test_a_chunk_of_the_copy_takes_no_more_rows_once_it_holds_chunk_bytes(
    on: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large envelopes: each chunk stops at the row that brings it to CHUNK_BYTES (at most that plus one
    row); the stream is still the reference's, byte for byte."""
    big = "y" * 300_000
    entries = [
        dataclasses.replace(inference_entry(i), envelope=f'{{"i":{i},"pad":"{big}"}}') for i in range(11)
    ]
    entries[5] = dataclasses.replace(entries[5], event_id=entries[5].event_id.upper())  # the Python loop's
    entries += [inference_entry(i) for i in range(11, 450)]
    monkeypatch.setattr(canonical, "chain_copy", chain_copy if on else None)
    hashes: list[bytes] = []
    leaves: list[bytes] = []
    chunks = list(
        canonical.iter_copy(
            STREAM, entries, canonical.Head(0, genesis_hash(STREAM)), RECORDED, hashes, leaves
        )
    )
    rows, _, _ = chain_records(STREAM, entries, 0, genesis_hash(STREAM), RECORDED)
    tuples = [canonical.copy_tuple(r) for r in rows]
    assert b"".join(chunks) == canonical.COPY_SIGNATURE + b"".join(tuples) + canonical.COPY_TRAILER
    assert hashes == [r[17] for r in rows] and len(leaves) == len(rows)
    largest = max(map(len, tuples))
    body = chunks[1:-1]
    assert all(len(chunk) < canonical.CHUNK_BYTES + largest for chunk in body)
    assert len(body) >= 5  # four chunks for the large envelopes at the least, then the rest


PG_EPOCH_US = 946_684_800_000_000


def copy_stream(rows: list[tuple[Any, ...]]) -> bytes:
    """Rows as ``COPY (VERIFY_SQL) TO STDOUT (FORMAT binary)`` sends them (the columns' binary forms)."""
    out = [b"PGCOPY\n\xff\r\n\x00", struct.pack(">ii", 0, 0)]
    widths = {0: ">q", 3: ">i", 4: ">q", 6: ">q", 7: ">q"}
    for row in rows:
        out.append(struct.pack(">h", len(row)))
        for index, value in enumerate(row):
            if value is None:
                out.append(struct.pack(">i", -1))
                continue
            if index in widths:
                data = struct.pack(widths[index], value - (PG_EPOCH_US if index in (6, 7) else 0))
            else:
                data = value.encode() if isinstance(value, str) else value
            out.append(struct.pack(">i", len(data)) + data)
    out.append(struct.pack(">h", -1))
    return b"".join(out)


def copy_check(stream: bytes, chunk: int, expected: int = 1, prev: bytes | None = None) -> Any:
    rows = CopyRows(PREFIX, expected, prev or genesis_hash(STREAM), END)
    first, leaves, heads = None, [], []
    for i in range(0, len(stream), chunk):
        rows.feed(bytearray(stream[i : i + chunk]))  # asyncpg hands over bytearrays
        start, more_leaves, more_heads = rows.take()
        first = start if first is None else first
        leaves += more_leaves
        heads += more_heads
    return rows, first, leaves, heads


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 30])
def test_the_copy_loop_accepts_what_accept_rows_accepts(chunk: int) -> None:
    rows = chain(tricky_entries() + [inference_entry(i) for i in range(40)])
    checked, first, leaves, heads = copy_check(copy_stream(rows), chunk)
    assert checked.complete and checked.expected == len(rows) + 1 and checked.prev == rows[-1][16]
    assert first == 1 and heads == [r[16] for r in rows]
    assert leaves == accept_rows(PREFIX, rows, 1, genesis_hash(STREAM), END)[2]


# Changes a COPY of these columns cannot carry: values of other types have no binary form in them (a
# column of another type is read by the cursor), and bytes for text are the same bytes.
NOT_IN_COPY = ("a float for an int", "an int past 64 bits", "a lone surrogate", "not a row", "bytes for text")
COPY_STOPS = {name: tamper for name, tamper in STOPS.items() if name not in NOT_IN_COPY}


@pytest.mark.parametrize("tamper", COPY_STOPS.values(), ids=COPY_STOPS.keys())
def test_the_copy_loop_stops_where_accept_rows_stops(rows: list[tuple[Any, ...]], tamper: Any) -> None:
    bad = list(rows)
    bad[30] = tamper(bad[30])
    checked, _, leaves, _ = copy_check(copy_stream(bad), 4096)
    assert (checked.complete, checked.expected, checked.prev, len(leaves)) == (False, 31, rows[29][16], 30)


def test_the_copy_loop_starts_mid_chain_and_ignores_what_follows_a_stop(rows: list[tuple[Any, ...]]) -> None:
    checked, first, leaves, _ = copy_check(copy_stream(rows[20:]), 100, 21, rows[19][16])
    assert (checked.complete, first, len(leaves)) == (True, 21, 30)
    checked = CopyRows(PREFIX, 1, genesis_hash(STREAM), END)
    checked.feed(copy_stream(rows)[:5000])
    checked.stop()
    checked.feed(copy_stream(rows)[5000:])
    assert not checked.complete
    with pytest.raises(ValueError, match="binary COPY"):
        CopyRows(PREFIX, 1, genesis_hash(STREAM), END).feed(b"COPY\n" * 10)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 64, 65, 1001])
def test_a_tree_level_is_hashed_as_the_python_loop_hashes_it(
    size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodes = [hashlib.sha256(b"%d" % i).digest() for i in range(size)]
    compiled_level = parent_level(nodes)
    monkeypatch.setattr(merkle, "parent_level", None)
    assert compiled_level == merkle._parent_level(nodes)
    with pytest.raises(TypeError):
        parent_level(["text", "nodes"])
