"""The chain writer on the real PostgreSQL: redelivery adds no row and leaves no gap, one writer per
stream, a writer that lost its lock or whose chain moved stops, refused rows are isolated."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, NamedTuple

import asyncpg
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.audit_support import compiled_or_python, fresh_database, inference_entry
from tollgate_audit_log import canonical
from tollgate_audit_log.app import prepare_database
from tollgate_audit_log.canonical import COPY_COLUMNS
from tollgate_audit_log.chain import ChainMoved, ChainTampered, ChainWriter, LockLost
from tollgate_audit_log.settings import AuditLogSettings
from tollgate_audit_log.signing import Signer
from tollgate_audit_log.verify import verify_database


@pytest.fixture(scope="module")
async def database_url() -> AsyncIterator[str]:
    """This module's own database (it counts and verifies whole tables)."""
    async with fresh_database("chain") as dsn:
        yield dsn


@pytest.fixture(scope="module")
async def dsn(database_url: str) -> str:
    await prepare_database(AuditLogSettings(database_url=database_url))
    return database_url


@pytest.fixture
async def conns(dsn: str) -> AsyncIterator[list[asyncpg.Connection]]:
    opened = [await asyncpg.connect(dsn) for _ in range(2)]
    yield opened
    for conn in opened:
        await conn.close()


SIGNER = Signer(Ed25519PrivateKey.generate())


async def verified(conn: asyncpg.Connection, stream: str) -> int:
    report = await verify_database(conn, streams=[stream], trusted={SIGNER.key_id: SIGNER.public_key})
    assert report.ok, report.summary()
    return report.rows


@pytest.mark.parametrize("mode", ["copy", "executemany"])
async def test_redelivery_adds_no_row_and_leaves_no_gap(conns: list[asyncpg.Connection], mode: str) -> None:
    stream = f"redelivery-{mode}"
    writer = ChainWriter(conns[0], stream, insert_mode=mode)  # type: ignore[arg-type]
    await writer.acquire()
    batch_a = [inference_entry(i) for i in range(10)]
    batch_b = [inference_entry(i) for i in range(10, 15)]
    assert await writer.append(batch_a) == 10
    assert await writer.append(batch_a[5:] + batch_b + batch_b[:2]) == 5  # redelivered, new, repeated
    assert await writer.append(batch_a) == 0
    assert writer.head_seq == 15
    seqs = [
        r["seq"]
        for r in await conns[1].fetch("SELECT seq FROM audit_events WHERE stream = $1 ORDER BY seq", stream)
    ]
    assert seqs == list(range(1, 16))
    assert await verified(conns[1], stream) == 15


async def test_one_writer_per_stream(conns: list[asyncpg.Connection], dsn: str) -> None:
    first = ChainWriter(conns[0], "single-writer")
    await first.acquire()
    await first.append([inference_entry(i) for i in range(3)])
    second = ChainWriter(conns[1], "single-writer")
    assert not await second.acquire(wait=False)  # standby while the first holds the stream
    assert await ChainWriter(conns[1], "another-stream").acquire(wait=False)  # other streams are free
    await conns[0].close()  # the first writer's session ends: its lock goes with it
    assert await second.acquire(wait=False)
    assert second.head_seq == 3 and second.head_hash == first.head_hash
    with pytest.raises(LockLost):
        await first.append([inference_entry(99)])
    conns[0] = await asyncpg.connect(dsn)


async def test_writer_stops_when_the_chain_moved_under_it(conns: list[asyncpg.Connection]) -> None:
    holder = ChainWriter(conns[0], "moved")
    await holder.acquire()
    await holder.append([inference_entry(1)])
    rogue = ChainWriter(conns[1], "moved")  # a writer that ignores the lock (a bug, a second deployment)
    await rogue.load_head()
    rogue.locked = True
    await rogue.append([inference_entry(2)])
    with pytest.raises(ChainTampered) as raised:
        await holder.append([inference_entry(3)])
    assert isinstance(raised.value, ChainMoved) and raised.value.kind == "foreign_rows"
    assert (raised.value.expected[0], raised.value.found[0]) == (1, 2)
    with pytest.raises(ChainTampered):  # and it signs nothing over the rows it did not write
        await holder.checkpoint(SIGNER, max_rows=100)
    assert await conns[1].fetchval("SELECT count(*) FROM audit_checkpoints WHERE stream = 'moved'") == 0
    assert await verified(conns[1], "moved") == 2


async def test_writer_signs_what_it_wrote_not_what_the_table_says(conns: list[asyncpg.Connection]) -> None:
    """A row of the unsealed tail rewritten and the chain re-hashed after it by someone who can bypass the
    triggers: the writer's checkpoint refuses, instead of signing the rewritten rows."""
    writer = ChainWriter(conns[0], "rewritten-tail")
    await writer.acquire()
    await writer.append([inference_entry(i) for i in range(20)])
    last = await conns[1].fetchval(
        "SELECT row_hash FROM audit_events WHERE stream = 'rewritten-tail' AND seq = 20"
    )
    async with conns[1].transaction():
        await conns[1].execute("ALTER TABLE audit_events DISABLE TRIGGER USER")
        await conns[1].execute(
            "UPDATE audit_events SET row_hash = set_byte(row_hash, 0, get_byte(row_hash, 0) # 1) "
            "WHERE stream = 'rewritten-tail' AND seq = 20"
        )
        await conns[1].execute("ALTER TABLE audit_events ENABLE TRIGGER USER")
    assert bytes(last) == writer.head_hash
    with pytest.raises(ChainTampered) as raised:
        await writer.checkpoint(SIGNER, max_rows=100)
    assert raised.value.kind == "head_rewritten" and raised.value.found[0] == 20


@pytest.fixture(params=["compiled", "python"])
def loops(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The writer's COPY tuples written by the compiled loop, or by the Python loop alone."""
    return compiled_or_python(request, monkeypatch, canonical, "chain_copy")


async def test_rows_postgres_refuses_are_isolated(conns: list[asyncpg.Connection], loops: str) -> None:
    writer = ChainWriter(conns[0], f"isolating-{loops}")
    await writer.acquire()
    bad = dataclasses.replace(inference_entry(1), entity_id="nul\x00byte")
    inserted, refused = await writer.append_isolating([inference_entry(0), bad, inference_entry(2)])
    assert inserted == 2 and [entry.event_id for entry, _ in refused] == [bad.event_id]
    assert isinstance(refused[0][1], asyncpg.DataError)
    assert await verified(conns[1], f"isolating-{loops}") == 2


STORED = ", ".join(COPY_COLUMNS[2:8] + COPY_COLUMNS[9:15])


async def test_the_rows_stored_hold_the_entries_values(conns: list[asyncpg.Connection], loops: str) -> None:
    """Every column as PostgreSQL stored it, whichever loop wrote the COPY: text at its edges, NULLs,
    32/64-bit edges, timestamps far from now and not in UTC; the chain verifies."""
    stream = f"stored-{loops}"
    entries = [inference_entry(i) for i in range(600)]
    odd = ['"quoted" \\ back\\slash', "é ü ß — \u2028 \U0001f600 \x7f", "", "x" * 10_000, "\n\r\t\x1f"]
    for i, text in enumerate(odd):
        entries[10 + i] = dataclasses.replace(
            entries[10 + i], topic=text or "t", event_type=text, request_id=text, entity_id=None, model=text
        )
    entries[20] = dataclasses.replace(entries[20], partition=2**31 - 1, offset=2**63 - 1)
    entries[21] = dataclasses.replace(entries[21], partition=-(2**31), offset=-(2**63))
    for i, moment in enumerate([
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
        datetime(2026, 6, 1, 2, 0, tzinfo=timezone(timedelta(hours=2))),  # not UTC: the Python loop's
    ]):  # fmt: skip
        entries[30 + i] = dataclasses.replace(entries[30 + i], occurred_at=moment)
    writer = ChainWriter(conns[0], stream)
    await writer.acquire()
    assert await writer.append(entries[:250]) == 250
    assert await writer.append(entries[250:]) == 350
    stored = await conns[1].fetch(
        f"SELECT seq, {STORED} FROM audit_events WHERE stream = $1 ORDER BY seq", stream
    )
    assert [r["seq"] for r in stored] == list(range(1, 601))
    expected = [
        (e.event_id, e.topic, e.partition, e.offset, e.event_type, e.occurred_at, e.request_id, e.entity_id,
         e.model, e.version, e.trace_id, e.envelope)
        for e in entries
    ]  # fmt: skip
    assert [(str(r[1]), *r[2:]) for r in stored] == expected
    assert await verified(conns[1], stream) == 600


async def test_a_consumed_batch_is_recorded_in_parts_with_its_poison_set_aside(
    conns: list[asyncpg.Connection],
) -> None:
    from tests.audit_support import envelope
    from tollgate_audit_log.batch import PART, record_batch
    from tollgate_audit_log.streams import STREAMS, EntryBuilder

    class Msg(NamedTuple):
        value: bytes
        topic: str
        partition: int
        offset: int
        headers: Any = None

    spec = next(s for s in STREAMS if s.name == "lifecycle")
    docs = [
        envelope("promoted", "models.lifecycle.v1", {"model": "m", "version": str(i)})
        for i in range(PART + 500)
    ]
    messages = [Msg(orjson.dumps(d), "t", 0, i) for i, d in enumerate(docs)]
    messages[700] = Msg(b"{broken", "t", 0, 700)
    messages[1200] = Msg(orjson.dumps(docs[1200])[:-1] + b',"note":"nul\\u0000"}', "t", 0, 1200)
    writer = ChainWriter(conns[0], "lifecycle")
    await writer.acquire()
    outcome = await record_batch(writer, EntryBuilder(spec), messages)
    assert outcome.inserted == PART + 498 and outcome.duplicates == 0
    assert sorted(m.offset for m, _ in outcome.rejected) == [700, 1200]
    again = await record_batch(writer, EntryBuilder(spec), messages)  # the whole batch redelivered
    assert (again.inserted, again.duplicates) == (0, PART + 498)
    assert await verified(conns[1], "lifecycle") == PART + 498


async def test_writer_names_its_unsealed_rows_removed(conns: list[asyncpg.Connection]) -> None:
    """The unsealed tail (rows no signed head covers yet) deleted by the owner while the writer runs: the
    next append is refused as tampering with the exact range that went missing."""
    writer = ChainWriter(conns[0], "tail-removed")
    await writer.acquire()
    await writer.append([inference_entry(i) for i in range(20)])
    await writer.register_key(SIGNER)
    assert await writer.checkpoint(SIGNER, max_rows=10) is not None  # seq 1..10 signed, 11..20 not yet
    async with conns[1].transaction():
        await conns[1].execute("ALTER TABLE audit_events DISABLE TRIGGER USER")
        await conns[1].execute("DELETE FROM audit_events WHERE stream = 'tail-removed' AND seq > 14")
        await conns[1].execute("ALTER TABLE audit_events ENABLE TRIGGER USER")
    with pytest.raises(ChainTampered) as raised:
        await writer.append([inference_entry(99)])
    assert raised.value.kind == "rows_removed" and "rows 15..20" in raised.value.detail


@pytest.mark.parametrize("mode", ["copy", "executemany"])
async def test_tree_heads_from_the_leaf_hashes_kept_in_memory_are_the_tables(
    conns: list[asyncpg.Connection], dsn: str, mode: str
) -> None:
    """The writer keeps the leaf hash of every row it writes for the next checkpoint (hashed while the
    rows stream to PostgreSQL); after a takeover it hashes the unsealed rows it read back instead. Either
    way, every signed tree head (range root, tree root, consistency proof) is the one computed from the
    rows in the table: checkpoints over part of the unsealed rows, after a takeover with an unsealed tail,
    and a tail half read back and half written."""
    from tollgate_audit_log.merkle import merkle_root

    stream = f"leaves-{mode}"
    ids = iter(range(10_000))
    first = ChainWriter(conns[0], stream, insert_mode=mode)  # type: ignore[arg-type]
    await first.acquire()
    await first.register_key(SIGNER)
    for size in (7, 13, 1, 30):
        await first.append([inference_entry(next(ids)) for _ in range(size)])
    assert len(first.unsealed_tree) == len(first.unsealed) == 51
    await first.checkpoint(SIGNER, max_rows=20)  # part of the unsealed rows
    await first.checkpoint(SIGNER, max_rows=25)
    await first.append([inference_entry(next(ids)) for _ in range(9)])
    await first.conn.close()  # lock released with 15 rows unsealed

    taker = await asyncpg.connect(dsn)
    try:
        second = ChainWriter(taker, stream, insert_mode=mode)  # type: ignore[arg-type]
        await second.acquire()
        assert (
            len(second.unsealed) == 15 and len(second.unsealed_tree) == 0
        )  # read back: hashed at checkpoint
        await second.append([inference_entry(next(ids)) for _ in range(11)])
        await second.checkpoint(SIGNER, max_rows=10)
        await second.append([inference_entry(next(ids)) for _ in range(4)])
        await second.checkpoint(SIGNER, max_rows=100)
        await second.append([inference_entry(next(ids)) for _ in range(6)])
        assert len(second.unsealed_tree) == len(second.unsealed) == 6  # kept again once all were sealed
        await second.checkpoint(SIGNER, max_rows=100)
        rows = [
            bytes(r["row_hash"])
            for r in await taker.fetch(
                "SELECT row_hash FROM audit_events WHERE stream = $1 ORDER BY seq", stream
            )
        ]
        heads = await taker.fetch(
            "SELECT first_seq, last_seq, merkle_root, tree_root FROM audit_checkpoints WHERE stream = $1 "
            "ORDER BY last_seq",
            stream,
        )
        assert [(h["first_seq"], h["last_seq"]) for h in heads] == [
            (1, 20), (21, 45), (46, 55), (56, 75), (76, 81),
        ]  # fmt: skip
        for h in heads:
            assert bytes(h["merkle_root"]) == merkle_root(rows[h["first_seq"] - 1 : h["last_seq"]])
            assert bytes(h["tree_root"]) == merkle_root(rows[: h["last_seq"]])
        assert await verified(taker, stream) == 81  # consistency proofs and signatures too
    finally:
        await taker.close()
