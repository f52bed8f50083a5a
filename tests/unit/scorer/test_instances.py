"""Instances are checked against the dataset contract with precise errors, and become the exact arrays the
trainer feeds its ONNX model."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from tests.unit.scorer.support import CONTRACT, INPUT_ROWS, instances, serving, trainer_inputs
from tollgate_core.contracts import DatasetContract
from tollgate_scorer.instances import ColumnBatch, InstanceReader, InvalidInstances, example_instance
from tollgate_scorer.signature import Signature

GOOD = {"customer_id": "C1", "student": "Yes", "balance": 500.0, "income": 20000}


def reader() -> InstanceReader:
    return serving("1").reader


def violations(items: list[Any]) -> list[tuple[int, str, str]]:
    with pytest.raises(InvalidInstances) as caught:
        reader().read(items)
    return [(v["instance"], v["field"], v["rule"]) for v in caught.value.violations]


def test_valid_instances_become_the_trainers_arrays() -> None:
    batch = instances(INPUT_ROWS)
    feeds = reader().read(batch)
    expected = trainer_inputs()  # the trainer's arrays for these rows, recorded by models/generate.py
    np.testing.assert_array_equal(feeds["numeric"], expected["numeric"])
    assert feeds["category"].tolist() == expected["category"].tolist()
    assert feeds["numeric"].dtype == np.float64 and feeds["category"].dtype == object


def test_single_row_uses_preallocated_arrays() -> None:
    first = reader().read([GOOD])
    second = reader().read([{**GOOD, "balance": 7.0}])
    assert first["numeric"] is second["numeric"]
    assert second["numeric"].tolist() == [[7.0, 20000.0]]


def test_missing_or_null_nullable_feature_is_imputed_by_the_model() -> None:
    no_income = {k: v for k, v in GOOD.items() if k != "income"}
    for item in (no_income, {**GOOD, "income": None}):
        feeds = reader().read([item])
        assert math.isnan(feeds["numeric"][0, 1])
    assert serving("1").run(reader().read([no_income])).predictions[0] in (True, False)


def test_every_broken_rule_is_reported_with_instance_field_and_rule() -> None:
    bad = [
        GOOD,
        {"customer_id": "C2", "student": "Maybe", "balance": -1.0, "income": 2e6},
        {"customer_id": 3, "student": None, "balance": "lots"},
        {"student": "No", "income": 1.0, "default": True, "colour": "red"},
        ["not", "an", "object"],
        {"student": 1, "balance": True, "income": float("inf")},
    ]
    assert violations(bad) == [
        (1, "balance", "minimum"),
        (1, "income", "maximum"),
        (1, "student", "category"),
        (2, "balance", "type"),
        (2, "student", "nullable"),
        (2, "customer_id", "type"),
        (3, "balance", "required"),
        (3, "default", "label_field"),
        (3, "colour", "unknown_field"),
        (4, "instance", "type"),
        (5, "balance", "type"),
        (5, "income", "type"),
        (5, "student", "type"),
    ]


def test_messages_name_the_value_and_the_bound() -> None:
    with pytest.raises(InvalidInstances) as caught:
        reader().read([GOOD, {**GOOD, "balance": 10001}])
    [violation] = caught.value.violations
    assert violation == {
        "field": "balance",
        "rule": "maximum",
        "message": "balance 10001 is above the maximum 10000",
        "value": 10001,
        "instance": 1,
    }
    assert str(caught.value) == "instance 1: balance 10001 is above the maximum 10000"


def test_indices_map_errors_to_request_positions() -> None:
    with pytest.raises(InvalidInstances) as caught:
        reader().read([GOOD, {**GOOD, "student": "x"}], indices=[4, 9])
    assert caught.value.violations[0]["instance"] == 9


def test_integer_and_boolean_features() -> None:
    toy = _toy_reader(
        [
            {"name": "count", "type": "integer", "minimum": 0, "maximum": 10},
            {"name": "flag", "type": "boolean", "nullable": True},
            {"name": "kind", "type": "category", "categories": ["a", "b"]},
        ],
        [{"name": "band", "type": "category", "categories": ["x"], "nullable": True}],
        numeric=["count", "flag"],
        category=["kind"],
    )
    feeds = toy.read(
        [{"count": 3, "flag": True, "kind": "a"}, {"count": 4.0, "flag": None, "kind": "b", "band": "x"}]
    )
    assert feeds["numeric"][0].tolist() == [3.0, 1.0]
    assert feeds["numeric"][1, 0] == 4.0 and math.isnan(feeds["numeric"][1, 1])
    with pytest.raises(InvalidInstances) as caught:
        toy.read([{"count": 2.5, "flag": 1, "kind": "a", "band": "y"}, {"count": 11, "kind": "a"}])
    assert [(v["instance"], v["field"], v["rule"]) for v in caught.value.violations] == [
        (0, "count", "type"),
        (0, "flag", "type"),
        (0, "band", "category"),
        (1, "count", "maximum"),
    ]


def test_a_signature_that_does_not_match_the_contract_is_refused() -> None:
    signature = serving("1").signature.model_copy(
        update={
            "inputs": [serving("1").signature.inputs[0].model_copy(update={"columns": ["balance", "wealth"]})]
        }
    )
    with pytest.raises(ValueError, match="wealth"):
        InstanceReader(CONTRACT, signature)


def test_example_instance_is_valid() -> None:
    assert reader().read([example_instance(CONTRACT)])


def _toy_reader(
    features: list[dict[str, Any]],
    attributes: list[dict[str, Any]],
    *,
    numeric: list[str],
    category: list[str],
) -> InstanceReader:
    """A reader for a small contract ``toy.v1`` (entity ``id``, label ``y``) and a model reading the given
    columns."""
    contract = DatasetContract.model_validate(
        {
            "contract": "toy",
            "version": 1,
            "entity_id": {"name": "id", "type": "string"},
            "label": {"name": "y", "type": "boolean", "task": "classification"},
            "features": features,
            "attributes": attributes,
        }
    )
    signature = Signature.model_validate(
        {
            "contract": "toy.v1",
            "contract_digest": contract.digest,
            "task": "classification",
            "inputs": [
                {"name": "numeric", "dtype": "double", "shape": [None, len(numeric)], "columns": numeric},
                {"name": "category", "dtype": "string", "shape": [None, len(category)], "columns": category},
            ],
            "outputs": [],
            "classes": [False, True],
            "positive_index": 1,
        }
    )
    return InstanceReader(contract, signature)


def _toy() -> InstanceReader:
    return _toy_reader(
        [
            {"name": "count", "type": "integer", "minimum": 0, "maximum": 10},
            {"name": "flag", "type": "boolean", "nullable": True},
            {"name": "amount", "type": "number", "minimum": -5.0, "nullable": True},
            {"name": "kind", "type": "category", "categories": ["a", "b"]},
            {"name": "band", "type": "category", "categories": ["x", "z"], "nullable": True},
            {"name": "unused", "type": "number", "nullable": True, "maximum": 3},
        ],
        [{"name": "email", "type": "string", "nullable": True}],
        numeric=["flag", "count", "amount"],
        category=["band", "kind"],
    )


# Values that break a rule, or are edge cases the column reader must get exactly right, per field.
ODD: dict[str, list[Any]] = {
    "id": [7, None, True],
    "count": [2.5, 3.0, -1, 11, None, True, "4", 1e300, float("inf")],
    "flag": [1, 0.0, None, "true", False],
    "amount": [None, -6, -5, float("inf"), "1.5", False, 2**70],
    "kind": [None, "c", 1, "a"],
    "band": [None, "y", 3, "z"],
    "unused": [4, None, "x", True, 2.0],
    "email": [None, 5, "e@x"],
}


def _valid(rng: np.random.Generator, i: int) -> dict[str, Any]:
    return {
        "id": f"E{i}",
        "count": int(rng.integers(0, 11)),
        "flag": bool(rng.integers(0, 2)),
        "amount": float(rng.normal(10, 5)),
        "kind": "ab"[int(rng.integers(0, 2))],
        "band": "xz"[int(rng.integers(0, 2))],
        "unused": 1.5,
        "email": "a@b.c",
    }


def _outcome(read: Any, batch: list[Any]) -> Any:
    try:
        feeds = read(batch)
    except InvalidInstances as invalid:
        return ("invalid", invalid.violations)
    return ("ok", feeds["numeric"].tolist().__repr__(), feeds["category"].tolist())


def test_the_column_reader_agrees_with_the_row_reader() -> None:
    """Random batches, valid and with one or two odd values, missing keys, unknown fields or non-objects:
    the batch reader gives exactly the row reader's arrays or the row reader's violations."""
    toy = _toy()
    rng = np.random.default_rng(5)
    fast = 0
    for trial in range(600):
        batch: list[Any] = [_valid(rng, i) for i in range(int(rng.integers(8, 40)))]
        kind = trial % 6
        for _ in range(int(rng.integers(0, 3))):
            row = batch[int(rng.integers(0, len(batch)))]
            field = list(ODD)[int(rng.integers(0, len(ODD)))]
            if kind == 1:
                row.pop(field, None)
            elif kind == 2:
                row["surprise"] = 1
            elif kind == 3:
                row["y"] = True
            elif kind == 4:
                batch[int(rng.integers(0, len(batch)))] = ["count"]
            else:
                row[field] = ODD[field][int(rng.integers(0, len(ODD[field])))]
        fast += toy._batch.read(batch) is not None
        assert _outcome(toy.read, batch) == _outcome(toy.read_rows, batch), batch
    assert fast > 100  # the column reader did answer most clean batches itself


def test_a_clean_batch_is_read_by_columns() -> None:
    batch = instances(50)
    assert reader()._batch.read(batch) is not None
    np.testing.assert_array_equal(reader().read(batch)["numeric"], reader().read_rows(batch)["numeric"])


def _as_columns(rng: np.random.Generator, batch: list[dict[str, Any]]) -> ColumnBatch:
    """The batch as an OIP request would carry it: per field a list (JSON data) or, where the values allow,
    a numpy array of a randomly chosen dtype (binary data; None becomes NaN in a float array)."""
    names = list(dict.fromkeys(name for row in batch for name in row))
    columns: dict[str, Any] = {}
    for name in names:
        values = [row.get(name) for row in batch]
        kinds = {type(v) for v in values}
        choice = int(rng.integers(0, 3))
        if choice and kinds <= {bool}:
            columns[name] = np.array(values, dtype=bool)
        elif choice and kinds <= {int} and all(abs(v) < 2**62 for v in values):
            columns[name] = np.array(values, dtype=(np.int64, np.int16, np.float64)[choice % 3])
        elif (
            choice and kinds <= {int, float, type(None)} and all(v is None or abs(v) < 1e300 for v in values)
        ):
            floats = [np.nan if v is None else v for v in values]
            columns[name] = np.array(floats, dtype=np.float64 if choice == 1 else np.float32)
        else:
            columns[name] = values
    return ColumnBatch(columns, len(batch))


def test_columns_are_read_as_their_rows_would_be() -> None:
    """Random batches held as columns (lists and arrays of various dtypes, NaN for null, odd values, absent
    columns, unknown fields, the label): the column reader gives exactly the row reader's arrays, or the
    row reader's violations, for the rows the columns make."""
    toy = _toy()
    rng = np.random.default_rng(11)
    fast = 0
    for trial in range(600):
        batch: list[dict[str, Any]] = [_valid(rng, i) for i in range(int(rng.integers(8, 40)))]
        kind = trial % 5
        for _ in range(int(rng.integers(0, 3))):
            field = list(ODD)[int(rng.integers(0, len(ODD)))]
            if kind == 1:
                for row in batch:
                    row.pop(field, None)  # a column the request does not send
            elif kind == 2:
                batch[0]["surprise"] = 1
            elif kind == 3:
                batch[0]["y"] = True
            else:
                row = batch[int(rng.integers(0, len(batch)))]
                row[field] = ODD[field][int(rng.integers(0, len(ODD[field])))]
        names = list(dict.fromkeys(k for row in batch for k in row))
        columns = _as_columns(rng, [{k: r.get(k) for k in names} for r in batch])
        if trial % 7 == 6:  # a whole tensor of some other dtype
            odd = [
                np.ones(len(batch), dtype=bool),
                np.zeros(len(batch), dtype=np.int64),
                np.full(len(batch), 0.5),
                np.full(len(batch), np.inf, dtype=np.float32),
                np.full(len(batch), np.nan),
            ]
            columns.columns[names[int(rng.integers(0, len(names)))]] = odd[int(rng.integers(0, len(odd)))]
        fast += toy._batch.read_columns(columns) is not None
        assert _outcome(toy.read, columns) == _outcome(toy.read_rows, columns.rows()), columns.columns
    assert fast > 100


def test_nan_in_a_binary_column_is_null() -> None:
    toy = _toy()
    n = 8
    columns = {
        "id": [f"E{i}" for i in range(n)],
        "count": np.arange(n, dtype=np.int64),
        "flag": np.ones(n, dtype=bool),
        "amount": np.array([np.nan, *range(n - 1)], dtype=np.float64),
        "kind": ["a"] * n,
    }
    batch = ColumnBatch(columns, n)
    assert batch[0]["amount"] is None and batch.rows()[0]["amount"] is None
    assert math.isnan(toy.read(batch)["numeric"][0, 2])  # nullable: the model imputes it
    columns["count"] = np.array([np.nan, *range(n - 1)], dtype=np.float64)
    with pytest.raises(InvalidInstances) as refused:
        toy.read(ColumnBatch(columns, n))
    assert [(v["instance"], v["field"], v["rule"]) for v in refused.value.violations] == [
        (0, "count", "nullable")
    ]
