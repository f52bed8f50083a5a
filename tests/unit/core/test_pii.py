"""PII redaction takes any JSON value: lists and objects hash deterministically, never raise."""

from __future__ import annotations

from typing import Any

import pytest

from tollgate_core.contracts import ContractRegistry
from tollgate_core.pii import MASK, PiiRedactor, pii_hash

KEY = b"k" * 32


def _redactor() -> PiiRedactor:
    contract = ContractRegistry.from_directory(None).get("credit-default.v1")
    assert contract is not None and contract.pii_fields
    return PiiRedactor(contract, KEY)


@pytest.mark.parametrize(
    "value",
    [["x@example.com"], {"a": 1, "b": [1, 2]}, [], {}, [{"nested": ["deep", None, True]}], "x", 3, 2.5, True],
    ids=repr,
)
def test_any_json_value_in_a_pii_field_is_redacted(value: Any) -> None:
    redactor = _redactor()
    for name in redactor.actions:
        out = redactor.value(name, value)
        assert out is None or out == MASK or (isinstance(out, str) and len(out) == 64)
        assert redactor.value(name, value) == out  # cached or not, the same answer


def test_equal_objects_hash_equally_whatever_the_key_order_and_differ_from_their_elements() -> None:
    assert pii_hash(KEY, {"a": 1, "b": 2}) == pii_hash(KEY, {"b": 2, "a": 1})
    assert pii_hash(KEY, ["x"]) != pii_hash(KEY, "x")
    assert pii_hash(KEY, [1, 2]) != pii_hash(KEY, [2, 1])
    assert pii_hash(KEY, True) == pii_hash(KEY, "true")  # scalars keep their earlier text form


def test_a_record_with_a_list_in_a_pii_field_is_redacted_whole() -> None:
    redactor = _redactor()
    record = {name: ["one@example.com", "two@example.com"] for name in redactor.actions}
    out = redactor.redact(record)
    for name, action in redactor.actions.items():
        if action.value == "drop":
            assert name not in out
        else:
            assert out[name] != record[name]
