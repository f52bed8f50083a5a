"""Hash chain and verifier, in memory: the same rows the writer would COPY, read back as the verifier
selects them, tampered with in every way the verifier must name. Every test runs twice: with the compiled
hot loop (tollgate_audit_native) accepting rows, and with the Python loop alone."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.audit_support import compiled_or_python, inference_entry
from tollgate_audit_log import verify
from tollgate_audit_log.canonical import (
    Head,
    chain_records,
    content_hash,
    genesis_hash,
    iter_chain,
    link,
    micros,
)
from tollgate_audit_log.merkle import merkle_root
from tollgate_audit_log.signing import Signer, Statement
from tollgate_audit_log.verify import ChainChecker, CheckpointRecord

STREAM = "inference"


@pytest.fixture(autouse=True, params=["compiled", "python"])
def hot_loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    return compiled_or_python(request, monkeypatch, verify, "accept_rows")


RECORDED = datetime(2026, 2, 1, 12, 0, 0, 123456, tzinfo=UTC)


def as_selected(record: tuple[Any, ...]) -> tuple[Any, ...]:
    """A COPY record as VERIFY_SQL returns it (timestamps as microseconds, no stream column)."""
    # COPY_COLUMNS order: stream, seq .. event_type, occurred_at, recorded_at, request_id .. row_hash
    return (
        *record[1:7],
        micros(record[7]),
        micros(record[8]),
        *record[9:],
    )


def build(n: int) -> list[tuple[Any, ...]]:
    records, _, _ = chain_records(
        STREAM, [inference_entry(i) for i in range(n)], 0, genesis_hash(STREAM), RECORDED
    )
    return [as_selected(r) for r in records]


def checkpoints(rows: list[tuple[Any, ...]], size: int, signer: Signer) -> list[CheckpointRecord]:
    out = []
    for first in range(0, len(rows), size):
        part = rows[first : first + size]
        st = Statement(
            STREAM,
            part[0][0],
            part[-1][0],
            merkle_root([r[16] for r in part]),
            part[-1][16],
            RECORDED,
            signer.key_id,
        )
        out.append(CheckpointRecord(len(out) + 1, st, signer.sign(st)))
    return out


def check(
    rows: list[tuple[Any, ...]],
    cps: list[CheckpointRecord] = (),
    signer: Signer | None = None,  # type: ignore[assignment]
    chunk: int = 37,
) -> ChainChecker:
    trusted = {signer.key_id: signer.public_key} if signer else {}
    checker = ChainChecker(STREAM, cps, trusted)
    for i in range(0, len(rows), chunk):
        if not checker.feed(rows[i : i + chunk]):
            break
    checker.finish()
    return checker


def replace(row: tuple[Any, ...], index: int, value: Any) -> tuple[Any, ...]:
    return (*row[:index], value, *row[index + 1 :])


@pytest.fixture(scope="module")
def rows() -> list[tuple[Any, ...]]:
    return build(500)


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer(Ed25519PrivateKey.generate())


def test_chain_links_every_row_and_matches_the_documented_hash(rows: list[tuple[Any, ...]]) -> None:
    prev = genesis_hash(STREAM)
    for r in rows:
        assert content_hash(STREAM, *r[:13], r[13]) == r[14]
        assert r[15] == prev and link(prev, r[14]) == r[16]
        prev = r[16]
    assert [r[0] for r in rows] == list(range(1, 501))


def test_chaining_continues_from_a_head_and_is_deterministic() -> None:
    entries = [inference_entry(i) for i in range(10)]
    whole, seq, head = chain_records(STREAM, entries, 0, genesis_hash(STREAM), RECORDED)
    first, seq1, head1 = chain_records(STREAM, entries[:4], 0, genesis_hash(STREAM), RECORDED)
    rest, seq2, head2 = chain_records(STREAM, entries[4:], seq1, head1, RECORDED)
    assert first + rest == whole and (seq2, head2) == (seq, head) == (10, whole[-1][17])


def test_lazy_chaining_yields_the_same_rows_and_moves_the_head_only_when_done() -> None:
    entries = [inference_entry(i) for i in range(10)]
    whole, seq, last = chain_records(STREAM, entries, 0, genesis_hash(STREAM), RECORDED)
    head = Head(0, genesis_hash(STREAM))
    rows = iter_chain(STREAM, entries, head, RECORDED)
    taken = [next(rows) for _ in range(3)]
    assert (head.seq, head.hash) == (0, genesis_hash(STREAM))  # a statement that stopped part-way
    assert taken + list(rows) == whole and (head.seq, head.hash) == (seq, last)


def test_same_rows_in_another_stream_hash_differently() -> None:
    entries = [inference_entry(1)]
    a, _, _ = chain_records("a", entries, 0, genesis_hash("a"), RECORDED)
    b, _, _ = chain_records("b", entries, 0, genesis_hash("b"), RECORDED)
    assert a[0][15:] != b[0][15:]


def test_intact_chain_verifies(rows: list[tuple[Any, ...]], signer: Signer) -> None:
    checker = check(rows, checkpoints(rows, 100, signer), signer)
    assert checker.problem is None and checker.rows == 500 and checker.checkpoints_verified == 5


def test_timestamps_are_exact_microseconds() -> None:
    moment = datetime(2262, 4, 11, 23, 47, 16, 854775, tzinfo=UTC)
    assert micros(moment) == 9223372036854775
    assert micros(datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)) == -1


TAMPER = {
    "envelope byte": (
        lambda r: replace(r, 13, r[13].replace('"route":"champion"', '"route":"champioN"')),
        "content_changed",
    ),
    "index column": (lambda r: replace(r, 10, "another-model"), "content_changed"),
    "timestamp": (lambda r: replace(r, 6, r[6] + 1), "content_changed"),
    "kafka offset": (lambda r: replace(r, 4, r[4] + 1), "content_changed"),
    "row hash": (lambda r: replace(r, 16, bytes(32)), "row_hash_mismatch"),
    "prev hash": (lambda r: replace(r, 15, bytes(32)), "link_broken"),
}


@pytest.mark.parametrize(("tamper", "kind"), TAMPER.values(), ids=TAMPER.keys())
def test_changed_row_is_named(rows: list[tuple[Any, ...]], tamper: Any, kind: str) -> None:
    bad = list(rows)
    bad[241] = tamper(bad[241])
    checker = check(bad)
    assert checker.problem is not None
    assert (checker.problem.seq, checker.problem.kind) == (242, kind)
    assert checker.rows == 241


def test_deleted_row_is_named(rows: list[tuple[Any, ...]]) -> None:
    checker = check(rows[:99] + rows[100:])
    assert checker.problem is not None and (checker.problem.seq, checker.problem.kind) == (100, "missing")


def test_swapped_rows_are_named_at_the_first_position(rows: list[tuple[Any, ...]]) -> None:
    bad = list(rows)
    bad[300], bad[310] = replace(rows[310], 0, 301), replace(rows[300], 0, 311)
    checker = check(bad)
    assert checker.problem is not None and (checker.problem.seq, checker.problem.kind) == (301, "misplaced")


def test_truncation_is_caught_only_with_a_checkpoint(rows: list[tuple[Any, ...]], signer: Signer) -> None:
    assert check(rows[:-5]).problem is None  # without a signed statement the end of a chain is unknown
    checker = check(rows[:-5], checkpoints(rows, 250, signer), signer)
    assert checker.problem is not None and (checker.problem.seq, checker.problem.kind) == (496, "truncated")


def test_rehashed_chain_is_caught_by_the_checkpoint_root(rows: list[tuple[Any, ...]], signer: Signer) -> None:
    cps = checkpoints(rows, 200, signer)
    bad = list(rows[:350])
    prev = bad[-1][16]
    for r in rows[350:]:  # change seq 351 and recompute every hash after it: a consistent chain again
        envelope = r[13].replace("champion", "shadow") if r[0] == 351 else r[13]
        content = content_hash(STREAM, *r[:13], envelope)
        row = link(prev, content)
        bad.append((*r[:13], envelope, content, prev, row))
        prev = row
    checker = check(bad, cps, signer)
    assert checker.problem is not None
    assert (checker.problem.seq, checker.problem.kind) == (201, "checkpoint_mismatch")
    assert checker.checkpoints_verified == 1
    assert checker.rows == 400  # read up to the end of the checkpoint that failed, then stopped


def test_bad_or_missing_checkpoints_are_named(rows: list[tuple[Any, ...]], signer: Signer) -> None:
    cps = checkpoints(rows, 100, signer)
    forged = list(cps)
    forged[2] = CheckpointRecord(3, forged[2].statement, bytes(64))
    checker = check(rows, forged, signer)
    assert checker.problem is not None and (checker.problem.seq, checker.problem.kind) == (
        201,
        "checkpoint_signature",
    )
    checker = check(rows, cps[:1] + cps[2:], signer)
    assert checker.problem is not None and (checker.problem.seq, checker.problem.kind) == (
        101,
        "checkpoint_gap",
    )
    stranger = Signer(Ed25519PrivateKey.generate())
    checker = check(rows, cps, stranger)
    assert checker.problem is not None and (checker.problem.seq, checker.problem.kind) == (
        1,
        "checkpoint_signature",
    )


def test_first_problem_wins_over_later_ones(rows: list[tuple[Any, ...]]) -> None:
    bad = list(rows)
    bad[400] = replace(bad[400], 16, bytes(32))
    bad = bad[:49] + bad[50:]
    checker = check(bad)
    assert checker.problem is not None and (checker.problem.seq, checker.problem.kind) == (50, "missing")
