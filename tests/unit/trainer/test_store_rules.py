"""The training store's rule for labels sent again: per entity and event time, the newest arrival."""

from __future__ import annotations

from tollgate_trainer.store import LabelKey, newest_per_key


def test_the_newest_arrival_of_an_entity_and_event_time_is_kept_in_place() -> None:
    rows = [
        (1, {"id": "a", "at": "t1", "y": 0}),
        (2, {"id": "b", "at": "t1", "y": 0}),
        (5, {"id": "a", "at": "t1", "y": 1}),  # a correction of row 1
        (3, {"id": "a", "at": "t2", "y": 0}),  # the same entity later: another observation
        (4, {"id": "c", "at": None, "y": 1}),
        (6, {"id": "c", "y": 0}),  # a missing time equals a null time
    ]
    kept, superseded = newest_per_key(rows, LabelKey("id", "at"))
    assert superseded == 2
    assert kept == [rows[1][1], rows[2][1], rows[3][1], rows[5][1]]


def test_without_an_event_time_the_entity_alone_is_the_key() -> None:
    rows = [(1, {"id": 7, "y": 0}), (2, {"id": "7", "y": 1}), (3, {"id": 7, "y": 1})]
    kept, superseded = newest_per_key(rows, LabelKey("id"))
    # 7 and "7" are different ids (JSON-typed keys); the two 7s are one observation.
    assert superseded == 1 and kept == [rows[1][1], rows[2][1]]


def test_no_key_keeps_every_row() -> None:
    rows = [(1, {"id": "a"}), (2, {"id": "a"})]
    assert newest_per_key(rows, None) == ([rows[0][1], rows[1][1]], 0)
