"""Contract checks compiled once per contract into a flat list of per-field closures.

Building the checks when a contract is loaded (instead of interpreting the contract for every event) keeps
validation to a few attribute-free comparisons per field, which is what lets one process keep up with the
ingest rate. No Kafka, HTTP or database here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from tollgate_core.contracts import DatasetContract, FieldSpec, FieldType
from tollgate_core.reference import CategorySummary, NumericSummary, ReferenceProfile, category_key

Violation = dict[str, Any]
Check = Callable[[Any], Violation | None]


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _compile_field(spec: FieldSpec) -> Check:
    name = spec.name
    nullable = spec.nullable
    lo, hi = spec.minimum, spec.maximum
    kind = spec.type
    allowed = frozenset(spec.categories or ())
    shown = ", ".join(spec.categories or ())
    # A personal-data field's value never goes into a message: the rejection record is read by every
    # consumer of events.rejected (the value itself stays in the record's payload and "value", where the
    # audit trail's redaction finds it); messages name the field and the rule instead.
    personal = spec.pii is not None

    def bad(rule: str, message: str, value: Any) -> Violation:
        return {"field": name, "rule": rule, "message": message, "value": value}

    def quoted(value: Any) -> str:
        return "(value withheld: personal data)" if personal else repr(value)

    def number(value: Any) -> str:
        return "(value withheld: personal data)" if personal else str(value)

    def check(value: Any) -> Violation | None:
        if value is None:
            return (
                None
                if nullable
                else bad("nullable", f"{name} is null but the contract requires a value", None)
            )
        if kind is FieldType.NUMBER:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return bad("type", f"{name} must be a number, got {_type_name(value)}", value)
            if not math.isfinite(value):
                return bad("type", f"{name} must be a finite number", str(value))
        elif kind is FieldType.INTEGER:
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    return bad("type", f"{name} must be an integer, got {_type_name(value)}", value)
        elif kind is FieldType.CATEGORY:
            if not isinstance(value, str):
                return bad("type", f"{name} must be a category (string), got {_type_name(value)}", value)
            if value not in allowed:
                return bad("category", f"{name} {quoted(value)} is not one of: {shown}", value)
            return None
        elif kind is FieldType.BOOLEAN:
            if not isinstance(value, bool):
                return bad("type", f"{name} must be true or false, got {_type_name(value)}", value)
            return None
        else:  # STRING
            if not isinstance(value, str):
                return bad("type", f"{name} must be a string, got {_type_name(value)}", value)
            return None
        if lo is not None and value < lo:
            return bad("minimum", f"{name} {number(value)} is below the minimum {lo}", value)
        if hi is not None and value > hi:
            return bad("maximum", f"{name} {number(value)} is above the maximum {hi}", value)
        return None

    return check


UNDECLARED = "(undeclared)"  # the metric label of every field a contract does not declare


class CompiledContract:
    """``violations(payload)`` lists every broken rule of one record (empty when it is valid)."""

    def __init__(self, contract: DatasetContract) -> None:
        self.contract = contract
        self.entity_field = contract.entity_id.name
        self.label_field = contract.label.name
        # A nullable field (the label too, for late labels) may also be left out entirely.
        self._checks = [(f.name, f.nullable, _compile_field(f)) for f in contract.all_fields]
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
                found.append(
                    {"field": name, "rule": "required", "message": f"{name} is missing", "value": None}
                )
        if not payload.keys() <= self._known:
            for key in payload:
                if key not in self._known:
                    found.append(
                        {
                            "field": key,
                            "rule": "unknown_field",
                            "message": f"{key} is not a field of {self.contract.schema_id}",
                            "value": None,
                        }
                    )
        return found


class Expectations:
    """Statistical expectations from a model's training reference: flags values far outside what training saw.

    A number is flagged when it lies beyond the 0.1%/99.9% training quantiles by more than ``iqr_factor``
    inter-quartile ranges; a category is flagged when training never saw it. Flags mark an event, they do
    not reject it: the contract decides validity, the reference only says "unusual".
    """

    def __init__(self, reference: ReferenceProfile, iqr_factor: float = 3.0) -> None:
        self.reference = reference
        self._numeric: list[tuple[str, float, float]] = []
        self._categories: list[tuple[str, frozenset[str]]] = []
        for name, summary in reference.features.items():
            if isinstance(summary, NumericSummary):
                q = summary.quantiles
                low_q = q.get("0.001", summary.min)
                high_q = q.get("0.999", summary.max)
                iqr = q.get("0.75", summary.max) - q.get("0.25", summary.min)
                pad = iqr_factor * (iqr if iqr > 0 else max(abs(summary.std), 1e-9))
                self._numeric.append((name, low_q - pad, high_q + pad))
            elif isinstance(summary, CategorySummary):
                self._categories.append((name, frozenset(k for k, v in summary.frequencies.items() if v > 0)))

    def flags(self, payload: Mapping[str, Any]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for name, lo, hi in self._numeric:
            value = payload.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool) and not lo <= value <= hi:
                found.append(
                    {
                        "field": name,
                        "check": "outside_training_range",
                        "value": value,
                        "expected": f"[{lo:.6g}, {hi:.6g}]",
                    }
                )
        for name, seen in self._categories:
            value = payload.get(name)
            if value is None:
                continue
            shown = category_key(value) if isinstance(value, bool) else value
            if isinstance(shown, str) and shown not in seen:
                found.append(
                    {
                        "field": name,
                        "check": "unseen_category",
                        "value": value,
                        "expected": ", ".join(sorted(seen))[:200],
                    }
                )
        return found
