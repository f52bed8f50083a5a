"""Tampering with a large audit table (200,000 rows, 4 signed checkpoints) as an attacker with database
access would: the table's owner disables the triggers and changes rows. Every scenario runs inside a
transaction that is rolled back afterwards, and the verifier, reading the tampered snapshot, must name the
first bad seq and why."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tests.audit_support import compiled_or_python, ensure_writer_role, fill, fresh_database
from tollgate_audit_log import verify
from tollgate_audit_log.app import prepare_database
from tollgate_audit_log.canonical import content_hash, link
from tollgate_audit_log.merkle import Frontier, merkle_root
from tollgate_audit_log.publish import PublishedHead, WitnessDir, head_event
from tollgate_audit_log.settings import AuditLogSettings
from tollgate_audit_log.signing import Signer, Statement, public_bytes
from tollgate_audit_log.verify import StreamReport, verify_database, verify_stream

STREAM = "tamper"
ROWS = 200_000
CHECKPOINT = 50_000
COLUMNS = (
    "stream, seq, event_id, topic, kafka_partition, kafka_offset, event_type, occurred_at, recorded_at, "
    "request_id, entity_id, model, version, trace_id, envelope, content_hash, prev_hash, row_hash"
)


@pytest.fixture(autouse=True, params=["compiled", "python"])
def read_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice: rows read by the compiled COPY loop (and by the cursor from the first row it does
    not accept), and by the cursor alone ("python")."""
    return compiled_or_python(request, monkeypatch, verify, "copy_rows")


@pytest.fixture(scope="module")
async def database_url() -> AsyncIterator[str]:
    """This module's own database (it counts and verifies whole tables)."""
    async with fresh_database("tamper") as dsn:
        yield dsn


class _Rollback(Exception):
    pass


@pytest.fixture(scope="module")
async def trail(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The big table, filled once through the real writer (COPY) as the writer role, with checkpoints."""
    settings = AuditLogSettings(database_url=database_url)
    role_problem = await ensure_writer_role()
    await prepare_database(settings)
    dsn = settings.writer_dsn() if role_problem is None else database_url
    signer = Signer(Ed25519PrivateKey.generate())
    witness = WitnessDir(tmp_path_factory.mktemp("witness"))
    conn = await asyncpg.connect(dsn)
    try:
        writer = await fill(conn, STREAM, ROWS)
        await writer.register_key(signer)
        while (cp := await writer.checkpoint(signer, max_rows=CHECKPOINT)) is not None:
            witness.append(head_event(cp))  # published outside the database, as the service does
    finally:
        await conn.close()
    return {
        "owner": database_url,
        "trusted": {signer.key_id: signer.public_key},
        "signer": signer,
        "published": {STREAM: witness.heads(STREAM)},
    }


@pytest.fixture
async def owner(trail: dict[str, Any]) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(trail["owner"])
    yield conn
    await conn.close()


async def tampered(
    conn: asyncpg.Connection,
    trusted: dict[str, Ed25519PublicKey],
    *statements: tuple[Any, ...],
    published: dict[str, list[PublishedHead]] | None = None,
) -> StreamReport:
    """Run the attacker's statements with the triggers off, verify the result, roll everything back."""
    reports = await tampered_both(conn, trusted, *statements, published=published)
    return reports[1] if published is not None else reports[0]


async def tampered_both(
    conn: asyncpg.Connection,
    trusted: dict[str, Ed25519PublicKey],
    *statements: tuple[Any, ...],
    published: dict[str, list[PublishedHead]] | None = None,
) -> tuple[StreamReport, StreamReport | None]:
    """The verifier's report without and with the published heads, on the same tampered snapshot."""
    reports: list[StreamReport | None] = []
    try:
        async with conn.transaction():
            await conn.execute("ALTER TABLE audit_events DISABLE TRIGGER USER")
            await conn.execute("ALTER TABLE audit_checkpoints DISABLE TRIGGER USER")
            for sql, *args in statements:
                await conn.execute(sql, *args)
            reports.append(await verify_stream(conn, STREAM, trusted))
            reports.append(
                await verify_stream(conn, STREAM, trusted, published=published)
                if published is not None
                else None
            )
            raise _Rollback
    except _Rollback:
        pass
    first, second = reports
    assert first is not None
    return first, second


async def test_intact_trail_verifies_with_row_count(trail: dict[str, Any]) -> None:
    conn = await asyncpg.connect(trail["owner"])
    try:
        report = await verify_database(conn, streams=[STREAM], trusted=trail["trusted"])
    finally:
        await conn.close()
    assert report.ok, report.summary()
    assert report.rows == ROWS
    assert report.streams[0].checkpoints_verified == ROWS // CHECKPOINT
    assert report.summary().startswith(f"OK: {ROWS} rows")


FLIPS = {
    # one byte of the envelope: a digit of a number in the payload (the JSON stays valid)
    "envelope": (
        "UPDATE audit_events SET envelope = convert_from(set_byte(convert_to(envelope, 'UTF8'), "
        "strpos(envelope, '\"income\":') + 9, get_byte(convert_to(envelope, 'UTF8'), strpos(envelope, '\"income\":') + 9) # 1), 'UTF8') "
        "WHERE stream = $1 AND seq = $2",
        "content_changed",
    ),
    "model": (
        "UPDATE audit_events SET model = overlay(model placing 'j' from length(model) for 1) WHERE stream = $1 AND seq = $2",
        "content_changed",
    ),
    "occurred_at": (
        "UPDATE audit_events SET occurred_at = occurred_at + interval '1 microsecond' WHERE stream = $1 AND seq = $2",
        "content_changed",
    ),
    "content_hash": (
        "UPDATE audit_events SET content_hash = set_byte(content_hash, 7, get_byte(content_hash, 7) # 1) "
        "WHERE stream = $1 AND seq = $2",
        "content_changed",
    ),
    "row_hash": (
        "UPDATE audit_events SET row_hash = set_byte(row_hash, 0, get_byte(row_hash, 0) # 1) WHERE stream = $1 AND seq = $2",
        "row_hash_mismatch",
    ),
    "prev_hash": (
        "UPDATE audit_events SET prev_hash = set_byte(prev_hash, 31, get_byte(prev_hash, 31) # 128) "
        "WHERE stream = $1 AND seq = $2",
        "link_broken",
    ),
}


@pytest.mark.parametrize(("sql", "kind"), FLIPS.values(), ids=FLIPS.keys())
async def test_flipped_byte_is_named(
    owner: asyncpg.Connection, trail: dict[str, Any], sql: str, kind: str
) -> None:
    report = await tampered(owner, trail["trusted"], (sql, STREAM, 123_457))
    assert (report.ok, report.first_bad_seq, report.problem) == (False, 123_457, kind), report
    assert report.rows == 123_456  # every row before it verified


COLUMN_TYPES = {
    # values kept (every int fits): read by the cursor as the new type says, the same JSON, no problem
    "bigint partition": ("ALTER TABLE audit_events ALTER COLUMN kafka_partition TYPE bigint", None, None),
    # what queries show changes (an int becomes a float): the first row is named
    "float offset": (
        "ALTER TABLE audit_events ALTER COLUMN kafka_offset TYPE double precision",
        1,
        "content_changed",
    ),
}


@pytest.mark.parametrize(("sql", "seq", "kind"), COLUMN_TYPES.values(), ids=COLUMN_TYPES.keys())
async def test_a_column_of_another_type_is_read_as_that_type(
    owner: asyncpg.Connection, trail: dict[str, Any], sql: str, seq: int | None, kind: str | None
) -> None:
    """The compiled COPY loop decodes VERIFY_SQL's types only: with a column altered, the cursor and the
    Python loop read the rows as they are now, as a query shows them."""
    report = await tampered(owner, trail["trusted"], ("DROP VIEW audit_trail",), (sql,))
    assert (report.first_bad_seq, report.problem) == (seq, kind), report
    assert report.rows == (ROWS if seq is None else seq - 1)


async def test_deleted_row_is_named(owner: asyncpg.Connection, trail: dict[str, Any]) -> None:
    report = await tampered(
        owner, trail["trusted"], ("DELETE FROM audit_events WHERE stream = $1 AND seq = $2", STREAM, 77_777)
    )
    assert (report.first_bad_seq, report.problem) == (77_777, "missing"), report


async def test_swapped_rows_are_named(owner: asyncpg.Connection, trail: dict[str, Any]) -> None:
    i, j = 150_000, 150_010
    report = await tampered(
        owner,
        trail["trusted"],
        (
            "CREATE TEMP TABLE swapped ON COMMIT DROP AS SELECT * FROM audit_events WHERE stream = $1 AND seq IN ($2, $3)",
            STREAM,
            i,
            j,
        ),
        ("DELETE FROM audit_events WHERE stream = $1 AND seq IN ($2, $3)", STREAM, i, j),
        (
            f"INSERT INTO audit_events ({COLUMNS}) SELECT stream, CASE seq WHEN $1 THEN $2::bigint ELSE $1::bigint END, "
            f"{COLUMNS.split(', ', 2)[2]} FROM swapped",
            i,
            j,
        ),
    )
    assert (report.first_bad_seq, report.problem) == (i, "misplaced"), report
    assert report.detail is not None and f"belongs at seq {j}" in report.detail


async def test_rows_deleted_at_the_end_are_caught_by_the_checkpoint(
    owner: asyncpg.Connection, trail: dict[str, Any]
) -> None:
    report = await tampered(
        owner, trail["trusted"], ("DELETE FROM audit_events WHERE stream = $1 AND seq > $2", STREAM, ROWS - 3)
    )
    assert (report.first_bad_seq, report.problem) == (ROWS - 2, "truncated"), report


async def test_rehashed_chain_is_caught_by_the_signed_root(
    owner: asyncpg.Connection, trail: dict[str, Any]
) -> None:
    """An attacker who changes a row and recomputes every hash after it keeps the chain consistent; the
    signed checkpoint covering it no longer matches."""
    k = ROWS - 10
    rows = await owner.fetch(
        "SELECT seq, event_id::text AS event_id, topic, kafka_partition, kafka_offset, event_type, "
        "(extract(epoch FROM occurred_at) * 1000000)::bigint AS occ, (extract(epoch FROM recorded_at) * 1000000)::bigint AS rec, "
        "request_id, entity_id, model, version, trace_id, envelope FROM audit_events WHERE stream = $1 AND seq >= $2 ORDER BY seq",
        STREAM,
        k,
    )
    prev = bytes(
        await owner.fetchval(
            "SELECT row_hash FROM audit_events WHERE stream = $1 AND seq = $2", STREAM, k - 1
        )
    )
    updates: list[tuple[Any, ...]] = []
    for r in rows:
        envelope = (
            r["envelope"].replace('"route":"champion"', '"route":"canary"')
            if r["seq"] == k
            else r["envelope"]
        )
        content = content_hash(
            STREAM,
            r["seq"],
            r["event_id"],
            r["topic"],
            r["kafka_partition"],
            r["kafka_offset"],
            r["event_type"],
            r["occ"],
            r["rec"],
            r["request_id"],
            r["entity_id"],
            r["model"],
            r["version"],
            r["trace_id"],
            envelope,
        )
        row = link(prev, content)
        updates.append(
            (
                "UPDATE audit_events SET envelope = $3, content_hash = $4, prev_hash = $5, row_hash = $6 "
                "WHERE stream = $1 AND seq = $2",
                STREAM,
                r["seq"],
                envelope,
                content,
                prev,
                row,
            )
        )
        prev = row
    report = await tampered(owner, trail["trusted"], *updates)
    assert (report.first_bad_seq, report.problem) == (ROWS - CHECKPOINT + 1, "checkpoint_mismatch"), report


async def test_forged_or_missing_checkpoints_are_named(
    owner: asyncpg.Connection, trail: dict[str, Any]
) -> None:
    forged = await tampered(
        owner,
        trail["trusted"],
        (
            "UPDATE audit_checkpoints SET signature = set_byte(signature, 3, get_byte(signature, 3) # 1) "
            "WHERE stream = $1 AND first_seq = $2",
            STREAM,
            CHECKPOINT + 1,
        ),
    )
    assert (forged.first_bad_seq, forged.problem) == (CHECKPOINT + 1, "checkpoint_signature"), forged
    gap = await tampered(
        owner,
        trail["trusted"],
        ("DELETE FROM audit_checkpoints WHERE stream = $1 AND first_seq = $2", STREAM, CHECKPOINT + 1),
    )
    assert (gap.first_bad_seq, gap.problem) == (CHECKPOINT + 1, "checkpoint_gap"), gap
    other_key = Signer(Ed25519PrivateKey.generate())
    untrusted = await verify_with(owner, {other_key.key_id: other_key.public_key})
    assert (untrusted.first_bad_seq, untrusted.problem) == (1, "checkpoint_signature"), untrusted


async def verify_with(conn: asyncpg.Connection, trusted: dict[str, Ed25519PublicKey]) -> StreamReport:
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await verify_stream(conn, STREAM, trusted)


async def test_parallel_verification_names_the_same_first_bad_seq(
    trail: dict[str, Any], read_path: str
) -> None:
    """Several processes, each over a range of seqs aligned to checkpoints, in one exported snapshot."""
    owner = trail["owner"]
    conn = await asyncpg.connect(owner)
    try:
        cases = {
            "flip": (
                "UPDATE audit_events SET model = 'forged' WHERE stream = $1 AND seq = 2500",
                2500,
                "content_changed",
            ),
            "boundary": ("DELETE FROM audit_events WHERE stream = $1 AND seq = 1000", 1000, "missing"),
            "tail": ("DELETE FROM audit_events WHERE stream = $1 AND seq > 2998", 2999, "truncated"),
        }
        for name, (sql, _, _) in cases.items():
            writer = await fill(conn, f"parallel-{name}-{read_path}", 3000)
            await writer.register_key(trail["signer"])
            while await writer.checkpoint(trail["signer"], max_rows=1000) is not None:
                pass
            async with conn.transaction():  # the attacker's change, committed this time
                await conn.execute("ALTER TABLE audit_events DISABLE TRIGGER USER")
                await conn.execute(sql, f"parallel-{name}-{read_path}")
                await conn.execute("ALTER TABLE audit_events ENABLE TRIGGER USER")
        streams = [STREAM, *(f"parallel-{name}-{read_path}" for name in cases)]
        parallel = await verify_database(
            conn, streams=streams, trusted=trail["trusted"], workers=2, dsn=owner, min_rows_per_worker=1000
        )
        single = await verify_database(conn, streams=streams[1:], trusted=trail["trusted"])
    finally:
        await conn.close()
    intact, *tampered = parallel.streams
    assert intact.ok and intact.rows == ROWS and intact.checkpoints_verified == ROWS // CHECKPOINT
    for report, alone, (name, (_, seq, kind)) in zip(tampered, single.streams, cases.items(), strict=True):
        assert (
            (report.first_bad_seq, report.problem) == (seq, kind) == (alone.first_bad_seq, alone.problem)
        ), name
        assert report.rows == seq - 1
    assert parallel.first_bad is not None and parallel.first_bad.stream == f"parallel-flip-{read_path}"


# ---------------------------------------------------------------------------------------------- published heads


async def test_intact_trail_verifies_against_its_published_heads(trail: dict[str, Any]) -> None:
    conn = await asyncpg.connect(trail["owner"])
    try:
        report = await verify_database(
            conn,
            streams=[STREAM],
            trusted=trail["trusted"],
            published=trail["published"],
            published_from="witness",
        )
    finally:
        await conn.close()
    assert report.ok, report.summary()
    assert report.streams[0].published_heads == ROWS // CHECKPOINT and report.published == "witness"


async def test_rows_deleted_with_their_checkpoints_are_caught_by_the_published_heads(
    owner: asyncpg.Connection, trail: dict[str, Any]
) -> None:
    """Rows 150,001..200,000 deleted together with the checkpoint that sealed them: the database alone looks
    like an intact, shorter trail; the head published outside it names the missing range."""
    cut = ROWS - CHECKPOINT
    alone, compared = await tampered_both(
        owner,
        trail["trusted"],
        ("DELETE FROM audit_events WHERE stream = $1 AND seq > $2", STREAM, cut),
        ("DELETE FROM audit_checkpoints WHERE stream = $1 AND first_seq > $2", STREAM, cut),
        published=trail["published"],
    )
    assert alone.ok and alone.rows == cut  # what an attacker counts on
    assert compared is not None
    assert (compared.ok, compared.first_bad_seq, compared.problem) == (False, cut + 1, "truncated"), compared
    assert f"seq {cut + 1}..{ROWS} missing" in (compared.detail or "")


async def test_a_deleted_checkpoint_alone_is_named(owner: asyncpg.Connection, trail: dict[str, Any]) -> None:
    report = await tampered(
        owner,
        trail["trusted"],
        ("DELETE FROM audit_checkpoints WHERE stream = $1 AND first_seq > $2", STREAM, ROWS - CHECKPOINT),
        published=trail["published"],
    )
    assert (report.first_bad_seq, report.problem) == (ROWS - CHECKPOINT + 1, "checkpoint_deleted"), report


async def test_a_signing_key_substituted_in_the_database_is_not_trusted(
    owner: asyncpg.Connection, trail: dict[str, Any]
) -> None:
    """The attacker adds their key to audit_signing_keys and re-signs every checkpoint with it: the pinned
    key does not verify them (the verifier never takes keys from the table)."""
    attacker = Signer(Ed25519PrivateKey.generate())
    rows = await owner.fetch(
        "SELECT id, stream, first_seq, last_seq, merkle_root, head_hash, created_at, tree_root, prev_root, "
        "prev_statement FROM audit_checkpoints WHERE stream = $1 ORDER BY first_seq",
        STREAM,
    )
    updates: list[tuple[Any, ...]] = [
        (
            "INSERT INTO audit_signing_keys (key_id, algorithm, public_key) VALUES ($1, 'ed25519', $2)",
            attacker.key_id,
            public_bytes(attacker.public_key),
        )
    ]
    for r in rows:
        st = Statement(
            r["stream"], r["first_seq"], r["last_seq"], bytes(r["merkle_root"]), bytes(r["head_hash"]),
            r["created_at"], attacker.key_id, bytes(r["tree_root"]), bytes(r["prev_root"]),
            bytes(r["prev_statement"]) if r["prev_statement"] is not None else None,
        )  # fmt: skip
        updates.append(
            (
                "UPDATE audit_checkpoints SET key_id = $2, signature = $3 WHERE id = $1",
                r["id"],
                attacker.key_id,
                attacker.sign(st),
            )
        )
    report = await tampered(owner, trail["trusted"], *updates)
    assert (report.first_bad_seq, report.problem) == (1, "checkpoint_signature"), report
    assert f"unknown key {attacker.key_id}" in (report.detail or "")


async def test_rewrite_rehash_and_resign_with_a_new_key_is_caught(
    owner: asyncpg.Connection, trail: dict[str, Any]
) -> None:
    """The full attack: change a row, re-hash the chain after it, recompute the covering checkpoint's roots
    (range and tree, from the stored frontier) and re-sign it with the attacker's own key, registered in
    audit_signing_keys. Against the pinned key: the checkpoint's signature; against the published heads:
    the database's checkpoint is not the published one. Both name the covering checkpoint's first seq."""
    k = ROWS - 10
    covering = ROWS - CHECKPOINT + 1
    attacker = Signer(Ed25519PrivateKey.generate())
    updates, hashes = await rehash_from(owner, k)
    cp = await owner.fetchrow(
        "SELECT id, created_at, prev_root, prev_statement FROM audit_checkpoints WHERE stream = $1 AND first_seq = $2",
        STREAM,
        covering,
    )
    before = await owner.fetchrow(
        "SELECT frontier FROM audit_checkpoints WHERE stream = $1 AND last_seq = $2", STREAM, covering - 1
    )
    leaves = [
        bytes(r["row_hash"])
        for r in await owner.fetch(
            "SELECT row_hash FROM audit_events WHERE stream = $1 AND seq >= $2 AND seq < $3 ORDER BY seq",
            STREAM,
            covering,
            k,
        )
    ] + hashes
    tree = Frontier.from_bytes(covering - 1, bytes(before["frontier"]))
    tree.extend(leaves)
    st = Statement(
        STREAM, covering, ROWS, merkle_root(leaves), leaves[-1], cp["created_at"], attacker.key_id, tree.root(),
        bytes(cp["prev_root"]), bytes(cp["prev_statement"]),
    )  # fmt: skip
    updates += [
        (
            "INSERT INTO audit_signing_keys (key_id, algorithm, public_key) VALUES ($1, 'ed25519', $2)",
            attacker.key_id,
            public_bytes(attacker.public_key),
        ),
        (
            "UPDATE audit_checkpoints SET merkle_root = $2, head_hash = $3, tree_root = $4, key_id = $5, "
            "signature = $6, frontier = $7 WHERE id = $1",
            cp["id"],
            st.merkle_root,
            st.head_hash,
            st.tree_root,
            attacker.key_id,
            attacker.sign(st),
            tree.to_bytes(),
        ),
    ]
    alone, compared = await tampered_both(owner, trail["trusted"], *updates, published=trail["published"])
    assert (alone.first_bad_seq, alone.problem) == (covering, "checkpoint_signature"), alone
    assert compared is not None
    assert (compared.first_bad_seq, compared.problem) == (covering, "checkpoint_replaced"), compared


async def rehash_from(
    owner: asyncpg.Connection, k: int, stream: str = STREAM
) -> tuple[list[tuple[Any, ...]], list[bytes]]:
    """Statements that change row ``k`` of ``stream`` and re-hash every row after it; and the new row hashes."""
    rows = await owner.fetch(
        "SELECT seq, event_id::text AS event_id, topic, kafka_partition, kafka_offset, event_type, "
        "(extract(epoch FROM occurred_at) * 1000000)::bigint AS occ, (extract(epoch FROM recorded_at) * 1000000)::bigint AS rec, "
        "request_id, entity_id, model, version, trace_id, envelope FROM audit_events WHERE stream = $1 AND seq >= $2 ORDER BY seq",
        stream,
        k,
    )
    prev = bytes(
        await owner.fetchval(
            "SELECT row_hash FROM audit_events WHERE stream = $1 AND seq = $2", stream, k - 1
        )
    )
    updates: list[tuple[Any, ...]] = []
    hashes: list[bytes] = []
    for r in rows:
        envelope = (
            r["envelope"].replace('"route":"champion"', '"route":"canary"')
            if r["seq"] == k
            else r["envelope"]
        )
        content = content_hash(
            stream, r["seq"], r["event_id"], r["topic"], r["kafka_partition"], r["kafka_offset"], r["event_type"],
            r["occ"], r["rec"], r["request_id"], r["entity_id"], r["model"], r["version"], r["trace_id"], envelope,
        )  # fmt: skip
        row = link(prev, content)
        updates.append(
            (
                "UPDATE audit_events SET envelope = $3, content_hash = $4, prev_hash = $5, row_hash = $6 "
                "WHERE stream = $1 AND seq = $2",
                stream,
                r["seq"],
                envelope,
                content,
                prev,
                row,
            )
        )
        hashes.append(row)
        prev = row
    return updates, hashes


async def test_a_rewrite_inside_a_checkpoint_that_straddles_a_parallel_cut_is_caught(
    trail: dict[str, Any], read_path: str
) -> None:
    """Checkpoints 1..1000 and 1001..3000 with two processes: the cut must not fall inside the second one
    (it used to, and that checkpoint was then checked by neither process). A row rewritten and the chain
    re-hashed inside it is caught by its signed roots, in parallel as in one process."""
    conn = await asyncpg.connect(trail["owner"])
    stream = f"parallel-straddle-{read_path}"
    try:
        writer = await fill(conn, stream, 3000)
        assert await writer.checkpoint(trail["signer"], max_rows=1000) is not None
        assert await writer.checkpoint(trail["signer"], max_rows=2000) is not None
        updates, _ = await rehash_from(conn, 1200, stream)
        async with conn.transaction():
            await conn.execute("ALTER TABLE audit_events DISABLE TRIGGER USER")
            for sql, *args in updates:
                await conn.execute(sql, *args)
            await conn.execute("ALTER TABLE audit_events ENABLE TRIGGER USER")
        parallel = await verify_database(
            conn,
            streams=[stream],
            trusted=trail["trusted"],
            workers=2,
            dsn=trail["owner"],
            min_rows_per_worker=1000,
        )
        single = await verify_database(conn, streams=[stream], trusted=trail["trusted"])
    finally:
        await conn.close()
    for report in (parallel.streams[0], single.streams[0]):
        assert (report.first_bad_seq, report.problem) == (1001, "checkpoint_mismatch"), report
