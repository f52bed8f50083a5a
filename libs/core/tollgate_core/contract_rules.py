"""The contract compiler: a dataset contract's rules as compiled checks returning typed violations.

One place for every rule and every message. The validator judges whole records with
:class:`CompiledContract`; the gateway reads CSV text with :func:`read_text` and answers a dry run with the
same violations; the scorer's instance reader converts model inputs on its own fast path and, whenever a
value is not plainly valid, asks :func:`compile_field`'s check for the violation, so its messages are these.

Checks are compiled once per contract into one closure per field, which keeps validation to a few
comparisons per field (what lets one validator process keep up with the ingest rate). Type names in
messages are JSON's (null, boolean, integer, number, string, array, object); numbers print whole (an
integer bound reads ``41``, not ``41.0``; see :func:`show_number`). A personal-data field's value never goes into a message: the
rejection record is read by every consumer of events.rejected (the value itself stays in ``value``, where
the audit trail's redaction finds it); messages name the field and the rule instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from tollgate_core.contracts import DatasetContract, FieldSpec, FieldType

WITHHELD = "(value withheld: personal data)"
UNDECLARED = "(undeclared)"  # the metric label of every field a contract does not declare
TRUE_TEXT = frozenset({"true", "yes", "1", "y", "t"})
FALSE_TEXT = frozenset({"false", "no", "0", "n", "f"})


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: the field, the rule (type, nullable, required, minimum, maximum, category,
    unknown_field, ...), a message for people, and the offending value (None where there is none)."""

    field: str
    rule: str
    message: str
    value: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "rule": self.rule, "message": self.message, "value": self.value}


FieldCheck = Callable[[Any], Violation | None]

_JSON_TYPES: dict[type, str] = {
    type(None): "null",
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}


def json_type(value: Any) -> str:
    """The JSON name of a value's type (``str`` is ``string``, ``dict`` is ``object``)."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def show_number(value: float) -> str:
    """A number as people write it: whole numbers without ``.0`` (a bound of 41 reads ``41``), others
    in full (``0.35``, ``1e-07``), never rounded."""
    if type(value) is float and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def required(name: str) -> Violation:
    return Violation(name, "required", f"{name} is missing")


def null(name: str) -> Violation:
    return Violation(name, "nullable", f"{name} is null but the contract requires a value")


def unknown_field(name: str, schema_id: str) -> Violation:
    return Violation(name, "unknown_field", f"{name} is not a field of {schema_id}")


def compile_field(spec: FieldSpec) -> FieldCheck:
    """The check of one field's (present) value: None when it is valid, else the violation."""
    name = spec.name
    nullable = spec.nullable
    lo, hi = spec.minimum, spec.maximum
    kind = spec.type
    allowed = frozenset(spec.categories or ())
    shown = ", ".join(spec.categories or ())
    personal = spec.pii is not None

    def bad(rule: str, message: str, value: Any) -> Violation:
        return Violation(name, rule, message, value)

    def quoted(value: Any) -> str:
        return WITHHELD if personal else repr(value)

    def number(value: Any) -> str:
        return WITHHELD if personal else show_number(value)

    def check(value: Any) -> Violation | None:
        if value is None:
            return None if nullable else null(name)
        if kind is FieldType.NUMBER:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return bad("type", f"{name} must be a number, got {json_type(value)}", value)
            if not math.isfinite(value):
                return bad("type", f"{name} must be a finite number", str(value))
        elif kind is FieldType.INTEGER:
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    return bad("type", f"{name} must be an integer, got {json_type(value)}", value)
        elif kind is FieldType.CATEGORY:
            if not isinstance(value, str):
                return bad("type", f"{name} must be a category (string), got {json_type(value)}", value)
            if value not in allowed:
                return bad("category", f"{name} {quoted(value)} is not one of: {shown}", value)
            return None
        elif kind is FieldType.BOOLEAN:
            if not isinstance(value, bool):
                return bad("type", f"{name} must be true or false, got {json_type(value)}", value)
            return None
        else:  # STRING
            if not isinstance(value, str):
                return bad("type", f"{name} must be a string, got {json_type(value)}", value)
            return None
        if lo is not None and value < lo:
            return bad("minimum", f"{name} {number(value)} is below the minimum {show_number(lo)}", value)
        if hi is not None and value > hi:
            return bad("maximum", f"{name} {number(value)} is above the maximum {show_number(hi)}", value)
        return None

    return check


class CompiledContract:
    """``violations(payload)`` lists every broken rule of one record (empty when it is valid)."""

    def __init__(self, contract: DatasetContract) -> None:
        self.contract = contract
        self.entity_field = contract.entity_id.name
        self.label_field = contract.label.name
        # A nullable field (the label too, for late labels) may also be left out entirely.
        self._checks = [(f.name, f.nullable, compile_field(f)) for f in contract.all_fields]
        self._known = frozenset(f.name for f in contract.all_fields)

    def metric_field(self, name: str) -> str:
        """A field name fit for a metric label: one the contract declares, else ``(undeclared)``. Names
        taken from events would make a new series per made-up field."""
        return name if name in self._known or name == "payload" else UNDECLARED

    def violations(self, payload: Mapping[str, Any]) -> list[Violation]:
        found: list[Violation] = []
        for name, optional, check in self._checks:
            if name in payload:
                problem = check(payload[name])
                if problem is not None:
                    found.append(problem)
            elif not optional:
                found.append(required(name))
        if not payload.keys() <= self._known:
            schema_id = self.contract.schema_id
            found.extend(unknown_field(key, schema_id) for key in payload if key not in self._known)
        return found


def jsonl_records(text: str) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, str]]]:
    """The objects of a JSONL text by line number (blank lines skipped), and the lines that are not one."""
    records: list[tuple[int, dict[str, Any]]] = []
    problems: list[tuple[int, str]] = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            problems.append((line, f"not JSON: {exc}"))
            continue
        if isinstance(item, dict):
            records.append((line, item))
        else:
            problems.append((line, "not a JSON object"))
    return records, problems


def read_text(contract: DatasetContract, name: str, text: str) -> Any:
    """A CSV cell as the JSON value its field takes: empty is null; numbers, integers and booleans
    (true/false, yes/no, 1/0, y/n, t/f) are converted; anything else stays text. Raises ``ValueError``
    naming the field when the text is not of the field's type."""
    spec = contract.fields_by_name.get(name)
    if text == "":
        return None
    if spec is None or spec.type in (FieldType.CATEGORY, FieldType.STRING):
        return text
    try:
        if spec.type is FieldType.NUMBER:
            return float(text)
        if spec.type is FieldType.INTEGER:
            return int(text)
    except ValueError:
        shown = WITHHELD if spec.pii is not None else repr(text)
        kind = "a number" if spec.type is FieldType.NUMBER else "an integer"
        raise ValueError(f"{name} {shown} is not {kind}") from None
    lowered = text.strip().lower()
    if lowered in TRUE_TEXT:
        return True
    if lowered in FALSE_TEXT:
        return False
    shown = WITHHELD if spec.pii is not None else repr(text)
    raise ValueError(f"{name} {shown} is not true or false")
