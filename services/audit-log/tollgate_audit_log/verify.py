"""Verification of the audit trail: every row's content hash, every link, every checkpoint.

:class:`ChainChecker` is the pure part: fed rows in seq order (as :data:`VERIFY_SQL` selects them), it
recomputes each content hash and link and stops at the first row that does not hold, naming why:

* ``content_changed`` — the row's fields no longer hash to its stored content hash (a flipped byte);
* ``misplaced`` — the row is intact (its own hashes agree) but it links to another predecessor: rows were
  swapped or moved;
* ``link_broken`` — the row's ``prev_hash`` is not the row hash of the row before it;
* ``row_hash_mismatch`` — the stored row hash is not ``sha256(prev_hash || content_hash)``;
* ``missing`` — a seq is absent (a deleted row; the first missing seq is reported);
* ``truncated`` — a signed checkpoint covers rows beyond the end of the chain (rows deleted at the end);
* ``checkpoint_mismatch`` — rows hash consistently but not to the Merkle root or head a checkpoint signed:
  the chain was re-hashed after signing (reported at the first seq of that checkpoint);
* ``checkpoint_signature`` / ``checkpoint_gap`` — a checkpoint's signature is invalid or one is missing.

:func:`verify_database` streams each chain out of PostgreSQL with a server-side cursor inside one
read-only snapshot, so a verifier running beside the writer sees a consistent prefix.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pickle
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tollgate_audit_log import compiled
from tollgate_audit_log.canonical import HASH_FORMAT, genesis_hash, header_prefix
from tollgate_audit_log.chain import statement_of
from tollgate_audit_log.merkle import (
    EMPTY_ROOT,
    Frontier,
    leaf_hash,
    verify_consistency,
)
from tollgate_audit_log.queries import Conn

if TYPE_CHECKING:  # only types here: the spawned verification processes need not import Kafka's client
    from tollgate_audit_native import CopyRows

    from tollgate_audit_log.publish import PublishedHead
from tollgate_audit_log.signing import (
    TRUSTED_KEYS_ENV,
    KeyRotation,
    Statement,
    follow_rotations,
    verify_statement,
)

# Columns in the order ChainChecker.feed unpacks them. Timestamps come as they are stored (binary int64
# microseconds, turned into Unix microseconds by the codec of :func:`_exact_timestamps`: PostgreSQL's
# numeric ``extract(epoch ...)`` cost more than the rest of the query), the envelope as text (its UTF-8
# bytes are hashed; ``convert_to(envelope, 'UTF8')`` cost the backend more than it saved here: 8.9 against
# 8.1 us a row, both processes, measured on 200,000 rows). Read under :data:`SCAN_SETTINGS`.
VERIFY_SQL = """
SELECT seq, event_id::text, topic, kafka_partition, kafka_offset, event_type, occurred_at, recorded_at,
       request_id, entity_id, model, version, trace_id, envelope, content_hash, prev_hash, row_hash
FROM audit_events WHERE stream = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq
"""
AcceptRows = Callable[[bytes, list[Any], int, bytes, int], tuple[int, bytes, list[bytes]]]


# The compiled loops (:mod:`tollgate_audit_log.compiled`): they accept the rows that hold. None: rows are
# read with a cursor, and the Python loop of ChainChecker, the reference, checks every row (the tests run
# both).
accept_rows: AcceptRows | None = compiled.function("accept_rows")
copy_rows: type[CopyRows] | None = compiled.function("CopyRows")
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 (PostgreSQL's epoch) in Unix microseconds
# A range is read in seq order along the primary key. Left to itself the planner may pick, for a narrower
# select list or another range, a (parallel) sequential scan of the whole table and a sort: a cursor's
# portal runs without parallel workers, so the backend scanned every stream and sorted (4.5-5 us a row
# against 2 us along the index, measured on 200,000 rows). JIT compilation buys nothing for this scan.
SCAN_SETTINGS = "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL jit = off"


@dataclass(frozen=True, slots=True)
class Problem:
    stream: str
    seq: int
    kind: str
    detail: str


@dataclass(slots=True)
class CheckpointRecord:
    id: int
    statement: Statement
    signature: bytes
    frontier: bytes | None = None  # the tree's perfect-subtree roots at last_seq (not signed; checked)
    consistency: bytes | None = None  # RFC 6962 proof from the previous head (concatenated hashes)
    source: str = "database"  # or where it was published: "witness", "kafka"


@dataclass
class StreamReport:
    stream: str
    ok: bool = True
    rows: int = 0
    head_seq: int = 0
    checkpoints_verified: int = 0
    checkpoints: int = 0
    first_bad_seq: int | None = None
    problem: str | None = None
    detail: str | None = None
    published_heads: int = 0  # heads read from outside the database and compared


@dataclass
class Report:
    ok: bool
    rows: int
    streams: list[StreamReport]
    elapsed_s: float
    keys: str  # where the public keys came from: "pinned" (by the operator) or "service" (its own)
    first_bad: Problem | None = None
    published: str = "none"  # where the published heads compared came from (witness, kafka), or none

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["elapsed_s"] = round(self.elapsed_s, 3)
        return out

    def summary(self) -> str:
        if self.ok:
            checkpoints = sum(s.checkpoints_verified for s in self.streams)
            return (
                f"OK: {self.rows} rows in {len(self.streams)} streams, {checkpoints} signed checkpoints "
                f"verified ({self.elapsed_s:.2f} s)"
            )
        assert self.first_bad is not None
        p = self.first_bad
        return f"BROKEN: stream {p.stream}, first bad seq {p.seq}: {p.kind}: {p.detail}"


class ChainChecker:
    """Checks one stream's rows in seq order; stops at the first problem."""

    def __init__(
        self,
        stream: str,
        checkpoints: Sequence[CheckpointRecord] = (),
        trusted: dict[str, Ed25519PublicKey] | None = None,
        *,
        first_seq: int = 1,
        prev_hash: bytes | None = None,
        check_statements: bool = True,
        frontier: Frontier | None = None,
    ) -> None:
        """``first_seq``/``prev_hash``/``frontier`` (the tree of rows before ``first_seq``) start the check
        mid-chain (one range of a parallel verification, whose checkpoint statements were checked once by
        the caller: ``check_statements=False``)."""
        self.stream = stream
        self.first_seq = first_seq
        self.expected = first_seq
        self.prev = prev_hash if prev_hash is not None else genesis_hash(stream)
        self.done = False
        self.problem: Problem | None = None
        self.checkpoints = sorted(checkpoints, key=lambda c: c.statement.first_seq)
        self.checkpoints_verified = 0
        self._pending = list(self.checkpoints)
        self._leaves: list[bytes] = []  # leaf hashes of the rows of the first pending checkpoint so far
        self._prefix = header_prefix(stream)  # for the compiled loops
        self._trusted = trusted or {}
        self._frontier = frontier if frontier is not None else Frontier()
        if check_statements:
            self._check_checkpoint_statements()

    def _fail(self, seq: int, kind: str, detail: str) -> None:
        """Keep the problem at the lowest seq; at the same seq, rows missing is the more exact answer."""
        if (
            self.problem is None
            or seq < self.problem.seq
            or (
                seq == self.problem.seq
                and kind in ("missing", "truncated")
                and self.problem.kind not in ("missing", "truncated")
            )
        ):
            self.problem = Problem(self.stream, seq, kind, detail)

    def _check_checkpoint_statements(self) -> None:
        """Signatures, contiguity and the chain of tree heads; a bad checkpoint marks the first seq it covers."""
        expected_first = 1
        previous: CheckpointRecord | None = None
        for cp in self.checkpoints:
            st = cp.statement
            key = self._trusted.get(st.key_id)
            if key is None:
                self._fail(
                    st.first_seq,
                    "checkpoint_signature",
                    f"checkpoint {cp.id} is signed by unknown key {st.key_id}",
                )
            elif not verify_statement(key, st, cp.signature):
                self._fail(
                    st.first_seq,
                    "checkpoint_signature",
                    f"checkpoint {cp.id} (seq {st.first_seq}..{st.last_seq}) has an invalid signature",
                )
            if st.first_seq != expected_first:
                self._fail(
                    min(st.first_seq, expected_first),
                    "checkpoint_gap",
                    f"checkpoint {cp.id} starts at seq {st.first_seq}, expected {expected_first} (a checkpoint is missing)",
                )
            elif st.tree_root is not None:
                self._check_chained(cp, previous)
            expected_first = st.last_seq + 1
            previous = cp

    def _check_chained(self, cp: CheckpointRecord, previous: CheckpointRecord | None) -> None:
        """A tree head names the previous one (its root and statement) and proves consistency with it."""
        st = cp.statement
        prev_root = previous.statement.tree_root if previous is not None else EMPTY_ROOT
        prev_digest = previous.statement.digest() if previous is not None else None
        if previous is not None and previous.statement.tree_root is None:
            return  # the first tree head after checkpoints of the first format
        if st.prev_root != prev_root or st.prev_statement != prev_digest:
            self._fail(
                st.first_seq,
                "checkpoint_chain",
                f"checkpoint {cp.id} (seq {st.first_seq}..{st.last_seq}) does not name the previous head "
                "(a head was replaced or removed)",
            )
            return
        if (
            previous is not None
            and cp.consistency is not None
            and prev_root is not None
            and st.tree_root is not None
        ):
            proof = [cp.consistency[i : i + 32] for i in range(0, len(cp.consistency), 32)]
            if not verify_consistency(
                previous.statement.last_seq, st.last_seq, prev_root, st.tree_root, proof
            ):
                self._fail(
                    st.first_seq,
                    "checkpoint_inconsistent",
                    f"the consistency proof of checkpoint {cp.id} does not show the tree of seq "
                    f"1..{previous.statement.last_seq} as a prefix of 1..{st.last_seq}",
                )

    @property
    def rows(self) -> int:
        """Rows verified so far: every seq before the next expected one."""
        return self.expected - self.first_seq

    def feed(self, rows: Sequence[Any]) -> bool:
        """Check a chunk of rows (VERIFY_SQL order). Returns False once a problem is found (stop reading).

        Rows are accepted by the compiled loop (:func:`tollgate_audit_native.accept_rows`) while they hold;
        from the first one it does not accept, this Python loop, the reference, checks them and names the
        problem. Without the compiled module this loop checks every row.
        """
        if self.done:
            return False
        if accept_rows is not None:
            rows = rows if isinstance(rows, list) else list(rows)
            limit = self.problem.seq if self.problem is not None else END_OF_CHAIN
            accepted, _, leaves = accept_rows(self._prefix, rows, self.expected, self.prev, limit)
            if accepted:
                if not self.accept(self.expected, leaves, lambda k: bytes(rows[k][16])):
                    return False
                if accepted == len(rows):
                    return True
                rows = rows[accepted:]
        return self._feed_reference(rows)

    def accept(self, first: int, leaves: list[bytes], row_hash: Callable[[int], bytes]) -> bool:
        """Rows ``first..`` accepted by a compiled loop (every check held): their Merkle leaf hashes, and
        ``row_hash(k)`` the row hash of the k-th. Takes them into the pending checkpoints, closing each one
        whose last row is among them; False (and done) when a checkpoint's roots do not match."""
        self.expected, self.prev = first + len(leaves), row_hash(len(leaves) - 1)
        pending, end = self._pending, first + len(leaves)
        while pending:
            st = pending[0].statement
            if st.first_seq >= end:
                break
            self._leaves.extend(leaves[max(st.first_seq - first, 0) : st.last_seq + 1 - first])
            if st.last_seq >= end:
                break
            head = row_hash(st.last_seq - first)
            if not self._close_checkpoint(pending.pop(0), head):
                self.expected, self.prev = st.last_seq + 1, head  # where the Python loop stops too
                self.done = True
                return False
        return True

    def _feed_reference(self, rows: Sequence[Any]) -> bool:
        """The hot loop in Python: flat, locals only; the same hashing as ``canonical.chain_records``."""
        stream, sha, dumps = self.stream, hashlib.sha256, orjson.dumps
        expected, prev, leaves, pending = self.expected, self.prev, self._leaves, self._pending
        limit = self.problem.seq if self.problem is not None else None
        cp_first, cp_last = (
            (pending[0].statement.first_seq, pending[0].statement.last_seq) if pending else (0, -1)
        )
        for r in rows:
            seq = r[0]
            if seq != expected:
                if seq > expected:
                    self._fail(expected, "missing", f"seq {expected}..{seq - 1} missing (rows deleted)")
                else:
                    self._fail(seq, "duplicate", f"seq {seq} appears twice")
                break
            if limit is not None and seq >= limit:
                break
            content = sha(b"%b\n%b" % (dumps((HASH_FORMAT, stream, *r[:13])), r[13].encode())).digest()
            stored, prev_hash, row_hash = r[14], r[15], r[16]
            if prev_hash != prev or content != stored:
                self._classify(seq, content, bytes(stored), bytes(prev_hash), bytes(row_hash), prev)
                break
            if sha(prev + content).digest() != row_hash:
                self._fail(
                    seq, "row_hash_mismatch", "the stored row hash is not sha256(prev_hash || content_hash)"
                )
                break
            prev = bytes(row_hash)
            expected += 1
            if pending and seq >= cp_first:
                leaves.append(leaf_hash(prev))
                if seq == cp_last:
                    if not self._close_checkpoint(pending.pop(0), prev):
                        break
                    leaves = self._leaves
                    cp_first, cp_last = (
                        (pending[0].statement.first_seq, pending[0].statement.last_seq)
                        if pending
                        else (0, -1)
                    )
        else:
            self.expected, self.prev = expected, prev
            return True
        self.expected, self.prev, self.done = expected, prev, True
        return False

    def _close_checkpoint(self, cp: CheckpointRecord, head: bytes) -> bool:
        """``self._leaves``: the leaf hashes of the checkpoint's rows; ``head``: its last row's hash."""
        st = cp.statement
        leaves, self._leaves = self._leaves, []
        range_root = self._frontier.extend_and_root(leaves)
        tree_ok = st.tree_root is None or (
            self._frontier.size == st.last_seq and self._frontier.root() == st.tree_root
        )
        if range_root != st.merkle_root or head != st.head_hash or not tree_ok:
            self._fail(
                st.first_seq,
                "checkpoint_mismatch",
                f"rows {st.first_seq}..{st.last_seq} hash consistently but not to the root signed by checkpoint {cp.id}: "
                "the chain was re-hashed after it was signed (the change is within this range)",
            )
            return False
        self.checkpoints_verified += 1
        return True

    def _classify(
        self, seq: int, content: bytes, stored: bytes, prev_hash: bytes, row_hash: bytes, prev: bytes
    ) -> None:
        self_consistent = hashlib.sha256(prev_hash + stored).digest() == row_hash
        if prev_hash != prev:
            if self_consistent and content != stored:
                self._fail(
                    seq,
                    "misplaced",
                    "an intact row from another position of the chain (rows swapped or moved)",
                )
            else:
                self._fail(seq, "link_broken", f"prev_hash is not the row hash of seq {seq - 1}")
        else:
            self._fail(seq, "content_changed", "the row's fields do not hash to its stored content hash")

    def finish(self, end: int | None = None) -> None:
        """After the last row. ``end``: the last seq this checker was given to check (a range of a parallel
        verification) — rows missing before it are a gap. Without it, the end of the chain: checkpoints
        beyond the end mean rows were removed from the end."""
        if self.done or (self.problem is not None and self.problem.seq < self.expected):
            return  # a row failed (or something earlier did): rows after it were not read
        if end is not None:
            if self.expected <= end:
                self._fail(self.expected, "missing", f"seq {self.expected}..{end} missing (rows deleted)")
            return
        last = self.expected - 1
        if self._pending:
            end = max(cp.statement.last_seq for cp in self._pending)
            if end > last:
                cp = max(self._pending, key=lambda c: c.statement.last_seq)
                self._fail(
                    last + 1,
                    "truncated",
                    f"seq {last + 1}..{end} missing: the chain ends at {last} but the signed head of checkpoint "
                    f"{cp.id} ({cp.source}) covers seq {cp.statement.first_seq}..{end}",
                )


KnownHeads = Callable[[str], Sequence[tuple[int, bytes]] | None]


async def _check_unsealed(
    conn: Conn, stream: str, checkpoints: Sequence[CheckpointRecord], known_heads: KnownHeads | None
) -> list[Problem]:
    """Rows after the last signed head must end at a head the writer noted before committing (its journal,
    :meth:`tollgate_audit_log.publish.WitnessDir.intend`); the first row after the last such head is the
    first one someone else wrote."""
    heads = known_heads(stream) if known_heads is not None else None
    if heads is None:
        return []
    last = max(checkpoints, key=lambda cp: cp.statement.last_seq, default=None)
    sealed = last.statement.last_seq if last is not None else 0
    known = set(heads)
    if last is not None and (sealed, last.statement.head_hash) not in known:
        return []  # not this trail's current journal (another writer, another witness, wrote since)
    rows = await conn.fetch(
        "SELECT seq, row_hash FROM audit_events WHERE stream = $1 AND seq > $2 ORDER BY seq", stream, sealed
    )
    if not rows:
        return []
    good = sealed
    for seq, row_hash in rows:
        if (seq, bytes(row_hash)) in known:
            good = seq
    end = rows[-1][0]
    if good == end:
        return []
    return [
        Problem(
            stream,
            good + 1,
            "foreign_rows",
            f"seq {good + 1}..{end} after the last signed head are not in the writer's journal of unsealed "
            "heads: written by someone else than the writer",
        )
    ]


async def list_streams(conn: Conn) -> list[str]:
    """Streams with rows or checkpoints (a loose index scan over the primary key: no full table scan)."""
    rows = await conn.fetch(
        """WITH RECURSIVE s(stream) AS (
               SELECT min(stream) FROM audit_events
               UNION ALL
               SELECT (SELECT min(stream) FROM audit_events WHERE stream > s.stream) FROM s WHERE s.stream IS NOT NULL)
           SELECT stream FROM s WHERE stream IS NOT NULL
           UNION SELECT DISTINCT stream FROM audit_checkpoints"""
    )
    return sorted(r["stream"] for r in rows)


async def load_checkpoints(conn: Conn, stream: str) -> list[CheckpointRecord]:
    rows = await conn.fetch(
        "SELECT id, stream, first_seq, last_seq, merkle_root, head_hash, created_at, key_id, signature, "
        "tree_root, prev_root, prev_statement, frontier, consistency "
        "FROM audit_checkpoints WHERE stream = $1 ORDER BY first_seq",
        stream,
    )
    return [
        CheckpointRecord(
            r["id"],
            statement_of(r),
            bytes(r["signature"]),
            frontier=bytes(r["frontier"]) if r["frontier"] is not None else None,
            consistency=bytes(r["consistency"]) if r["consistency"] is not None else None,
        )
        for r in rows
    ]


class NoTrustedKeys(ValueError):
    """Verification was asked for without any pinned public key."""


async def load_rotations(conn: Conn) -> list[tuple[KeyRotation, bytes]]:
    """Key rotations recorded in the database; each counts only if a trusted key signed it."""
    rows = await conn.fetch(
        "SELECT previous_key_id, new_public_key, created_at, signature FROM audit_key_rotations"
    )
    return [
        (
            KeyRotation(r["previous_key_id"], bytes(r["new_public_key"]), r["created_at"]),
            bytes(r["signature"]),
        )
        for r in rows
    ]


async def _locate(conn: Conn, problem: Problem, prev_hash: bytes | None) -> Problem:
    """For a misplaced row, say where it belongs (the row whose hash it links to)."""
    if problem.kind != "misplaced" or prev_hash is None:
        return problem
    after = await conn.fetchval(
        "SELECT seq FROM audit_events WHERE stream = $1 AND row_hash = $2 LIMIT 1", problem.stream, prev_hash
    )
    if after is None:
        return problem
    return Problem(
        problem.stream, problem.seq, problem.kind, f"{problem.detail}; it belongs at seq {after + 1}"
    )


END_OF_CHAIN = 2**63 - 1


@asynccontextmanager
async def _exact_timestamps(conn: Conn) -> AsyncIterator[None]:
    """``timestamptz`` columns decoded as exact Unix microseconds (from the binary int64), for the rows
    read; the connection's default codec is back afterwards (it may be a service's pooled connection)."""
    await conn.set_type_codec(
        "timestamptz",
        schema="pg_catalog",
        encoder=lambda us: (us - _PG_EPOCH_US,),
        decoder=lambda t: t[0] + _PG_EPOCH_US,
        format="tuple",
    )
    try:
        yield
    finally:
        await conn.reset_type_codec("timestamptz", schema="pg_catalog")


async def _check_rows(
    conn: Conn,
    checker: ChainChecker,
    last: int | None,
    *,
    fetch_size: int,
    offload: bool = False,
    progress: Callable[[str, int], None] | None = None,
) -> bytes | None:
    """Feed the checker seqs ``checker.first_seq..last`` (to the end when None); returns the failing row's
    prev_hash (to locate a misplaced row), if any.

    With the compiled loop, the rows stream out as a binary COPY checked as it arrives (:class:`CopyRows`,
    no Python object per value); from the first row it does not accept, a server-side cursor reads them
    for the Python loop, which names the problem. The cursor's next chunk is asked for before the current
    one is hashed, so PostgreSQL reads and sends it (another core) while this process hashes."""
    failing: bytes | None = None
    await conn.execute(SCAN_SETTINGS)  # until the end of the caller's transaction
    end = END_OF_CHAIN if last is None else last
    if copy_rows is not None and not offload and await _copy_rows(conn, copy_rows, checker, end, progress):
        checker.finish(last)
        return None
    if not checker.done:
        async with _exact_timestamps(conn):
            cursor = await conn.cursor(VERIFY_SQL, checker.stream, checker.expected, end)
            pending = asyncio.ensure_future(cursor.fetch(fetch_size))
            try:
                while chunk := await pending:
                    pending = asyncio.ensure_future(cursor.fetch(fetch_size))
                    await asyncio.sleep(0)  # let the request go out before hashing
                    ok = await asyncio.to_thread(checker.feed, chunk) if offload else checker.feed(chunk)
                    if not ok:
                        row = next((r for r in chunk if r[0] == checker.expected), None)
                        failing = bytes(row[15]) if row is not None else None
                        break
                    if progress is not None:
                        progress(checker.stream, checker.rows)
            finally:
                await pending  # the connection serves one request at a time: never leave one in flight
    checker.finish(last)
    return failing


# VERIFY_SQL's column types, as the compiled COPY loop decodes them (their binary forms): with any other
# type (a column altered), the cursor and the Python loop read the rows as the types say.
_VERIFY_TYPES = ("int8", "text", "text", "int4", "int8", "text", "timestamptz", "timestamptz", *["text"] * 6,
                 "bytea", "bytea", "bytea")  # fmt: skip


async def _copy_rows(
    conn: Conn,
    loop: type[CopyRows],
    checker: ChainChecker,
    end: int,
    progress: Callable[[str, int], None] | None,
) -> bool:
    """Check seqs ``checker.expected..end`` from a binary COPY with the compiled loop; True when every row
    was accepted (the checker is then up to date to ``end`` or the end of the chain), False when the rest
    is the cursor's (the first row not accepted onwards), or the checker is done."""
    statement = await conn.prepare(VERIFY_SQL)
    types = tuple(a.type.name if a.type.schema == "pg_catalog" else "" for a in statement.get_attributes())
    if types != _VERIFY_TYPES:
        return False
    limit = checker.problem.seq if checker.problem is not None else END_OF_CHAIN
    rows = loop(checker._prefix, checker.expected, checker.prev, limit)

    async def check(data: bytes) -> None:
        rows.feed(data)
        first, leaves, heads = rows.take()
        if leaves and not checker.accept(first, leaves, heads.__getitem__):
            rows.stop()
        elif leaves and progress is not None:
            progress(checker.stream, checker.rows)

    await conn.copy_from_query(
        VERIFY_SQL, checker.stream, checker.expected, end, output=check, format="binary"
    )
    return rows.complete and not checker.done


async def _report(
    conn: Conn,
    stream: str,
    rows: int,
    checkpoints: int,
    verified: int,
    problem: Problem | None,
    failing_prev: bytes | None,
) -> StreamReport:
    report = StreamReport(
        stream, rows=rows, head_seq=rows, checkpoints=checkpoints, checkpoints_verified=verified
    )
    if problem is not None:
        problem = await _locate(conn, problem, failing_prev)
        report.ok, report.first_bad_seq, report.problem, report.detail = (
            False,
            problem.seq,
            problem.kind,
            problem.detail,
        )
    return report


def merge_published(
    stream: str, stored: Sequence[CheckpointRecord], published: Sequence[PublishedHead]
) -> tuple[list[CheckpointRecord], list[Problem]]:
    """The checkpoints to verify the rows against: every published head (the database must still have each
    one, unchanged) and the database's checkpoints after the last published one (signed, not published
    yet). Problems: a published head missing from or replaced in the database, two published heads for one
    range."""
    problems: list[Problem] = []
    by_first: dict[int, CheckpointRecord] = {}
    for head in published:
        st = head.statement
        record = CheckpointRecord(0, st, head.signature, None, b"".join(head.consistency), head.source)
        seen = by_first.get(st.first_seq)
        if seen is not None and seen.statement.digest() != st.digest():
            problems.append(
                Problem(
                    stream,
                    st.first_seq,
                    "published_fork",
                    f"two different signed heads were published for seq {st.first_seq}.. ({seen.source}, {head.source})",
                )
            )
            continue
        by_first[st.first_seq] = record
    stored_by_first = {cp.statement.first_seq: cp for cp in stored}
    for first, record in sorted(by_first.items()):
        st = record.statement
        mine = stored_by_first.get(first)
        if mine is None:
            problems.append(
                Problem(
                    stream,
                    first,
                    "checkpoint_deleted",
                    f"the signed head for seq {first}..{st.last_seq} published to the {record.source} is not in "
                    "the database",
                )
            )
        elif mine.statement.digest() != st.digest() or mine.signature != record.signature:
            problems.append(
                Problem(
                    stream,
                    first,
                    "checkpoint_replaced",
                    f"the database's checkpoint {mine.id} for seq {first}..{mine.statement.last_seq} is not the "
                    f"head published to the {record.source}",
                )
            )
        else:
            record.id, record.frontier = mine.id, mine.frontier
    published_to = max((r.statement.last_seq for r in by_first.values()), default=0)
    merged = sorted(
        [*by_first.values(), *(cp for cp in stored if cp.statement.first_seq > published_to)],
        key=lambda c: c.statement.first_seq,
    )
    return merged, problems


async def stream_checkpoints(
    conn: Conn, stream: str, published: Mapping[str, Sequence[PublishedHead]] | None
) -> tuple[list[CheckpointRecord], list[Problem], int]:
    stored = await load_checkpoints(conn, stream)
    if published is None:
        return stored, [], 0
    heads = published.get(stream, ())
    merged, problems = merge_published(stream, stored, heads)
    return merged, problems, len(heads)


async def verify_stream(
    conn: Conn,
    stream: str,
    trusted: dict[str, Ed25519PublicKey],
    *,
    fetch_size: int = 20000,
    progress: Callable[[str, int], None] | None = None,
    offload: bool = False,
    published: Mapping[str, Sequence[PublishedHead]] | None = None,
    known_heads: KnownHeads | None = None,
) -> StreamReport:
    """Verify one stream inside the caller's transaction (a read-only snapshot), against its checkpoints
    and, when given, the heads published outside the database. ``offload`` hashes in a worker thread so a
    service's event loop keeps serving meanwhile."""
    checkpoints, problems, heads = await stream_checkpoints(conn, stream, published)
    checker = ChainChecker(stream, checkpoints, trusted)
    problems.extend(await _check_unsealed(conn, stream, checkpoints, known_heads))
    for problem in problems:
        checker._fail(problem.seq, problem.kind, problem.detail)
    failing = await _check_rows(
        conn, checker, None, fetch_size=fetch_size, offload=offload, progress=progress
    )
    report = await _report(
        conn,
        stream,
        checker.rows,
        len(checker.checkpoints),
        checker.checkpoints_verified,
        checker.problem,
        failing,
    )
    report.published_heads = heads
    return report


# ---------------------------------------------------------------------------------------------- in parallel

MIN_ROWS_PER_WORKER = 100_000


@dataclass(frozen=True)
class RangeJob:
    """One contiguous seq range of one stream, verified by a worker process in the exported snapshot."""

    dsn: str
    snapshot: str
    stream: str
    first: int
    last: int | None  # None: to the end of the chain
    prev_hash: bytes
    checkpoints: tuple[CheckpointRecord, ...]
    fetch_size: int
    frontier: bytes = b""  # the tree of rows 1..first-1 (checked against a signed root by the caller)


@dataclass(frozen=True)
class RangeResult:
    rows: int
    checkpoints_verified: int
    problem: Problem | None
    failing_prev: bytes | None


def split_ranges(
    head: int, checkpoints: Sequence[CheckpointRecord], parts: int, *, cuttable: Sequence[int] | None = None
) -> list[tuple[int, int | None]]:
    """Cut ``1..head`` into about equal ranges, only where no checkpoint is split (its roots need all its
    rows): at the end of a checkpoint (those in ``cuttable``, when given: the ones whose stored tree a range
    can start from) or after the last one. The last range is open-ended so rows removed at the end are still
    caught by the checkpoints."""
    sealed_to = max((cp.statement.last_seq for cp in checkpoints), default=0)
    allowed = sorted(
        cp.statement.last_seq
        for cp in checkpoints
        if cp.statement.last_seq < head and (cuttable is None or cp.statement.last_seq in cuttable)
    )
    cuts: list[int] = []
    for k in range(1, parts):
        target = head * k // parts
        if target > sealed_to:
            cut = target
        elif allowed:
            cut = min(allowed, key=lambda end: abs(end - target))
        else:
            continue
        if cut > (cuts[-1] if cuts else 0) and cut < head:
            cuts.append(cut)
    starts = [1, *(c + 1 for c in cuts)]
    return [(start, end) for start, end in zip(starts, [*cuts, None], strict=True)]


async def verify_range(job: RangeJob) -> RangeResult:
    """One range, in the exported snapshot, over a connection of its own (a worker process's work)."""
    conn = await asyncpg.connect(job.dsn)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.execute(f"SET TRANSACTION SNAPSHOT '{job.snapshot}'")
            return await _verify_range_on(conn, job)
    finally:
        await conn.close()


async def _verify_range_on(conn: Conn, job: RangeJob) -> RangeResult:
    checker = ChainChecker(
        job.stream,
        job.checkpoints,
        first_seq=job.first,
        prev_hash=job.prev_hash,
        check_statements=False,
        frontier=Frontier.from_bytes(job.first - 1, job.frontier),
    )
    failing = await _check_rows(conn, checker, job.last, fetch_size=job.fetch_size)
    return RangeResult(checker.rows, checker.checkpoints_verified, checker.problem, failing)


_HEADER = struct.Struct(">I")


class WorkerPool:
    """``size`` processes for parallel verification: the caller's own (it verifies the first range of a
    stream on its connection, already in the snapshot) and ``size - 1`` worker processes
    (:mod:`tollgate_audit_log.verify_worker`), started by :meth:`start` before the work is planned so
    their start-up overlaps it, and shared by every stream of one run."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._idle: asyncio.Queue[asyncio.subprocess.Process] = asyncio.Queue()
        self._procs: list[asyncio.subprocess.Process] = []

    async def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        for _ in range(self.size - 1 - len(self._procs)):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tollgate_audit_log.verify_worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=env,
            )
            self._procs.append(proc)
            self._idle.put_nowait(proc)

    async def run(self, job: RangeJob) -> RangeResult:
        """Verify ``job`` in an idle worker process (waits for one)."""
        proc = await self._idle.get()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            data = pickle.dumps(job)
            proc.stdin.write(_HEADER.pack(len(data)) + data)
            await proc.stdin.drain()
            try:
                (size,) = _HEADER.unpack(await proc.stdout.readexactly(_HEADER.size))
                result = pickle.loads(await proc.stdout.readexactly(size))
            except asyncio.IncompleteReadError as exc:
                raise RuntimeError(
                    f"verification worker {proc.pid} ended (exit code {await proc.wait()})"
                ) from exc
        finally:
            self._idle.put_nowait(proc)
        if isinstance(result, BaseException):
            raise result
        if not isinstance(result, RangeResult):
            raise RuntimeError(f"verification worker {proc.pid} answered {type(result).__name__}")
        return result

    async def close(self) -> None:
        for proc in self._procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self._procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self._procs.clear()


async def verify_stream_parallel(
    conn: Conn,
    dsn: str,
    snapshot: str,
    stream: str,
    trusted: dict[str, Ed25519PublicKey],
    *,
    pool: WorkerPool,
    fetch_size: int = 20000,
    min_rows_per_worker: int = MIN_ROWS_PER_WORKER,
    published: Mapping[str, Sequence[PublishedHead]] | None = None,
    known_heads: KnownHeads | None = None,
) -> StreamReport:
    """Verify one stream with ``workers`` processes, each over a seq range, all in the caller's snapshot
    (exported with ``pg_export_snapshot()``): Python's hashing is the bottleneck, and it is per process.
    A range starts at the end of a checkpoint whose stored tree (frontier) gives its signed tree root."""
    checkpoints, merge_problems, heads = await stream_checkpoints(conn, stream, published)
    head = int(
        await conn.fetchval("SELECT coalesce(max(seq), 0) FROM audit_events WHERE stream = $1", stream)
    )
    frontiers: dict[int, bytes] = {}
    for cp in checkpoints:
        st = cp.statement
        if cp.frontier is not None and st.tree_root is not None:
            try:
                if Frontier.from_bytes(st.last_seq, cp.frontier).root() == st.tree_root:
                    frontiers[st.last_seq] = cp.frontier
            except ValueError:
                pass
    parts = min(pool.size, max(1, head // min_rows_per_worker))
    ranges = split_ranges(head, checkpoints, parts, cuttable=list(frontiers))
    if len(ranges) == 1:
        return await verify_stream(
            conn, stream, trusted, fetch_size=fetch_size, published=published, known_heads=known_heads
        )
    statements = ChainChecker(stream, checkpoints, trusted)  # signatures, contiguity, the chain, once
    merge_problems.extend(await _check_unsealed(conn, stream, checkpoints, known_heads))
    for problem in merge_problems:
        statements._fail(problem.seq, problem.kind, problem.detail)
    jobs = []
    for first, last in ranges:
        prev = (
            genesis_hash(stream)
            if first == 1
            else await conn.fetchval(
                "SELECT row_hash FROM audit_events WHERE stream = $1 AND seq = $2", stream, first - 1
            )
        )
        mine = tuple(
            cp
            for cp in statements.checkpoints
            if cp.statement.first_seq >= first and (last is None or cp.statement.last_seq <= last)
        )
        jobs.append(
            RangeJob(
                dsn,
                snapshot,
                stream,
                first,
                last,
                bytes(prev or bytes(32)),
                mine,
                fetch_size,
                frontiers.get(first - 1, b""),
            )
        )
    assigned = sum(len(job.checkpoints) for job in jobs)
    if assigned != len(statements.checkpoints):  # never expected: a range would skip a checkpoint's roots
        raise RuntimeError(
            f"stream {stream}: {len(statements.checkpoints) - assigned} checkpoint(s) straddle a cut"
        )
    remote = [asyncio.ensure_future(pool.run(job)) for job in jobs[1:]]
    await asyncio.sleep(0)  # the workers' jobs go out before this process starts hashing its own range
    try:
        here = await _verify_range_on(conn, jobs[0])  # this connection is in the snapshot already
    except BaseException:
        for task in remote:
            task.cancel()
        await asyncio.gather(*remote, return_exceptions=True)
        raise
    results = [here, *await asyncio.gather(*remote)]
    problems = [(r.problem, r.failing_prev) for r in results if r.problem is not None]
    if statements.problem is not None:
        problems.append((statements.problem, None))
    first_bad = min(problems, key=lambda p: p[0].seq) if problems else None
    rows = first_bad[0].seq - 1 if first_bad else sum(r.rows for r in results)
    report = await _report(
        conn,
        stream,
        rows,
        len(checkpoints),
        sum(r.checkpoints_verified for r in results),
        first_bad[0] if first_bad else None,
        first_bad[1] if first_bad else None,
    )
    report.published_heads = heads
    return report


async def verify_database(
    conn: Conn,
    *,
    streams: Sequence[str] | None = None,
    trusted: dict[str, Ed25519PublicKey],
    fetch_size: int = 20000,
    progress: Callable[[str, int], None] | None = None,
    offload: bool = False,
    workers: int = 1,
    dsn: str | None = None,
    min_rows_per_worker: int = MIN_ROWS_PER_WORKER,
    published: Mapping[str, Sequence[PublishedHead]] | None = None,
    published_from: str = "none",
    rotations: Sequence[tuple[KeyRotation, bytes]] = (),
    known_heads: KnownHeads | None = None,
) -> Report:
    """Verify every stream (or the ones named). ``trusted`` maps key ids to the public keys pinned by the
    operator (out of band, never from the database): without any there is no trust anchor and no verdict,
    so an empty mapping is refused. Key rotations recorded in the database, or given in ``rotations`` (read
    from a witness directory's ``key-rotations.log``, which outlives a deleted table row), count only when
    signed by a key already trusted. With ``workers`` > 1 and the ``dsn`` to reach the database again, large streams are
    verified by several processes. ``known_heads(stream)`` gives the heads the writer noted outside the
    database (its journal of unsealed heads, and the published heads; None without a journal), read after
    the snapshot: rows after the last signed head that end no such head were not written by the writer."""
    if not trusted:
        raise NoTrustedKeys(
            "no trusted public keys: pin the checkpoint signer's key (--public-key or "
            f"{TRUSTED_KEYS_ENV}); keys recorded in the database are never trusted"
        )
    started = time.perf_counter()
    reports: list[StreamReport] = []
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        keys = follow_rotations(trusted, [*await load_rotations(conn), *rotations])
        snapshot = await conn.fetchval("SELECT pg_export_snapshot()") if workers > 1 and dsn else None
        pool = WorkerPool(workers)
        try:
            if snapshot is not None:
                await pool.start()
            names = streams if streams is not None else await list_streams(conn)
            if streams is None and published is not None:
                names = sorted({*names, *published})  # a stream whose every row is gone is still checked
            for stream in names:
                if snapshot is not None and dsn is not None:
                    report = await verify_stream_parallel(
                        conn,
                        dsn,
                        snapshot,
                        stream,
                        keys,
                        pool=pool,
                        fetch_size=fetch_size,
                        min_rows_per_worker=min_rows_per_worker,
                        published=published,
                        known_heads=known_heads,
                    )
                else:
                    report = await verify_stream(
                        conn,
                        stream,
                        keys,
                        fetch_size=fetch_size,
                        progress=progress,
                        offload=offload,
                        published=published,
                        known_heads=known_heads,
                    )
                reports.append(report)
        finally:
            await pool.close()
    bad = [r for r in reports if not r.ok]
    first_bad = None
    if bad:
        worst = bad[0]
        assert worst.first_bad_seq is not None and worst.problem is not None
        first_bad = Problem(worst.stream, worst.first_bad_seq, worst.problem, worst.detail or "")
    return Report(
        ok=not bad,
        rows=sum(r.rows for r in reports),
        streams=reports,
        elapsed_s=time.perf_counter() - started,
        keys="pinned",
        first_bad=first_bad,
        published=published_from if published is not None else "none",
    )
