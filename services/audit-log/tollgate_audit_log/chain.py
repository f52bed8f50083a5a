"""The single writer of one stream's hash chain, on its own PostgreSQL connection.

One writer per chain: the writer holds a session advisory lock named after its stream on the very
connection it writes with. A second replica blocks on the same lock (standby) until the first one's
connection ends; the lock and the writes share one connection, so a writer that lost its connection has
lost its lock too and cannot append another row (it must take the lock again and reload the head).

Appending a batch, in one transaction:

1. check that the chain head in the table is still the one this writer holds;
2. give the rows consecutive seqs and hashes from that head and ``COPY`` them in (binary), in one
   statement that takes each row as it is hashed: PostgreSQL inserts the rows already sent while the
   next ones are hashed;
3. redelivery (a crash between the write and the offset commit) makes the COPY hit the unique event id:
   the transaction is rolled back and the batch redone without the ids already recorded (and the next few
   batches look them up first). Seqs and hashes are only ever committed for rows really inserted, so the
   chain has no gaps.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import asyncpg

from tollgate_audit_log.canonical import COPY_COLUMNS, Entry, Head, Record, genesis_hash, iter_chain, link
from tollgate_audit_log.merkle import merkle_root
from tollgate_audit_log.signing import Signer, Statement, public_bytes

log = logging.getLogger(__name__)

InsertMode = Literal["copy", "executemany"]
YIELD_EVERY = 200  # rows hashed between two chances for other tasks to run
FILTER_BATCHES_AFTER_DUPLICATE = 20  # batches that look up known ids first after a redelivery was seen
_INSERT = (
    f"INSERT INTO audit_events ({', '.join(COPY_COLUMNS)}) "
    f"VALUES ({', '.join(f'${i + 1}' for i in range(len(COPY_COLUMNS)))})"
)


async def _yielding(rows: Iterator[Record]) -> AsyncIterator[Record]:
    """The rows, letting the event loop run other tasks every ``YIELD_EVERY`` rows (hashing a batch takes
    tens of milliseconds)."""
    for i, row in enumerate(rows, 1):
        yield row
        if i % YIELD_EVERY == 0:
            await asyncio.sleep(0)


class LockLost(RuntimeError):
    """The writer's connection (and with it the stream's lock) is gone: stop writing, take the lock again."""


class ChainMoved(RuntimeError):
    """The chain head in the table is not the one this writer holds: someone else wrote to the stream."""


class ChainDamaged(RuntimeError):
    """Rows about to be sealed by a checkpoint do not link up; refusing to sign them."""


def stream_lock_key(stream: str) -> int:
    return int.from_bytes(
        hashlib.sha256(f"tollgate-audit-stream:{stream}".encode()).digest()[:8], "big", signed=True
    )


async def register_key(db: asyncpg.Connection | asyncpg.Pool, signer: Signer) -> None:
    """Record the signer's public key (once) so checkpoints name a key the database knows."""
    await db.execute(
        "INSERT INTO audit_signing_keys (key_id, algorithm, public_key) VALUES ($1, 'ed25519', $2) "
        "ON CONFLICT (key_id) DO NOTHING",
        signer.key_id,
        public_bytes(signer.public_key),
    )


@dataclass(frozen=True, slots=True)
class Checkpoint:
    id: int
    statement: Statement
    signature: bytes


class ChainWriter:
    def __init__(self, conn: asyncpg.Connection, stream: str, *, insert_mode: InsertMode = "copy") -> None:
        self.conn = conn
        self.stream = stream
        self.insert_mode = insert_mode
        self.head_seq = 0
        self.head_hash = genesis_hash(stream)
        self.locked = False
        self._filter_batches = 0
        self._mutex = asyncio.Lock()  # appends and checkpoints share the connection

    async def acquire(self, *, wait: bool = True) -> bool:
        """Take the stream's lock (waiting while another writer holds it, unless ``wait`` is False)."""
        key = stream_lock_key(self.stream)
        if wait:
            await self.conn.execute("SELECT pg_advisory_lock($1)", key)
        elif not await self.conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
            return False
        self.locked = True
        await self.load_head()
        return True

    async def load_head(self) -> None:
        self.head_seq, self.head_hash = await self._stored_head()

    async def _stored_head(self) -> tuple[int, bytes]:
        """The chain's last row in the table: (seq, row hash), or (0, genesis hash) while it is empty."""
        row = await self.conn.fetchrow(
            "SELECT seq, row_hash FROM audit_events WHERE stream = $1 ORDER BY seq DESC LIMIT 1", self.stream
        )
        if row is None:
            return 0, genesis_hash(self.stream)
        return int(row["seq"]), bytes(row["row_hash"])

    def _check_connection(self) -> None:
        if not self.locked or self.conn.is_closed():
            self.locked = False
            raise LockLost(f"stream {self.stream}: writer connection closed")

    async def append(self, entries: list[Entry]) -> int:
        """Append the entries not recorded yet; returns how many rows were inserted."""
        unique: dict[str, Entry] = {}
        for entry in entries:
            unique.setdefault(entry.event_id, entry)
        if not unique:
            return 0
        batch = list(unique.values())
        async with self._mutex:
            self._check_connection()
            try:
                return await self._append_deduplicated(batch)
            except (OSError, asyncpg.InterfaceError, asyncpg.exceptions.ConnectionDoesNotExistError):
                self._check_connection()
                raise

    async def _append_deduplicated(self, entries: list[Entry]) -> int:
        """Optimistically insert without looking for known event ids first (the common case: nothing was
        redelivered); on a duplicate, redo the batch with the filter and keep filtering for a while."""
        if self._filter_batches > 0:
            self._filter_batches -= 1
            return await self._append(entries, filter_known=True)
        try:
            return await self._append(entries, filter_known=False)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != "audit_events_event_id_key":
                raise
            self._filter_batches = FILTER_BATCHES_AFTER_DUPLICATE
            return await self._append(entries, filter_known=True)

    async def _append(self, entries: list[Entry], *, filter_known: bool) -> int:
        conn = self.conn
        async with conn.transaction():
            if filter_known:
                known = await conn.fetch(
                    "SELECT event_id::text AS id FROM audit_events WHERE event_id = ANY($1::uuid[])",
                    [e.event_id for e in entries],
                )
                if known:
                    seen = {r["id"] for r in known}
                    entries = [e for e in entries if e.event_id not in seen]
                    if not entries:
                        return 0
            head_seq, head_hash = await self._stored_head()
            if (head_seq, head_hash) != (self.head_seq, self.head_hash):
                raise ChainMoved(
                    f"stream {self.stream}: head is seq {head_seq}, this writer holds {self.head_seq}"
                )
            seq, prev = await self._insert(entries, datetime.now(UTC))
        self.head_seq, self.head_hash = seq, prev
        return len(entries)

    async def _insert(self, entries: list[Entry], recorded_at: datetime) -> tuple[int, bytes]:
        """Hash and insert the rows in one statement that streams them: the rows are hashed as the
        statement takes them, and sent every few hundred kilobytes, so PostgreSQL inserts the first rows
        (two processes, two cores) while Python hashes the next ones. One statement per batch: a ``COPY``
        has a fixed cost on the server (its insert buffers) that smaller statements would pay again."""
        head = Head(self.head_seq, self.head_hash)
        rows = iter_chain(self.stream, entries, head, recorded_at)
        if self.insert_mode == "copy":
            await self.conn.copy_records_to_table(
                "audit_events", records=_yielding(rows), columns=COPY_COLUMNS
            )
        else:  # asyncpg encodes and sends the arguments as it takes them from the iterator, too
            await self.conn.executemany(_INSERT, rows)
        if head.seq != self.head_seq + len(entries):  # every row taken, so head is the last one
            raise RuntimeError(f"stream {self.stream}: the insert did not take every row")
        return head.seq, head.hash

    async def append_isolating(self, entries: list[Entry]) -> tuple[int, list[tuple[Entry, Exception]]]:
        """Append a batch; if PostgreSQL refuses its data, append one entry at a time and return the ones it
        refuses (for the DLQ) instead of failing the whole batch forever."""
        try:
            return await self.append(entries), []
        except asyncpg.DataError:
            log.warning("stream %s: batch refused by PostgreSQL, isolating the bad rows", self.stream)
        inserted = 0
        refused: list[tuple[Entry, Exception]] = []
        for entry in entries:
            try:
                inserted += await self.append([entry])
            except asyncpg.DataError as exc:
                refused.append((entry, exc))
        return inserted, refused

    async def register_key(self, signer: Signer) -> None:
        await register_key(self.conn, signer)

    async def last_checkpointed(self) -> int:
        value = await self.conn.fetchval(
            "SELECT max(last_seq) FROM audit_checkpoints WHERE stream = $1", self.stream
        )
        return int(value or 0)

    async def checkpoint(self, signer: Signer, *, max_rows: int) -> Checkpoint | None:
        """Seal the rows after the last checkpoint (at most ``max_rows``) with a signed Merkle root."""
        async with self._mutex:
            self._check_connection()
            conn = self.conn
            last = await self.last_checkpointed()
            if self.head_seq <= last:
                return None
            first, end = last + 1, min(self.head_seq, last + max_rows)
            rows = await conn.fetch(
                "SELECT seq, prev_hash, content_hash, row_hash FROM audit_events "
                "WHERE stream = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq",
                self.stream,
                first,
                end,
            )
            if first == 1:
                prev = genesis_hash(self.stream)
            else:
                prev = bytes(
                    await conn.fetchval(
                        "SELECT row_hash FROM audit_events WHERE stream = $1 AND seq = $2", self.stream, last
                    )
                    or b""
                )
            expected = first
            for r in rows:
                if (
                    r["seq"] != expected
                    or bytes(r["prev_hash"]) != prev
                    or link(prev, bytes(r["content_hash"])) != bytes(r["row_hash"])
                ):
                    raise ChainDamaged(f"stream {self.stream}: chain broken at seq {expected}; not signing")
                prev = bytes(r["row_hash"])
                expected += 1
            if expected != end + 1:
                raise ChainDamaged(f"stream {self.stream}: rows {expected}..{end} missing; not signing")
            statement = Statement(
                stream=self.stream,
                first_seq=first,
                last_seq=end,
                merkle_root=merkle_root([bytes(r["row_hash"]) for r in rows]),
                head_hash=prev,
                created_at=datetime.now(UTC),
                key_id=signer.key_id,
            )
            signature = signer.sign(statement)
            checkpoint_id = await conn.fetchval(
                "INSERT INTO audit_checkpoints (stream, first_seq, last_seq, merkle_root, head_hash, created_at, key_id, signature) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                statement.stream,
                statement.first_seq,
                statement.last_seq,
                statement.merkle_root,
                statement.head_hash,
                statement.created_at,
                statement.key_id,
                signature,
            )
            return Checkpoint(int(checkpoint_id), statement, signature)
