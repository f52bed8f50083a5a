"""One category-key rule: the keys the trainer writes into a reference profile are the keys the monitor
looks live values up with."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tollgate_core.reference import category_key, label_key
from tollgate_monitor.drift import CategoryLayout
from tollgate_trainer.evaluate import segment_keys
from tollgate_trainer.features import LabelEncoding
from tollgate_trainer.reference import summarize_category

# A value and the key it has in a profile; None: a null, which has no key.
CASES = [
    (True, "true"),
    (False, "false"),
    (np.True_, "true"),
    (np.False_, "false"),
    (3, "3"),
    (np.int64(3), "3"),
    (2.5, "2.5"),
    (3.0, "3.0"),
    ("north", "north"),
    ("", ""),
    (None, None),
]


def trainer_key(value: object) -> str | None:
    """The key under which the trainer's reference profile counts ``value`` (None: counted as a null)."""
    summary = summarize_category(pd.Series([value], dtype=object), ())
    assert len(summary.frequencies) == summary.count
    return next(iter(summary.frequencies), None)


def monitor_key(value: object, known: tuple[str, ...]) -> str | None:
    """The profile key the monitor counts a live ``value`` under (None: the null column), given the keys
    the profile lists; a value matching none of them fails the test."""
    layout = CategoryLayout.build(["field"], [summarize_category(pd.Series(list(known)), known)])
    column = int(np.flatnonzero(layout.count([[value]])[0])[0])
    assert column != layout.width - 2, f"{value!r} counted as unseen"
    return None if column == layout.width - 1 else layout.values[0][column]


@pytest.mark.parametrize(("value", "key"), CASES)
def test_trainer_and_monitor_give_a_value_the_same_key(value: object, key: str | None) -> None:
    known = tuple(dict.fromkeys(k for _, k in CASES if k is not None))
    assert trainer_key(value) == key
    assert monitor_key(value, known) == key


@pytest.mark.parametrize(("value", "key"), [c for c in CASES if c[1] is not None])
def test_category_key(value: object, key: str) -> None:
    assert category_key(value) == key


def test_segment_keys_use_the_profile_keys_and_name_nulls() -> None:
    values = [v for v, _ in CASES] + [float("nan")]
    expected = ["null" if k is None else k for _, k in CASES] + ["null"]
    assert segment_keys(pd.Series(values, dtype=object)).tolist() == expected


@pytest.mark.parametrize(
    ("value", "key"),
    [(1, "1"), (1.0, "1"), (np.float64(0.0), "0"), (2.5, "2.5"), (True, "true"), ("Yes", "Yes")],
)
def test_label_key_names_a_whole_number_as_an_integer(value: object, key: str) -> None:
    assert label_key(value) == key


def test_the_trainer_encodes_labels_by_label_key() -> None:
    """The monitor keys incoming labels with label_key; the trainer's classes must be found by it too."""
    encoding = LabelEncoding(classes=(0, 1), positive_index=1)
    assert encoding.encode([1.0, 0, np.int64(1)]).tolist() == [1, 0, 1]
    assert label_key(1.0) == label_key(encoding.classes[1])
