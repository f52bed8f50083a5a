"""Draft a dataset contract from a data file, for a person to review before it is registered.

``tollgate contracts draft FILE --entity-id COL --label COL`` reads a CSV (values are text, as the gateway's
CSV upload reads them) or a JSONL file (typed JSON values) and infers, per column:

* the type: boolean (true/false, yes/no, t/f, y/n words, or JSON booleans), integer, number, a category
  (text with at most ``max_categories`` distinct values, each seen at least twice on average) or a string
  (any other text: a string can only be carried as an attribute, never a feature);
* nullability (a missing or empty value anywhere);
* ranges with a margin: the observed minimum and maximum widened by ``margin`` of their span on each side,
  never below zero for a column that never was, whole numbers for integers;
* categories, sorted; a binary label's positive class (``true``, or the rarer of two categories).

The draft is what the data showed, not what the producer promises: every field gets a ``description``
to write and every range a second look. Nothing here touches Kafka or a database.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tollgate_core.contract_rules import jsonl_records
from tollgate_core.contracts import DatasetContract

TRUE_WORDS = frozenset({"true", "yes", "t", "y"})
FALSE_WORDS = frozenset({"false", "no", "f", "n"})
DEFAULT_MAX_CATEGORIES = 50
DEFAULT_MARGIN = 0.1
# Column names that usually hold personal data: drafted with ``pii: hash`` (review them all the same).
PII_NAMES = re.compile(r"e[-_]?mail|phone|ssn|passport|address|postcode|zip_?code|birth", re.IGNORECASE)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class DraftError(ValueError):
    """The file cannot be drafted from (unreadable, empty, or the named columns are missing)."""


@dataclass
class _Column:
    name: str
    missing: int = 0
    texts: Counter[str] = field(default_factory=Counter)
    json_types: set[str] = field(default_factory=set)

    def add(self, value: Any) -> None:
        if value is None or value == "":
            self.missing += 1
            return
        if isinstance(value, bool):
            self.json_types.add("bool")
            self.texts["true" if value else "false"] += 1
        elif isinstance(value, int | float):
            self.json_types.add("int" if isinstance(value, int) else "float")
            self.texts[repr(value)] += 1
        elif isinstance(value, str):
            self.json_types.add("str")
            self.texts[value] += 1
        else:
            raise DraftError(
                f"column {self.name}: nested JSON values ({type(value).__name__}) are not fields"
            )

    @property
    def present(self) -> int:
        return sum(self.texts.values())


def is_text_file(path: Path) -> bool:
    """A CSV file holds text values; a JSONL file typed JSON values."""
    return path.suffix.lower() not in (".jsonl", ".ndjson", ".json")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV (text values, empty = missing) or JSONL file (one JSON object per line)."""
    text = path.read_text(encoding="utf-8-sig")
    if not is_text_file(path):
        records, problems = jsonl_records(text)
        if problems:
            line, message = problems[0]
            raise DraftError(f"line {line}: {message}")
        return [record for _, record in records]
    reader = csv.DictReader(io.StringIO(text))
    rows = []
    for line, row in enumerate(reader, start=2):
        if None in row:
            raise DraftError(f"line {line}: more values than the header names")
        rows.append(dict(row))
    return rows


def draft_contract(
    rows: Iterable[Mapping[str, Any]],
    *,
    name: str,
    entity_id: str,
    label: str,
    event_time: str | None = None,
    task: str | None = None,
    segment: str | None = None,
    pii: Iterable[str] = (),
    max_categories: int = DEFAULT_MAX_CATEGORIES,
    margin: float = DEFAULT_MARGIN,
    source: str = "",
    text_values: bool = False,
) -> dict[str, Any]:
    """The contract document (a mapping ready for YAML) that the rows follow; validated before it returns.

    ``text_values``: the values are text to be converted, as a CSV upload's are (``"7"`` may be an integer,
    ``"yes"`` a boolean); otherwise a JSON string stays text (a category or a string).
    """
    columns: dict[str, _Column] = {}
    n = 0
    for row in rows:
        n += 1
        for key in columns.keys() - row.keys():
            columns[key].missing += 1
        for key, value in row.items():
            if key not in columns:
                columns[key] = _Column(key, missing=n - 1)
            columns[key].add(value)
    if n == 0:
        raise DraftError("the file has no rows")
    for needed, what in ((entity_id, "entity id"), (label, "label"), (event_time, "event time")):
        if needed is not None and needed not in columns:
            raise DraftError(
                f"the {what} column {needed!r} is not in the file (columns: {', '.join(columns)})"
            )
    bad = [c for c in columns if not _IDENTIFIER.match(c)]
    if bad:
        raise DraftError(f"column names must be identifiers (letters, digits, _): {', '.join(bad)}")
    pii_fields = set(pii) | {c for c in columns if PII_NAMES.search(c)}

    features: list[dict[str, Any]] = []
    attributes: list[dict[str, Any]] = []
    label_doc: dict[str, Any] = {}
    entity_doc: dict[str, Any] = {}
    for col in columns.values():
        doc = _field(col, max_categories, margin, text_values)
        if col.name == entity_id:
            entity_doc = {"name": col.name, "type": "string" if doc["type"] != "integer" else "integer"}
            if col.missing:
                raise DraftError(f"the entity id {col.name!r} is missing in {col.missing} row(s)")
            entity_doc["description"] = "TODO: what identifies the entity (the Kafka message key)."
        elif col.name == label:
            label_doc = _label(doc, col, task)
        elif col.name == event_time or doc["type"] == "string" or col.name in pii_fields:
            if col.name in pii_fields:
                doc = {"name": col.name, "type": "string", "nullable": True, "pii": "hash"}
            else:
                doc = {"name": col.name, "type": "string", "nullable": bool(col.missing)}
            doc["description"] = "TODO: describe." + (
                " Personal data: hashed in logs." if "pii" in doc else ""
            )
            attributes.append(doc)
        else:
            doc["description"] = "TODO: describe."
            features.append(doc)
    if not features:
        raise DraftError("no column can be a feature (every other column is text with many values)")
    contract: dict[str, Any] = {
        "contract": name,
        "version": 1,
        "description": f"TODO: describe. Drafted from {n:,} rows; review every field before registering.",
        "source": source,
        "entity_id": entity_doc,
        "label": label_doc,
        "features": features,
    }
    if attributes:
        contract["attributes"] = attributes
    if segment is not None:
        contract["segment"] = segment
    if event_time is not None:
        contract["event_time"] = event_time
    DatasetContract.model_validate(contract)  # the draft is a valid contract, or this raises
    return contract


def _field(col: _Column, max_categories: int, margin: float, text_values: bool) -> dict[str, Any]:
    values = list(col.texts)
    kind = _kind(col, max_categories, text_values)
    doc: dict[str, Any] = {"name": col.name, "type": kind, **({"nullable": True} if col.missing else {})}
    if kind in ("integer", "number"):
        numbers = [float(v) for v in values]
        lo, hi = min(numbers), max(numbers)
        pad = (hi - lo) * margin if hi > lo else max(abs(hi) * margin, 1.0)
        low, high = lo - pad, hi + pad
        if lo >= 0:
            low = max(low, 0.0)
        if kind == "integer":
            doc["minimum"], doc["maximum"] = math.floor(low), math.ceil(high)
        else:
            doc["minimum"], doc["maximum"] = _round(low, down=True), _round(high, down=False)
    elif kind == "category":
        doc["categories"] = sorted(values)
    return doc


def _kind(col: _Column, max_categories: int, text_values: bool) -> str:
    values = list(col.texts)
    if not values:
        return "string"
    if not text_values and col.json_types == {"str"}:
        return "category" if len(values) <= max_categories and col.present >= 2 * len(values) else "string"
    if col.json_types and col.json_types != {"str"}:
        if col.json_types == {"bool"}:
            return "boolean"
        if col.json_types == {"int"}:
            return "integer"
        if col.json_types <= {"int", "float"}:
            return "number"
        return "string"  # mixed JSON types: carried, not learned from
    # Text values, as a CSV upload converts them (the gateway's rules).
    lowered = {v.strip().lower() for v in values}
    if lowered <= TRUE_WORDS | FALSE_WORDS and lowered & TRUE_WORDS and lowered & FALSE_WORDS:
        return "boolean"
    if all(_is_int(v) for v in values):
        return "integer"
    if all(_is_float(v) for v in values):
        return "number"
    if len(values) <= max_categories and col.present >= 2 * len(values):
        return "category"
    return "string"


def _label(doc: dict[str, Any], col: _Column, task: str | None) -> dict[str, Any]:
    kind = doc["type"]
    if kind == "string":
        raise DraftError(f"the label {col.name!r} is free text with {len(col.texts)} distinct values")
    if task is None:
        task = (
            "regression"
            if kind == "number" or (kind == "integer" and len(col.texts) > 20)
            else "classification"
        )
    out = dict(doc)
    out["task"] = task
    out["nullable"] = True  # labels arrive late: an unlabeled record is valid, the trainer skips it
    if task == "classification" and kind == "number":
        raise DraftError(f"the label {col.name!r} holds fractional numbers: use --task regression")
    if task == "classification":
        if kind == "boolean":
            out["positive_class"] = True
        elif kind == "category" and len(col.texts) == 2:
            out["positive_class"] = min(col.texts, key=lambda v: (col.texts[v], v))
    out["description"] = "TODO: what the model predicts."
    return out


def _is_int(text: str) -> bool:
    return re.fullmatch(r"[+-]?\d+", text.strip()) is not None


def _is_float(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _round(value: float, *, down: bool) -> float:
    """A bound with few significant digits (3), rounded outwards so the observed values stay inside."""
    if value == 0:
        return 0.0
    digits = 2 - math.floor(math.log10(abs(value)))
    scale = 10.0**digits
    rounded = (math.floor if down else math.ceil)(value * scale) / scale
    return float(int(rounded)) if rounded.is_integer() else rounded


def to_yaml(contract: Mapping[str, Any], header: str = "") -> str:
    body = yaml.safe_dump(dict(contract), sort_keys=False, allow_unicode=True, width=110)
    lines = [f"# {line}" for line in header.splitlines()] if header else []
    return "\n".join([*lines, body]) if lines else body
