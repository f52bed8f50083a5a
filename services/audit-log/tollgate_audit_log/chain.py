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
from typing import Any, Literal, Protocol

import asyncpg

from tollgate_audit_log.canonical import (
    COPY_COLUMNS,
    Entry,
    Head,
    Record,
    genesis_hash,
    iter_chain,
    iter_copy,
    link,
)
from tollgate_audit_log.merkle import (
    BLOCK_HEIGHT,
    Frontier,
    RangeLevels,
    frontier_consistency_proof_of_leaves,
    leaf_hashes,
)
from tollgate_audit_log.signing import Signer, Statement, public_bytes

log = logging.getLogger(__name__)

# "copy": the service's (binary COPY tuples, :func:`iter_copy`); "executemany": asyncpg's pipelined
# INSERTs, kept for comparison (its codec writes the edges of ``datetime`` as PostgreSQL's infinities).
InsertMode = Literal["copy", "executemany"]
YIELD_EVERY = 200  # rows hashed between two chances for other tasks to run (and to hash their tree levels)
FILTER_BATCHES_AFTER_DUPLICATE = 20  # batches that look up known ids first after a redelivery was seen
_INSERT = (
    f"INSERT INTO audit_events ({', '.join(COPY_COLUMNS)}) "
    f"VALUES ({', '.join(f'${i + 1}' for i in range(len(COPY_COLUMNS)))})"
)


def _collecting(
    rows: Iterator[Record], into: list[bytes], tree: RangeLevels | None, leaves: list[bytes]
) -> Iterator[Record]:
    """The rows, keeping each one's row hash (the writer signs from what it wrote) and, in ``tree``, their
    Merkle leaf hashes (``leaves``: filled by :func:`iter_chain` as it yields the rows) and the lower tree
    levels over them, hashed every ``YIELD_EVERY`` rows (a list comprehension a level) while PostgreSQL
    inserts the rows already sent, rather than at the checkpoint, while it waits. For ``executemany``, the
    insert mode kept for comparison (the COPY sends binary tuples: :func:`_sending`)."""
    taken = i = 0  # leaves[:taken] are in the tree; i rows yielded
    for i, row in enumerate(rows, 1):
        into.append(row[17])
        yield row
        if tree is not None and i % YIELD_EVERY == 0:
            tree.extend(leaves[taken:i])
            taken = i
    if tree is not None:
        tree.extend(leaves[taken:i])


async def _sending(
    chunks: Iterator[bytes], tree: RangeLevels | None, leaves: list[bytes]
) -> AsyncIterator[bytes]:
    """The chunks of a binary COPY (:func:`iter_copy`); once a chunk is sent, its rows' leaves go
    to ``tree`` (the lower tree levels are hashed while PostgreSQL inserts the rows) and the event loop
    runs other tasks."""
    taken = 0
    for chunk in chunks:
        yield chunk
        if tree is not None:
            tree.extend(leaves[taken:])
            taken = len(leaves)
        await asyncio.sleep(0)


class LockLost(RuntimeError):
    """The writer's connection (and with it the stream's lock) is gone: stop writing, take the lock again."""


class ChainMoved(RuntimeError):
    """The chain head in the table is not the one this writer holds: someone else wrote to the stream."""


class ChainTampered(ChainMoved):
    """The chain in the table moved in a way this writer did not make: rows it did not write were appended,
    or rows it wrote were changed or removed. Tampering, not a lost lock: the stream is damaged."""

    def __init__(
        self,
        stream: str,
        kind: str,
        expected: tuple[int, bytes],
        found: tuple[int, bytes],
        detail: str,
    ) -> None:
        super().__init__(f"stream {stream}: {detail}")
        self.stream = stream
        self.kind = kind
        self.expected = expected
        self.found = found
        self.detail = detail


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
    consistency: tuple[bytes, ...] = ()  # RFC 6962 proof from the previous tree head


class HeadJournal(Protocol):
    """Where the writer notes, outside the database, each head before committing the batch that makes it
    (:class:`tollgate_audit_log.publish.WitnessDir`): rows after the last checkpoint that it does not name
    were written by someone else, even while no writer ran."""

    def intend(self, stream: str, seq: int, row_hash: bytes) -> None: ...

    def sealed(self, stream: str, seq: int, row_hash: bytes) -> None: ...

    def unsealed_heads(self, stream: str) -> list[tuple[int, bytes]] | None: ...


class ChainWriter:
    def __init__(
        self,
        conn: asyncpg.Connection,
        stream: str,
        *,
        insert_mode: InsertMode = "copy",
        journal: HeadJournal | None = None,
    ) -> None:
        self.conn = conn
        self.stream = stream
        self.insert_mode = insert_mode
        self.journal = journal
        self.head_seq = 0
        self.head_hash = genesis_hash(stream)
        self.locked = False
        # What this writer signs next: the tree at the last checkpoint and the row hashes after it, as the
        # writer wrote them (or, after taking over, as it found them linked to the last checkpoint).
        self.sealed_seq = 0
        self.frontier = Frontier()
        self.last_statement: Statement | None = None
        self.unsealed: list[bytes] = []
        # The Merkle leaf hash of each row of ``unsealed`` (RFC 6962 ``leaf_hash``) and the next checkpoint's
        # range tree up to its block roots, when the writer hashed them as it wrote the rows; empty when the
        # rows were read back from the table (then the checkpoint hashes them itself).
        self.unsealed_tree = RangeLevels(BLOCK_HEIGHT)
        self._filter_batches = 0
        self._mutex = asyncio.Lock()  # appends and checkpoints share the connection
        self.mutex = self._mutex  # for callers with other statements to run on the writer's connection

    async def acquire(self, *, wait: bool = True) -> bool:
        """Take the stream's lock (waiting while another writer holds it, unless ``wait`` is False)."""
        key = stream_lock_key(self.stream)
        if wait:
            await self.conn.execute("SELECT pg_advisory_lock($1)", key)
        elif not await self.conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
            return False
        self.locked = True
        await self.load_state()
        return True

    async def load_state(self) -> None:
        """Resume from the table: the last checkpoint's tree (its stored frontier must give the signed tree
        root) and the rows after it, which must link to the checkpoint's head."""
        conn = self.conn
        cp = await conn.fetchrow(
            "SELECT stream, first_seq, last_seq, merkle_root, head_hash, created_at, key_id, tree_root, "
            "prev_root, prev_statement, frontier FROM audit_checkpoints WHERE stream = $1 "
            "ORDER BY last_seq DESC LIMIT 1",
            self.stream,
        )
        prev = genesis_hash(self.stream)
        self.sealed_seq, self.frontier, self.last_statement = 0, Frontier(), None
        if cp is not None:
            statement = statement_of(cp)
            try:
                frontier = await self._frontier_at(statement, cp["frontier"])
            except ChainTampered:
                # The stored tree is not the signed one. What is signed stays signed: the writer continues
                # after this checkpoint (never over its seqs again), from the tree of the rows as they are,
                # once the damage is acknowledged; the evidence stays in the table for the verifier.
                self.sealed_seq, self.last_statement = statement.last_seq, statement
                self.frontier = await self._rows_frontier(statement.last_seq)
                raise
            self.sealed_seq, self.frontier, self.last_statement = statement.last_seq, frontier, statement
            prev = statement.head_hash
        tail = await conn.fetch(
            "SELECT seq, prev_hash, content_hash, row_hash FROM audit_events WHERE stream = $1 AND seq > $2 "
            "ORDER BY seq",
            self.stream,
            self.sealed_seq,
        )
        expected = self.sealed_seq + 1
        hashes: list[bytes] = []
        for r in tail:
            if (
                r["seq"] != expected
                or bytes(r["prev_hash"]) != prev
                or link(prev, bytes(r["content_hash"])) != bytes(r["row_hash"])
            ):
                raise ChainTampered(
                    self.stream,
                    "unsealed_tail_broken",
                    (self.sealed_seq, prev),
                    (int(r["seq"]), bytes(r["row_hash"])),
                    f"rows after the last checkpoint (seq {self.sealed_seq}) do not link up at seq {expected}",
                )
            prev = bytes(r["row_hash"])
            hashes.append(prev)
            expected += 1
        self.unsealed, self.unsealed_tree = hashes, RangeLevels(BLOCK_HEIGHT)
        self.head_seq, self.head_hash = expected - 1, prev
        self._check_journal()

    def _check_journal(self) -> None:
        """Rows after the last checkpoint must end where a batch of this writer ended (its journal): the
        ones after the last such head were written by someone else (while no writer ran: one that runs
        finds them at its next append)."""
        heads = self.journal.unsealed_heads(self.stream) if self.journal is not None else None
        if heads is None or not self.unsealed:
            return
        known = set(heads)
        good = (
            self.sealed_seq,
            self.last_statement.head_hash if self.last_statement else genesis_hash(self.stream),
        )
        if self.sealed_seq and good not in known:
            log.warning(
                "stream %s: the journal of unsealed heads does not know the last checkpoint (seq %d): another "
                "writer with another witness directory wrote since; not used",
                self.stream,
                self.sealed_seq,
            )
            return
        for seq, row_hash in enumerate(self.unsealed, self.sealed_seq + 1):
            if (seq, row_hash) in known:
                good = (seq, row_hash)
        if good[0] != self.head_seq:
            raise ChainTampered(
                self.stream,
                "foreign_rows",
                good,
                (self.head_seq, self.head_hash),
                f"rows {good[0] + 1}..{self.head_seq} after the last checkpoint are not in the writer's journal "
                "of unsealed heads: written by someone else than the writer",
            )

    async def _frontier_at(self, statement: Statement, stored: bytes | None) -> Frontier:
        size = statement.last_seq
        if statement.tree_root is not None and stored is not None:
            frontier = Frontier.from_bytes(size, bytes(stored))
            if frontier.root() == statement.tree_root:
                return frontier
            raise ChainTampered(
                self.stream,
                "checkpoint_frontier",
                (size, statement.tree_root),
                (size, frontier.root()),
                f"the stored tree of checkpoint at seq {size} does not give its signed root",
            )
        # A checkpoint of the first format: rebuild the tree from the rows (once, at takeover).
        return await self._rows_frontier(size)

    async def _rows_frontier(self, size: int) -> Frontier:
        """The tree of the stream's rows ``1..size`` as they are in the table."""
        frontier = Frontier()
        rows = await self.conn.fetch(
            "SELECT row_hash FROM audit_events WHERE stream = $1 AND seq <= $2 ORDER BY seq",
            self.stream,
            size,
        )
        frontier.extend([bytes(r["row_hash"]) for r in rows])
        return frontier

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
            await self._check_head()
            written: list[bytes] = []
            tree = self.unsealed_tree if len(self.unsealed_tree) == len(self.unsealed) else None
            try:
                seq, prev = await self._insert(entries, datetime.now(UTC), written, tree)
                if self.journal is not None:  # before the commit: a committed head is always in the journal
                    self.journal.intend(self.stream, seq, prev)
            except BaseException:
                if tree is not None:  # the rows are not committed: neither are their leaves
                    tree.truncate(len(self.unsealed))
                raise
        self.head_seq, self.head_hash = seq, prev
        self.unsealed.extend(written)
        return len(entries)

    async def _check_head(self) -> None:
        """The table's head must be the one this writer holds (it holds the stream's lock): anything else
        was written, changed or removed by someone else."""
        head_seq, head_hash = await self._stored_head()
        if (head_seq, head_hash) == (self.head_seq, self.head_hash):
            return
        if head_seq > self.head_seq:
            kind = "foreign_rows"
            detail = f"rows {self.head_seq + 1}..{head_seq} were written by someone else than the writer"
        elif head_seq < self.head_seq:
            kind = "rows_removed"
            detail = f"rows {head_seq + 1}..{self.head_seq} written by the writer are gone"
        else:
            kind = "head_rewritten"
            detail = f"the row at seq {head_seq} is not the one the writer wrote"
        raise ChainTampered(self.stream, kind, (self.head_seq, self.head_hash), (head_seq, head_hash), detail)

    async def adopt_table_head(self) -> None:
        """After tampering was recorded: continue after the rows now in the table (they stay unsigned until
        an auditor acknowledges the damage). The rows after the last checkpoint are taken as they are."""
        rows = await self.conn.fetch(
            "SELECT seq, row_hash FROM audit_events WHERE stream = $1 AND seq > $2 ORDER BY seq",
            self.stream,
            self.sealed_seq,
        )
        self.unsealed, self.unsealed_tree = [bytes(r["row_hash"]) for r in rows], RangeLevels(BLOCK_HEIGHT)
        self.head_seq, self.head_hash = await self._stored_head()
        if self.head_seq < self.sealed_seq:  # signed rows removed: nothing later can extend the signed tree
            self.unsealed = []
        elif self.journal is not None and self.head_seq > self.sealed_seq:
            # the rows found are on record as damage now: a restart must not report them again
            self.journal.intend(self.stream, self.head_seq, self.head_hash)

    async def _insert(
        self, entries: list[Entry], recorded_at: datetime, written: list[bytes], tree: RangeLevels | None
    ) -> tuple[int, bytes]:
        """Hash and insert the rows in one statement that streams them: the rows are hashed as the
        statement takes them, and sent a slice at a time, so PostgreSQL inserts the first rows (two
        processes, two cores) while the next ones are hashed. One statement per batch: a ``COPY`` has a
        fixed cost on the server (its insert buffers) that smaller statements would pay again. The rows
        are written as binary COPY tuples as they are hashed (:func:`iter_copy`): asyncpg has nothing left
        to encode."""
        head = Head(self.head_seq, self.head_hash)
        leaves: list[bytes] = []
        if self.insert_mode == "copy":
            chunks = iter_copy(self.stream, entries, head, recorded_at, written, leaves)
            await self.conn.copy_to_table(
                "audit_events", source=_sending(chunks, tree, leaves), columns=COPY_COLUMNS, format="binary"
            )
        else:  # asyncpg encodes and sends the arguments as it takes them from the iterator, too
            rows = iter_chain(self.stream, entries, head, recorded_at, leaves)
            await self.conn.executemany(_INSERT, _collecting(rows, written, tree, leaves))
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
        """Sign a tree head over the rows after the last checkpoint (at most ``max_rows``).

        What is signed comes from the writer's memory (the row hashes it wrote), never read back from the
        table: rows someone else slipped in are not in it. The table is compared first: a head or a last
        row that is not the writer's is tampering, and nothing is signed.
        """
        async with self._mutex:
            self._check_connection()
            if self.head_seq <= self.sealed_seq or not self.unsealed:
                return None
            await self._check_head()
            n = min(len(self.unsealed), max_rows)
            rows = self.unsealed[:n]
            first, end = self.sealed_seq + 1, self.sealed_seq + n
            if end != self.head_seq:
                stored = await self.conn.fetchval(
                    "SELECT row_hash FROM audit_events WHERE stream = $1 AND seq = $2", self.stream, end
                )
                if stored is None or bytes(stored) != rows[-1]:
                    raise ChainTampered(
                        self.stream,
                        "row_rewritten",
                        (end, rows[-1]),
                        (end, bytes(stored or b"")),
                        f"the row at seq {end} is not the one the writer wrote",
                    )
            old = self.frontier
            # once, for the range's root, the tree and the consistency proof: as the rows were written (with
            # the range tree's lower levels), or (rows read back from the table after a takeover) here
            known = self.unsealed_tree
            if len(known) == len(self.unsealed):
                leaves, levels_known = known.leaves[:n], known.levels
            else:
                leaves, levels_known = leaf_hashes(rows), []
            tree = old.copy()
            range_root, levels = tree.extend_with_levels(leaves, BLOCK_HEIGHT, levels_known)
            blocks = levels[min(BLOCK_HEIGHT, len(levels) - 1)]
            proof = frontier_consistency_proof_of_leaves(old, leaves, levels) if old.size else []
            statement = Statement(
                stream=self.stream,
                first_seq=first,
                last_seq=end,
                merkle_root=range_root,
                head_hash=rows[-1],
                created_at=datetime.now(UTC),
                key_id=signer.key_id,
                tree_root=tree.root(),
                prev_root=old.root(),
                prev_statement=self.last_statement.digest() if self.last_statement is not None else None,
            )
            signature = signer.sign(statement)
            checkpoint_id = await self.conn.fetchval(
                "INSERT INTO audit_checkpoints (stream, first_seq, last_seq, merkle_root, head_hash, created_at, "
                "key_id, signature, tree_root, prev_root, prev_statement, frontier, consistency, block_roots) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
                statement.stream,
                statement.first_seq,
                statement.last_seq,
                statement.merkle_root,
                statement.head_hash,
                statement.created_at,
                statement.key_id,
                signature,
                statement.tree_root,
                statement.prev_root,
                statement.prev_statement,
                tree.to_bytes(),
                b"".join(proof),
                b"".join(blocks),
            )
            self.sealed_seq, self.frontier, self.last_statement = end, tree, statement
            del self.unsealed[:n]
            if len(known) == len(self.unsealed) + n:
                known.drop(n)
            return Checkpoint(int(checkpoint_id), statement, signature, tuple(proof))


def statement_of(row: Any) -> Statement:
    """A checkpoint row (with or without the tree-head columns) as the statement it signed."""
    keys = row.keys()

    def opt(name: str) -> bytes | None:
        return bytes(row[name]) if name in keys and row[name] is not None else None

    return Statement(
        stream=row["stream"],
        first_seq=row["first_seq"],
        last_seq=row["last_seq"],
        merkle_root=bytes(row["merkle_root"]),
        head_hash=bytes(row["head_hash"]),
        created_at=row["created_at"],
        key_id=row["key_id"],
        tree_root=opt("tree_root"),
        prev_root=opt("prev_root"),
        prev_statement=opt("prev_statement"),
    )
