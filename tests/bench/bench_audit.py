"""Benchmark: the audit sink against its limit (a raw COPY of pre-hashed rows), verification of 10^6 rows,
and per-decision receipts on a 10^6-row trail.

Sink: the real ``ChainWriter.append`` (hash chain computed by the compiled loop, one transaction per batch of
``--batch`` rows) plus a signed, chained tree head every 10,000 rows (the service's default), in a fresh
database with the service's schema and indexes, against its peers, alternated so none profits from a warmer
cache (nor from a smaller table); medians of ``--repeat`` runs:

* ``copy``        — the sink as the service runs it (binary COPY, head check, checkpoints): the compiled
  loop hashes the rows and writes them as binary COPY tuples;
* ``raw_copy``    — the limit: the same rows hashed beforehand (untimed), COPY'd into the same table with
  the same indexes by asyncpg (``copy_records_to_table``), one transaction per batch, no head check, no
  checkpoint; target sink >= 0.8x of it (the ratio of the medians, and the median of each round's ratio);
* ``raw_copy_bytes`` — the stricter limit: the same rows hashed and encoded as binary COPY tuples
  beforehand (untimed), so PostgreSQL alone is timed;
* ``copy_python_loop`` — the sink with the rows placed and hashed by the Python loop alone (the compiled
  loops' peer: libs/audit-native); the sink modes report the sink process's CPU time a row as well;
* ``executemany`` — asyncpg's ``executemany`` of one ``INSERT`` (already pipelined: no round trip per row);
* ``row_by_row``  — one awaited ``INSERT`` per row, what a naive sink does (smaller sample, for context).

Every run appends the next ``--rows`` messages of one inference log to the chain ``--stream`` (default
``inference``, the stream these messages belong to, so the same partial indexes apply as in the service):
each message has a new event id and request id and a later ``occurred_at``, as a live log has; all runs
build their rows the same way and hash them the same way.

Also measured: turning consumed message bytes into entries (parse, canonical JSON, index columns), the
other half of the sink's work.

Verification: ``--verify-rows`` rows (default 1,000,000) appended through the writer with a signed tree head
every 10,000, then verified from the database as ``tollgate audit verify`` does (content hash of every row,
every link, every head's range and tree roots, chain, consistency proof and signature), with 1 process and
with ``--workers`` (median of ``--verify-repeat`` runs; target <= 5 s with 2). Each run reports the CPU time
of the verifier's processes and of the PostgreSQL backends serving them. Beside each run, the floor: the same
rows and columns read with binary ``COPY`` over as many connections (one snapshot) and hashed with SHA-256 as
the bytes arrive, with no row decoded and no check; reported as verify/floor ratios of wall and CPU time.
Then the peer of the compiled loops (libs/audit-native: a binary COPY checked as it arrives): the same
verification with ``--workers``, a cursor and the Python loop alone (``TOLLGATE_AUDIT_LOG_COMPILED=0``),
reported as its time over the compiled loops'.

Receipts: ``--proofs`` receipts (``GET /v1/audit/proof``'s work) for rows spread over that trail: p50/p95
time and median size; each is checked offline.

Usage: ``python tests/bench/bench_audit.py [--rows 100000] [--verify-rows 1000000] [--workers 2]``
(``make bench`` runs it with the defaults; ``make bench AUDIT_ROWS=200000`` verifies a smaller trail).
Needs PostgreSQL (``infra/stack.sh infra-up``). Writes ``.local/bench/audit.json``. Creates and drops its
own database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import resource
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.db_support import ADMIN_DSN, drop_database  # noqa: E402
from tollgate_audit_log import canonical, compiled, merkle  # noqa: E402
from tollgate_audit_log import verify as verify_module  # noqa: E402
from tollgate_audit_log.app import prepare_database  # noqa: E402
from tollgate_audit_log.batch import record_batch  # noqa: E402
from tollgate_audit_log.canonical import COPY_COLUMNS, Entry, Head, chain_records  # noqa: E402
from tollgate_audit_log.chain import ChainWriter  # noqa: E402
from tollgate_audit_log.compiled import COMPILED_ENV  # noqa: E402
from tollgate_audit_log.receipts import receipts_for, verify_receipt  # noqa: E402
from tollgate_audit_log.settings import AuditLogSettings  # noqa: E402
from tollgate_audit_log.signing import Signer  # noqa: E402
from tollgate_audit_log.streams import STREAMS, EntryBuilder  # noqa: E402
from tollgate_audit_log.verify import (  # noqa: E402
    SCAN_SETTINGS,
    VERIFY_SQL,
    verify_database,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DB_PREFIX = "tollgate_bench_audit_"
INFERENCE = next(s for s in STREAMS if s.name == "inference")


def inference_message(i: int) -> bytes:
    """One inference-log message as the scorer publishes it (about 600 bytes)."""
    return orjson.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "event_type": "inference",
            "schema": "inference.log.v1",
            "occurred_at": (T0 + timedelta(milliseconds=i)).isoformat(),
            "producer": "scorer",
            "payload": {
                "request_id": f"req-{i}",
                "model": "credit-default-risk",
                "version": "3",
                "route": "champion",
                "channel": "http",
                "contract": "credit-default.v1",
                "entity_id": f"C-{i % 10000:06d}",
                "inputs": {
                    "student": "No",
                    "balance": float(i % 2500),
                    "income": 20000.0 + i,
                    "customer_email": "9f" * 32,
                },
                "outputs": {"prediction": i % 7 == 0, "score": (i % 1000) / 1000},
                "latency_ms": 0.7,
                "trace_id": None,
            },
        }
    )


def entries(builder: EntryBuilder, first: int, count: int) -> list[Entry]:
    return [
        builder.build(inference_message(i), "tollgate.inference.log.v1", i % 6, i)
        for i in range(first, first + count)
    ]


class Log:
    """The inference log as consumed: every call hands out the next messages (new ids, later times)."""

    def __init__(self) -> None:
        self.next = 0

    def take(self, count: int) -> range:
        taken = range(self.next, self.next + count)
        self.next += count
        return taken


SIGNER = Signer(Ed25519PrivateKey.generate())
VERIFY_IDS = 10**9  # the verify trail's messages are numbered from here (request ids unlike the sink runs')
CHECKPOINT_ROWS = 10_000  # the service's default: a signed tree head every 10,000 rows (or 5 s)


# The sink's runs (True: with the Python loop alone), then the limits it is compared to.
SINK_RUNS = {"copy": False, "copy_python_loop": True}
SINK_MODES = ("copy", "raw_copy", "raw_copy_bytes", "copy_python_loop")
# Every compiled loop the audit-log looks up (tollgate_audit_log.compiled), by module attribute.
LOOPS = ((verify_module, "accept_rows", "accept_rows"), (verify_module, "copy_rows", "CopyRows"),
         (canonical, "chain_copy", "chain_copy"), (merkle, "parent_level", "parent_level"))  # fmt: skip


def python_loop(on: bool) -> None:
    """The Python loops alone (on) or the compiled ones: in this process, and in the verification worker
    processes started from here on (they inherit the environment)."""
    if on:
        os.environ[COMPILED_ENV] = "0"
    else:
        os.environ.pop(COMPILED_ENV, None)
    for module, attribute, name in LOOPS:
        setattr(module, attribute, compiled.function(name))


@contextlib.contextmanager
def python_loops(on: bool) -> Iterator[None]:
    """:func:`python_loop` for the time of a block, then the compiled loops again."""
    python_loop(on)
    try:
        yield
    finally:
        python_loop(False)


def paired(a: list[float], b: list[float]) -> float:
    """The median of each round's ratio a/b (the two ran back to back: what the machine was doing at the
    time weighs on both)."""
    return round(statistics.median(x / y for x, y in zip(a, b, strict=True)), 3)


async def sink_rate(
    conn: asyncpg.Connection,
    stream: str,
    mode: str,
    rows: list[Entry],
    batch: int,
    checkpoints: list[float] | None = None,
    cpu: list[float] | None = None,
) -> float:
    """The sink as the service runs it: hash chain in Python, one transaction per batch, and a signed,
    chained tree head (frontier, consistency proof, signature, checkpoint row) every CHECKPOINT_ROWS rows.
    The seconds each of those checkpoints took (between two appends, while PostgreSQL has nothing to
    insert) go to ``checkpoints``; this process's CPU microseconds a row (hashing and encoding the rows) to
    ``cpu``."""
    writer = ChainWriter(conn, stream, insert_mode=mode)  # type: ignore[arg-type]
    await writer.acquire()  # continues the stream's chain from its head (and its tree from the last head)
    await writer.register_key(SIGNER)
    started, used = time.perf_counter(), time.process_time()
    for first in range(0, len(rows), batch):
        await writer.append(rows[first : first + batch])
        if writer.head_seq - writer.sealed_seq >= CHECKPOINT_ROWS:
            sealing = time.perf_counter()
            await writer.checkpoint(SIGNER, max_rows=100_000)
            if checkpoints is not None:
                checkpoints.append(time.perf_counter() - sealing)
    await writer.checkpoint(SIGNER, max_rows=100_000)  # the tail, as the timer would seal it
    if cpu is not None:
        cpu.append((time.process_time() - used) / len(rows) * 1e6)
    return len(rows) / (time.perf_counter() - started)


async def raw_copy_rate(
    conn: asyncpg.Connection, stream: str, rows: list[Entry], batch: int, *, encoded: bool = False
) -> float:
    """The limit: the same rows, hashed beforehand (not timed), COPY'd into the same table with the same
    indexes, one transaction per batch, no head check and no checkpoint. ``encoded``: the rows are binary
    COPY tuples already (written by the sink's own loop, not timed either), sent a chunk at a time as the
    sink sends them."""
    writer = ChainWriter(conn, stream)
    await writer.acquire()
    seq, prev = writer.head_seq, writer.head_hash
    batches: list[list[Any]] = []  # records, or the chunks of a binary COPY as the sink writes them
    for first in range(0, len(rows), batch):
        part, now = rows[first : first + batch], datetime.now(UTC)
        if encoded:
            head = Head(seq, prev)
            batches.append(list(canonical.iter_copy(stream, part, head, now, [], [])))
            seq, prev = head.seq, head.hash
        else:
            records, seq, prev = chain_records(stream, part, seq, prev, now)
            batches.append(records)

    async def sent(chunks: list[bytes]) -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    started = time.perf_counter()
    for prepared in batches:
        async with conn.transaction():
            if encoded:
                await conn.copy_to_table(
                    "audit_events", source=sent(prepared), columns=COPY_COLUMNS, format="binary"
                )
            else:
                await conn.copy_records_to_table("audit_events", records=prepared, columns=COPY_COLUMNS)
    rate = len(rows) / (time.perf_counter() - started)
    sealer = ChainWriter(conn, stream)  # seal them (untimed), so the next sink run starts with no backlog
    await sealer.acquire()
    while await sealer.checkpoint(SIGNER, max_rows=100_000) is not None:
        pass
    await conn.execute("SELECT pg_advisory_unlock_all()")
    return rate


class Message(NamedTuple):
    value: bytes
    topic: str
    partition: int
    offset: int
    headers: Any = None


async def handler_rate(
    conn: asyncpg.Connection,
    stream: str,
    builder: EntryBuilder,
    messages: list[tuple[int, bytes]],
    batch: int,
) -> float:
    """What the service's handler does with each consumed batch (``record_batch``): message bytes to
    entries, hashed and COPY'd, parsing one part while the previous one is inserted."""
    writer = ChainWriter(conn, stream)
    await writer.acquire()
    consumed = [Message(m, "tollgate.inference.log.v1", 0, i) for i, m in messages]
    started = time.perf_counter()
    for first in range(0, len(consumed), batch):
        outcome = await record_batch(writer, builder, consumed[first : first + batch])
        assert outcome.inserted == len(consumed[first : first + batch])
    return len(consumed) / (time.perf_counter() - started)


async def row_by_row_rate(conn: asyncpg.Connection, stream: str, rows: list[Entry], batch: int) -> float:
    """The naive sink: the same chain, one awaited INSERT per row (one round trip each)."""
    from tollgate_audit_log.canonical import COPY_COLUMNS, chain_records

    sql = f"INSERT INTO audit_events ({', '.join(COPY_COLUMNS)}) VALUES ({', '.join(f'${i + 1}' for i in range(len(COPY_COLUMNS)))})"
    writer = ChainWriter(conn, stream)
    await writer.acquire()
    seq, prev = writer.head_seq, writer.head_hash
    started = time.perf_counter()
    for first in range(0, len(rows), batch):
        async with conn.transaction():
            records, seq, prev = chain_records(
                stream, rows[first : first + batch], seq, prev, datetime.now(UTC)
            )
            for record in records:
                await conn.execute(sql, *record)
    return len(rows) / (time.perf_counter() - started)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    name = f"{DB_PREFIX}{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    for (stale,) in await admin.fetch(
        "SELECT datname FROM pg_database WHERE datname LIKE $1", DB_PREFIX + "%"
    ):
        await drop_database(stale)  # left by an interrupted run
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    try:
        await prepare_database(AuditLogSettings(database_url=dsn))
        return await measure(dsn, args)
    finally:
        await admin.close()
        await drop_database(name)


async def measure(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    # Other work on the machine skews every number here: the load average is recorded with them.
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    builder = EntryBuilder(INFERENCE)
    source = Log()
    taken = source.take(args.rows)
    started = time.perf_counter()
    rows: list[Entry] | None = entries(builder, taken.start, len(taken))
    build_rate = args.rows / (time.perf_counter() - started)
    print(f"entries from message bytes: {build_rate:,.0f}/s")

    conn = await asyncpg.connect(dsn)
    rates: dict[str, list[float]] = {mode: [] for mode in (*SINK_MODES, "executemany")}
    checkpoints: list[float] = []  # seconds of each CHECKPOINT_ROWS-row checkpoint in the sink's copy runs
    cpu: dict[str, list[float]] = {mode: [] for mode in SINK_RUNS}  # the sink process's us a row
    try:
        for rep in range(args.repeat):
            turn = rep % len(SINK_MODES)  # each round starts with another mode: none always runs first
            for mode in (*SINK_MODES[turn:], *SINK_MODES[:turn], "executemany"):
                if mode == "executemany" and rep >= args.executemany_repeat:
                    continue
                if rows is None:
                    taken = source.take(args.rows)
                    rows = entries(builder, taken.start, len(taken))
                if mode in ("raw_copy", "raw_copy_bytes"):
                    rate = await raw_copy_rate(
                        conn, args.stream, rows, args.batch, encoded=mode == "raw_copy_bytes"
                    )
                elif mode in SINK_RUNS:
                    with python_loops(SINK_RUNS[mode]):
                        rate = await sink_rate(
                            conn,
                            args.stream,
                            "copy",
                            rows,
                            args.batch,
                            checkpoints if mode == "copy" else None,
                            cpu[mode],
                        )
                else:
                    rate = await sink_rate(conn, args.stream, mode, rows, args.batch)
                rows = None
                rates[mode].append(rate)
                print(f"  {mode:16} run {rep + 1}: {rate:>10,.0f} rows/s")
        messages = [(i, inference_message(i)) for i in source.take(args.rows)]
        end_to_end = await handler_rate(conn, args.stream, builder, messages, args.batch)
        print(f"  {'handler':12} (bytes to rows, COPY): {end_to_end:>10,.0f} rows/s")
        taken = source.take(max(1, args.rows // 10))
        sample = entries(builder, taken.start, len(taken))
        naive = await row_by_row_rate(conn, args.stream, sample, args.batch)
        print(f"  {'row_by_row':12} ({len(sample)} rows): {naive:>10,.0f} rows/s")
    finally:
        await conn.close()
    copy_rate, many_rate = statistics.median(rates["copy"]), statistics.median(rates["executemany"])
    raw_rate = statistics.median(rates["raw_copy"])

    verify = {} if args.sink_only else await measure_verify(dsn, builder, args)
    result: dict[str, Any] = {
        "rows": args.rows,
        "batch": args.batch,
        "repeat": args.repeat,
        "stream": args.stream,
        "entries_per_second": round(build_rate),
        "copy_rows_per_second": round(copy_rate),
        "executemany_rows_per_second": round(many_rate),
        "row_by_row_rows_per_second": round(naive),
        "sink_bytes_to_rows_per_second": round(end_to_end),
        "raw_copy_rows_per_second": round(raw_rate),
        "sink_vs_raw_copy_ratio": round(copy_rate / raw_rate, 3),
        "sink_vs_raw_copy_ratio_paired": paired(rates["copy"], rates["raw_copy"]),
        "sink_vs_raw_copy_ratio_runs": [
            round(a / b, 3) for a, b in zip(rates["copy"], rates["raw_copy"], strict=True)
        ],
        "raw_copy_bytes_rows_per_second": round(statistics.median(rates["raw_copy_bytes"])),
        "sink_vs_raw_copy_bytes_ratio": round(copy_rate / statistics.median(rates["raw_copy_bytes"]), 3),
        "sink_vs_raw_copy_bytes_ratio_paired": paired(rates["copy"], rates["raw_copy_bytes"]),
        "sink_python_loop_rows_per_second": round(statistics.median(rates["copy_python_loop"])),
        "sink_compiled_vs_python_loop": round(copy_rate / statistics.median(rates["copy_python_loop"]), 3),
        "sink_cpu_us_per_row": round(statistics.median(cpu["copy"]), 2),
        "sink_python_loop_cpu_us_per_row": round(statistics.median(cpu["copy_python_loop"]), 2),
        "checkpoint_rows": CHECKPOINT_ROWS,
        "sink_checkpoint_ms_median": round(statistics.median(checkpoints) * 1000, 2) if checkpoints else None,
        "copy_vs_executemany_ratio": round(copy_rate / many_rate, 2),
        "copy_vs_row_by_row_ratio": round(copy_rate / naive, 2),
        "runs": {k: [round(v) for v in vs] for k, vs in rates.items()},
        **verify,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
    }
    result["targets"] = [
        {
            "name": "sink (hash chain + signed tree heads) >= 0.8x raw COPY of pre-hashed rows",
            "value": result["sink_vs_raw_copy_ratio"],
            "met": copy_rate >= 0.8 * raw_rate,
        },
        {
            "name": "the same, median of each round's ratio",
            "value": result["sink_vs_raw_copy_ratio_paired"],
            "met": result["sink_vs_raw_copy_ratio_paired"] >= 0.8,
        },
        {
            "name": "sink >= 0.8x raw COPY of pre-hashed rows already encoded as COPY tuples",
            "value": result["sink_vs_raw_copy_bytes_ratio_paired"],
            "met": result["sink_vs_raw_copy_bytes_ratio_paired"] >= 0.8,
        },
        *(
            []
            if args.sink_only
            else [
                {
                    "name": f"verify {args.verify_rows:,} rows in {args.workers} processes <= 5 s (median)",
                    "value": result.get(f"verify_seconds_{args.workers}_workers"),
                    "met": result.get(f"verify_seconds_{args.workers}_workers", 1e9) <= 5.0,
                }
            ]
        ),
        {
            "name": "audit sink with COPY >= 50,000 rows/s",
            "value": result["copy_rows_per_second"],
            "met": copy_rate >= 50_000,
        },
        {
            "name": "COPY >= 10x executemany",
            "value": result["copy_vs_executemany_ratio"],
            "met": copy_rate >= 10 * many_rate,
        },
    ]
    return result


async def measure_verify(dsn: str, builder: EntryBuilder, args: argparse.Namespace) -> dict[str, Any]:
    stream = "verify"
    signer = SIGNER
    conn = await asyncpg.connect(dsn)
    try:
        writer = ChainWriter(conn, stream)
        await writer.acquire()
        await writer.register_key(signer)
        started = time.perf_counter()
        chunk = 50_000
        for first in range(0, args.verify_rows, chunk):
            part = entries(builder, VERIFY_IDS + first, min(chunk, args.verify_rows - first))
            for b in range(0, len(part), args.batch):
                await writer.append(part[b : b + args.batch])
                if writer.head_seq - writer.sealed_seq >= CHECKPOINT_ROWS:
                    await writer.checkpoint(signer, max_rows=100_000)
        while await writer.checkpoint(signer, max_rows=100_000) is not None:
            pass
        print(f"filled {args.verify_rows:,} rows in {time.perf_counter() - started:.1f} s")
        await conn.execute("VACUUM ANALYZE audit_events")
        trusted = {signer.key_id: signer.public_key}
        timings: dict[str, Any] = {}
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        # The compiled hot loop with 1 and N processes, then N processes with the Python loop alone (the
        # reference; the peer of the compiled loop, in the same run).
        plans = [(w, "") for w in sorted({1, args.workers})] + [(args.workers, "_python_loop")]
        for workers, variant in plans:
            runs, client_cpu, server_cpu = [], [], []
            floor_runs, floor_cpu = [], []
            python_loop(variant == "_python_loop")
            for _ in range(args.verify_repeat):
                floor_wall, floor_cpu_s = await copy_floor(dsn, stream, args.verify_rows, workers)
                floor_runs.append(floor_wall)
                floor_cpu.append(floor_cpu_s)
                print(
                    f"floor: COPY of the same {args.verify_rows:,} rows over {workers} connection(s), hashed as "
                    f"they arrive, in {floor_wall:.2f} s (CPU: this process and the COPY backends {floor_cpu_s:.2f} s)"
                )
                cpu = cpu_seconds()
                served = backend_cpu_seconds(backend) + ended_backends_cpu_seconds(backend)
                started = time.perf_counter()
                report = await verify_database(
                    conn, streams=[stream], trusted=trusted, workers=workers, dsn=dsn
                )
                runs.append(time.perf_counter() - started)
                client_cpu.append(cpu_seconds() - cpu)
                server_cpu.append(backend_cpu_seconds(backend) + ended_backends_cpu_seconds(backend) - served)
                assert report.ok and report.rows == args.verify_rows, report.summary()
                print(
                    f"verified {report.rows:,} rows ({report.streams[0].checkpoints_verified} tree heads) with "
                    f"{workers} process(es){' and the Python loop alone' if variant else ''} in {runs[-1]:.2f} s "
                    f"(CPU: verifier processes {client_cpu[-1]:.2f} s, their PostgreSQL backends {server_cpu[-1]:.2f} s)"
                )
            python_loop(False)
            seconds = statistics.median(runs)
            # On a loaded machine the wall time says how much CPU the others left; the CPU seconds say what
            # verification itself costs (the verifier's processes, workers included, and the PostgreSQL
            # backends serving them: the calling process's connection, and the workers' connections, counted
            # once they ended; other backends that end meanwhile, such as autovacuum's, count too).
            if variant:
                timings[f"verify_seconds_{workers}_workers{variant}"] = round(seconds, 2)
                timings[f"verify_cpu_seconds_{workers}_workers{variant}"] = round(
                    statistics.median(client_cpu), 2
                )
                timings[f"verify_runs_{workers}_workers{variant}"] = [round(r, 2) for r in runs]
                continue
            timings[f"verify_cpu_seconds_{workers}_workers"] = round(statistics.median(client_cpu), 2)
            timings[f"verify_backend_cpu_seconds_{workers}_workers"] = round(statistics.median(server_cpu), 2)
            timings[f"verify_seconds_{workers}_workers"] = round(seconds, 2)
            timings[f"verify_rows_per_second_{workers}_workers"] = round(args.verify_rows / seconds)
            timings[f"verify_runs_{workers}_workers"] = [round(r, 2) for r in runs]
            floor = statistics.median(floor_runs)
            timings[f"floor_seconds_{workers}_workers"] = round(floor, 2)
            timings[f"floor_cpu_seconds_{workers}_workers"] = round(statistics.median(floor_cpu), 2)
            timings[f"floor_runs_{workers}_workers"] = [round(r, 2) for r in floor_runs]
            timings[f"verify_vs_floor_{workers}_workers"] = round(seconds / floor, 2)
            timings[f"verify_vs_floor_cpu_{workers}_workers"] = round(
                (statistics.median(client_cpu) + statistics.median(server_cpu))
                / statistics.median(floor_cpu),
                2,
            )
        n = args.workers
        timings[f"python_loop_vs_compiled_{n}_workers"] = round(
            timings[f"verify_seconds_{n}_workers_python_loop"] / timings[f"verify_seconds_{n}_workers"], 2
        )
        if args.workers > 1:
            timings["verify_speedup_workers"] = round(
                timings["verify_seconds_1_workers"] / timings[f"verify_seconds_{args.workers}_workers"], 2
            )
        timings.update(await measure_proofs(conn, args, trusted))
        return {"verify_rows": args.verify_rows, **timings}
    finally:
        await conn.close()


async def copy_floor(dsn: str, stream: str, rows: int, connections: int) -> tuple[float, float]:
    """The floor of verification: the same rows and columns as the verifier reads (VERIFY_SQL, the same
    plan settings), streamed out with binary ``COPY`` over ``connections`` connections (one seq range
    each, in one exported snapshot) and hashed with SHA-256 as the bytes arrive: reading and hashing every
    byte once, no rows decoded, no checks. Returns wall seconds and CPU seconds (this process and the COPY
    backends)."""
    conns = [await asyncpg.connect(dsn) for _ in range(connections)]
    try:
        pids = [await c.fetchval("SELECT pg_backend_pid()") for c in conns]
        cuts = [1 + rows * k // connections for k in range(connections + 1)]
        txs = [c.transaction(isolation="repeatable_read", readonly=True) for c in conns]
        for tx in txs:
            await tx.start()
        try:
            snapshot = await conns[0].fetchval("SELECT pg_export_snapshot()")
            for c in conns[1:]:
                await c.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            for c in conns:
                await c.execute(SCAN_SETTINGS)
            digests = [hashlib.sha256() for _ in conns]

            def sink(h: Any) -> Any:
                async def write(data: bytes) -> None:
                    h.update(data)

                return write

            cpu, served, started = cpu_seconds(), sum(map(backend_cpu_seconds, pids)), time.perf_counter()
            await asyncio.gather(
                *(
                    c.copy_from_query(VERIFY_SQL, stream, lo, hi - 1, output=sink(h), format="binary")
                    for c, h, lo, hi in zip(conns, digests, cuts, cuts[1:], strict=False)
                )
            )
            wall = time.perf_counter() - started
            used = cpu_seconds() - cpu + sum(map(backend_cpu_seconds, pids)) - served
        finally:
            for tx in txs:
                await tx.rollback()
    finally:
        for c in conns:
            await c.close()
    return wall, used


def cpu_seconds() -> float:
    """CPU time of this process and of its children that ended (the verification workers)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def ended_backends_cpu_seconds(backend: int) -> float:
    """CPU time of the PostgreSQL backends that ended (and were reaped by the postmaster, the parent of
    ``backend``): a verification worker's connection; 0 when /proc cannot be read."""
    try:
        parent = Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1]
        fields = Path(f"/proc/{parent}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def backend_cpu_seconds(pid: int) -> float:
    """CPU time of a PostgreSQL backend on this host (/proc); 0 when it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure_proofs(
    conn: asyncpg.Connection, args: argparse.Namespace, trusted: dict[str, Any]
) -> dict[str, Any]:
    """Receipts (GET /v1/audit/proof's work: the row, its checkpoint, the range's row hashes, the audit
    path) for rows spread over the 10^6-row trail; each is checked offline once."""
    step = max(1, args.verify_rows // args.proofs)
    times, sizes, paths = [], [], []
    for i in range(step // 2, args.verify_rows, step):
        started = time.perf_counter()
        found = await receipts_for(conn, f"req-{VERIFY_IDS + i}")
        times.append(time.perf_counter() - started)
        (receipt,) = found.receipts
        sizes.append(len(orjson.dumps(receipt)))
        paths.append(len(receipt["path"]))
        assert verify_receipt(receipt, trusted).ok
    times.sort()
    p50, p95 = statistics.median(times), times[int(len(times) * 0.95) - 1]
    print(
        f"receipts on {args.verify_rows:,} rows: p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
        f"size median {statistics.median(sizes):,.0f} bytes ({statistics.median(paths):.0f} path hashes), n={len(times)}"
    )
    return {
        "proof_count": len(times),
        "proof_p50_ms": round(p50 * 1000, 2),
        "proof_p95_ms": round(p95 * 1000, 2),
        "proof_size_median_bytes": round(statistics.median(sizes)),
        "proof_path_hashes_median": statistics.median(paths),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows per sink run")
    parser.add_argument("--batch", type=int, default=5000, help="rows per append (the sink's batch)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode (median reported)")
    parser.add_argument(
        "--verify-rows",
        type=int,
        default=int(os.environ.get("AUDIT_ROWS", "1000000")),
        help="rows of the trail verified and proved against (default: $AUDIT_ROWS or 1,000,000; "
        "make bench AUDIT_ROWS=200000 for a quicker run)",
    )
    parser.add_argument("--verify-repeat", type=int, default=3, help="verification runs per process count")
    parser.add_argument("--proofs", type=int, default=101, help="receipts generated on the verify trail")
    parser.add_argument(
        "--executemany-repeat", type=int, default=1, help="executemany runs (slow; context only)"
    )
    parser.add_argument(
        "--stream",
        default=INFERENCE.name,
        help="chain the sink runs append to (indexes are partial by stream)",
    )
    parser.add_argument(
        "--workers", type=int, default=min(2, os.cpu_count() or 1), help="verification processes"
    )
    parser.add_argument(
        "--sink-only",
        action="store_true",
        help="measure the sink and its peers only (no verification nor receipts on the large trail)",
    )
    parser.add_argument(
        "--out", type=Path, help="default .local/bench/audit.json (audit-sink.json with --sink-only)"
    )
    args = parser.parse_args()
    if args.out is None:
        args.out = ROOT / ".local" / "bench" / ("audit-sink.json" if args.sink_only else "audit.json")
    for name in ("repeat", "executemany_repeat", "verify_repeat"):
        if getattr(args, name) < 1:  # every figure below is a median of at least one run
            parser.error(f"--{name.replace('_', '-')} is at least 1")
    result = asyncio.run(run(args))
    print()
    print(
        f"audit sink with signed tree heads {result['copy_rows_per_second']:,} rows/s vs raw COPY of pre-hashed "
        f"rows {result['raw_copy_rows_per_second']:,} rows/s: ratio {result['sink_vs_raw_copy_ratio']} (medians); "
        f"a checkpoint of {CHECKPOINT_ROWS:,} rows {result['sink_checkpoint_ms_median']} ms (median)"
    )
    if not args.sink_only:
        print(
            f"receipts: p50 {result['proof_p50_ms']} ms, median size {result['proof_size_median_bytes']:,} bytes"
        )
    print(
        f"  paired: median of each round's sink/raw COPY {result['sink_vs_raw_copy_ratio_paired']} (rounds "
        f"{result['sink_vs_raw_copy_ratio_runs']}); against pre-encoded COPY tuples "
        f"{result['raw_copy_bytes_rows_per_second']:,} rows/s: {result['sink_vs_raw_copy_bytes_ratio_paired']}"
    )
    print(
        f"the sink with the Python loop alone {result['sink_python_loop_rows_per_second']:,} rows/s: the compiled "
        f"loops' sink {result['sink_compiled_vs_python_loop']}x that (medians); the sink process's CPU a row "
        f"{result['sink_cpu_us_per_row']} us against {result['sink_python_loop_cpu_us_per_row']} us"
    )
    print(
        f"audit sink   COPY {result['copy_rows_per_second']:>9,} rows/s   executemany {result['executemany_rows_per_second']:>9,} rows/s"
        f"   ratio {result['copy_vs_executemany_ratio']}x   (row by row {result['row_by_row_rows_per_second']:,} rows/s,"
        f" COPY {result['copy_vs_row_by_row_ratio']}x)"
    )
    for key, value in result.items():
        if key.startswith("verify_seconds") and key.endswith("_workers"):
            n = key.rsplit("_", 2)[1]
            print(
                f"verify {result['verify_rows']:,} rows: {value} s ({n} process(es), CPU "
                f"{result[f'verify_cpu_seconds_{n}_workers']} s + backend "
                f"{result[f'verify_backend_cpu_seconds_{n}_workers']} s); floor (COPY + SHA-256 of the bytes) "
                f"{result[f'floor_seconds_{n}_workers']} s, CPU {result[f'floor_cpu_seconds_{n}_workers']} s: "
                f"verify/floor {result[f'verify_vs_floor_{n}_workers']}x wall, "
                f"{result[f'verify_vs_floor_cpu_{n}_workers']}x CPU"
            )
    if not args.sink_only:
        n = args.workers
        print(
            f"verify with the Python loop alone: {result[f'verify_seconds_{n}_workers_python_loop']} s ({n} "
            f"process(es), CPU {result[f'verify_cpu_seconds_{n}_workers_python_loop']} s): "
            f"{result[f'python_loop_vs_compiled_{n}_workers']}x the compiled loop's time"
        )
    for target in result["targets"]:
        print(f"target {target['name']}: {'met' if target['met'] else 'NOT met'} ({target['value']})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
