"""The spool: order across segments and restarts, the bound, and a torn last record."""

from __future__ import annotations

from pathlib import Path

from tollgate_scorer.spool import Spool, SpoolRecord, encode


def records(start: int, n: int) -> list[SpoolRecord]:
    return [
        (b"model", f"value-{i:04d}".encode() * 10, b"tp" if i % 2 else None) for i in range(start, start + n)
    ]


def drain(spool: Spool, chunk: int = 7) -> list[SpoolRecord]:
    out: list[SpoolRecord] = []
    while not spool.empty:
        got, cursor = spool.peek(chunk)
        out += got
        spool.commit(cursor)
    return out


def test_order_across_segments_and_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1_000_000, segment_bytes=500)
    assert spool.append(records(0, 40)) == 40
    assert spool.append(records(40, 40)) == 40
    assert len(list(tmp_path.glob("*.seg"))) >= 2
    got, cursor = spool.peek(15)
    assert got == records(0, 15)
    spool.commit(cursor)
    spool.close()
    reopened = Spool(tmp_path, 1_000_000, segment_bytes=500)
    assert reopened.records == 65
    assert drain(reopened) == records(15, 65)
    assert reopened.bytes == 0
    reopened.append(records(80, 3))
    assert drain(reopened) == records(80, 3)


def test_peek_does_not_consume(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1_000_000)
    spool.append(records(0, 5))
    first, _ = spool.peek(3)
    again, _ = spool.peek(3)
    assert first == again == records(0, 3) and spool.records == 5


def test_bound_appends_the_prefix_that_fits(tmp_path: Path) -> None:
    batch = records(0, 20)
    sizes = [len(encode([r])) for r in batch]
    spool = Spool(tmp_path, sum(sizes[:10]) + 5)
    assert spool.append(batch[:4]) == 4
    assert spool.append(batch[4:14]) == 6
    assert spool.append(batch[10:11]) == 0
    assert spool.bytes == sum(sizes[:10])
    _, cursor = spool.peek(3)
    spool.commit(cursor)
    assert spool.append(batch[10:15]) == 3


def test_torn_last_record_is_cut_away_on_open(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1_000_000)
    spool.append(records(0, 3))
    spool.close()
    [segment] = tmp_path.glob("*.seg")
    with open(segment, "ab") as fh:
        fh.write(b"\x05\x00\x00\x00\x00\x00")  # a header cut short by a crash
    reopened = Spool(tmp_path, 1_000_000)
    assert reopened.records == 3
    reopened.append(records(3, 1))
    assert drain(reopened) == records(0, 4)
