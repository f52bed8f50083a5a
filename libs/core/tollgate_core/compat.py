"""Schema compatibility: may a topic version's JSON Schema change from ``old`` to ``new`` under its mode?

A schema is read as the set of JSON documents it accepts. Then

* BACKWARD: consumers on the NEW schema read data written with the OLD one, so every document the old
  schema accepts must be accepted by the new one (old ⊆ new);
* FORWARD: consumers on the OLD schema read data written with the NEW one (new ⊆ old);
* FULL: both; NONE: anything goes.

``check`` decides "writer ⊆ reader" structurally, for the JSON Schemas pydantic generates (``$ref`` into
``$defs``, ``anyOf``/``oneOf`` for unions and optionals, ``enum``/``const``, ``type``, ``properties``,
``required``, ``additionalProperties``, ``items``/``prefixItems`` and the numeric, string, array and object
bounds). It is
sound but not complete: when it cannot prove that the writer's documents fit the reader, it reports an
incompatibility (keywords it does not understand count as a change when the reader has them and they differ).
Each rule and its reason is in ``RULES``; ``schemas/README.md`` has the table.

This is runtime: the registry checks a contract registered live against its earlier version with it. The
policy over git history that applies it to the topic catalog at build time (``make test``) is the tools'
:mod:`tollgate_tools.history`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from tollgate_core.topics import Compatibility

BACKWARD = "backward"
FORWARD = "forward"

# rule aspect -> (name when the change breaks BACKWARD, name when it breaks FORWARD, why it breaks).
# In BACKWARD the old schema is the writer and the new one the reader; in FORWARD the other way round. A
# rule's name describes the change from old to new that breaks the direction.
RULES: dict[str, tuple[str, str, str]] = {
    "required": (
        "required-added",
        "required-removed",
        "the reader requires a property that the writer's documents may lack",
    ),
    "property-closed": (
        "property-removed",
        "property-added",
        "the writer may send a property that the reader's closed schema (no additionalProperties) forbids",
    ),
    "property-open": (
        "property-added",
        "property-removed",
        "the reader constrains a property that the writer's open schema let hold any value",
    ),
    "additional-properties": (
        "additional-properties-tightened",
        "additional-properties-loosened",
        "the writer may send undeclared properties that the reader forbids or constrains",
    ),
    "type": ("type-narrowed", "type-widened", "the writer may send a JSON type the reader rejects"),
    "nullable": ("nullable-removed", "nullable-added", "the writer may send null, which the reader rejects"),
    "enum": ("enum-value-removed", "enum-value-added", "the writer may send a value the reader's enum lacks"),
    "bound": (
        "{keyword}-tightened",
        "{keyword}-loosened",
        "the reader's bound (length, range, size, multiple) rejects values the writer allows",
    ),
    "pattern": (
        "pattern-changed",
        "pattern-changed",
        "the reader's pattern may reject strings the writer allows",
    ),
    "format": (
        "format-changed",
        "format-changed",
        "the reader's format may reject strings the writer allows",
    ),
    "unsupported": (
        "unsupported-change",
        "unsupported-change",
        "a keyword the checker cannot compare is stricter or different in the reader: review by hand",
    ),
}

# Keywords that never change which documents a schema accepts.
_ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "$anchor",
        "$comment",
        "$defs",
        "definitions",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "discriminator",  # OpenAPI hint pydantic adds to tagged unions; the branches still decide
        "contentMediaType",
        "contentEncoding",
    }
)
# Keywords compared structurally below; everything else is "unsupported".
_HANDLED = frozenset(
    {
        "$ref",
        "type",
        "enum",
        "const",
        "anyOf",
        "oneOf",
        "allOf",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minProperties",
        "maxProperties",
    }
)
_MISSING: Any = object()
_TYPES = ("null", "boolean", "object", "array", "number", "integer", "string")


@dataclass(frozen=True)
class Incompatibility:
    """One way in which documents of the writer's schema may be rejected by the reader's schema."""

    path: str  # where in the document, e.g. $.violations[*].rule
    rule: str  # e.g. required-added; see RULES
    message: str
    direction: str  # backward or forward

    def __str__(self) -> str:
        return f"{self.path}: {self.rule} ({self.direction}): {self.message}"


def check(
    old_schema: dict[str, Any], new_schema: dict[str, Any], mode: Compatibility | str
) -> list[Incompatibility]:
    """Incompatibilities of changing ``old_schema`` into ``new_schema`` under ``mode``.

    The mode's ``_TRANSITIVE`` suffix concerns which revisions are compared (the command line compares with
    every earlier one); for one pair, BACKWARD, FORWARD and FULL are accepted with or without it.
    """
    base = str(mode.value if isinstance(mode, Compatibility) else mode).upper().removesuffix("_TRANSITIVE")
    if base not in ("BACKWARD", "FORWARD", "FULL", "NONE"):
        raise ValueError(f"unknown compatibility mode {mode!r}")
    found: list[Incompatibility] = []
    if base in ("BACKWARD", "FULL"):
        found += _Comparison(writer=old_schema, reader=new_schema, direction=BACKWARD).run()
    if base in ("FORWARD", "FULL"):
        found += _Comparison(writer=new_schema, reader=old_schema, direction=FORWARD).run()
    return found


class _Comparison:
    """Decides "every document the writer's schema accepts is accepted by the reader's"."""

    def __init__(self, writer: dict[str, Any], reader: dict[str, Any], direction: str) -> None:
        self.writer_root = writer
        self.reader_root = reader
        self.direction = direction
        self.writer_name, self.reader_name = ("old", "new") if direction == BACKWARD else ("new", "old")
        self._active: set[tuple[str, str]] = set()

    def run(self) -> list[Incompatibility]:
        return self.subset(self.writer_root, self.reader_root, "$")

    # -- helpers -------------------------------------------------------------------------------------------

    def problem(self, path: str, aspect: str, message: str, keyword: str = "") -> Incompatibility:
        on_backward, on_forward, _ = RULES[aspect]
        name = on_backward if self.direction == BACKWARD else on_forward
        return Incompatibility(
            path=path, rule=name.format(keyword=keyword), message=message, direction=self.direction
        )

    @property
    def w(self) -> str:
        return f"the {self.writer_name} schema"

    @property
    def r(self) -> str:
        return f"the {self.reader_name} schema"

    # -- the relation ----------------------------------------------------------------------------------------

    def subset(self, writer: Any, reader: Any, path: str) -> list[Incompatibility]:
        try:
            writer, writer_ref = _resolve(writer, self.writer_root)
            reader, reader_ref = _resolve(reader, self.reader_root)
        except (ValueError, KeyError, IndexError) as exc:
            return [self.problem(path, "unsupported", f"cannot follow a $ref: {exc}")]
        if writer_ref or reader_ref:
            # Recursive models: a pair already being compared is assumed to hold (co-induction).
            key = (
                writer_ref or json.dumps(writer, sort_keys=True),
                reader_ref or json.dumps(reader, sort_keys=True),
            )
            if key in self._active:
                return []
            self._active.add(key)
            try:
                return self._subset(writer, reader, path)
            finally:
                self._active.discard(key)
        return self._subset(writer, reader, path)

    def _subset(self, writer: Any, reader: Any, path: str) -> list[Incompatibility]:
        if writer is False or reader is True or _accepts_anything(reader):
            return []
        if reader is False:
            return [self.problem(path, "type", f"{self.r} accepts nothing here; {self.w} accepts values")]
        if writer is True:
            writer = {}

        for key in ("anyOf", "oneOf"):
            if key in writer:  # every branch the writer may use must fit the reader
                return [p for branch in _branches(writer, key) for p in self.subset(branch, reader, path)]
        if "allOf" in reader:  # the writer's documents must fit every part
            return [p for part in _branches(reader, "allOf") for p in self.subset(writer, part, path)]
        if "allOf" in writer:  # it is enough that one part of the writer fits (the rest only narrows it)
            return self._best([self.subset(part, reader, path) for part in _branches(writer, "allOf")])
        for key in ("anyOf", "oneOf"):
            if key in reader:  # the writer must fit one branch (oneOf: pydantic's branches are disjoint)
                return self._union_reader(writer, _branches(reader, key), path)

        found = self._unsupported(writer, reader, path)
        values = _enum_values(writer)
        if values is not None:  # the writer's documents are exactly these values
            for value in values:
                found += self._value(value, reader, path)
            return found
        reader_values = _enum_values(reader)
        if reader_values is not None:
            found.append(
                self.problem(
                    path,
                    "enum",
                    f"{self.r} accepts only {_show(reader_values)}; {self.w} has no such list",
                )
            )
            return found

        writer_types, reader_types = _types(writer), _types(reader)
        rejected = [t for t in writer_types if not _type_accepts(reader_types, t)]
        if rejected == ["null"]:
            found.append(self.problem(path, "nullable", f"{self.w} allows null here, {self.r} does not"))
        elif rejected:
            found.append(
                self.problem(
                    path,
                    "type",
                    f"{self.w} allows {_show_types(writer_types)}, {self.r} only {_show_types(reader_types)}",
                )
            )
        shared = {t for t in writer_types if _type_accepts(reader_types, t)}
        if "string" in shared:
            found += self._string(writer, reader, path)
        if shared & {"number", "integer"}:
            found += self._number(writer, reader, path)
        if "array" in shared:
            found += self._array(writer, reader, path)
        if "object" in shared:
            found += self._object(writer, reader, path)
        return found

    def _best(self, candidates: list[list[Incompatibility]]) -> list[Incompatibility]:
        for problems in candidates:
            if not problems:
                return []
        return min(candidates, key=len)

    def _union_reader(self, writer: dict[str, Any], branches: list[Any], path: str) -> list[Incompatibility]:
        attempts = [self.subset(writer, branch, path) for branch in branches]
        if any(not problems for problems in attempts):
            return []
        # Report against the branch of the writer's type (fewest problems), so that messages stay concrete;
        # a writer that may be null while no branch is gets "nullable" rather than a wall of type errors.
        writer_types = _types(writer)
        resolved = [_resolve(b, self.reader_root)[0] for b in branches]

        def score(index: int) -> tuple[int, int]:
            branch = resolved[index]
            fits = branch is True or (isinstance(branch, dict) and bool(writer_types & _types(branch)))
            return (0 if fits else 1, len(attempts[index]))

        return attempts[min(range(len(attempts)), key=score)]

    def _unsupported(
        self, writer: dict[str, Any], reader: dict[str, Any], path: str
    ) -> list[Incompatibility]:
        """Keywords not compared structurally must be equal on both sides: on the reader they may reject
        documents, on the writer some (patternProperties, unevaluatedProperties) admit more of them."""
        found = []
        for keyword in sorted(set(writer) | set(reader)):
            if keyword in _HANDLED or keyword in _ANNOTATIONS or keyword.startswith("x-"):
                continue
            if writer.get(keyword, _MISSING) != reader.get(keyword, _MISSING):
                found.append(
                    self.problem(
                        path,
                        "unsupported",
                        f"{keyword} differs ({self.w}: {_show(writer.get(keyword, _MISSING))}, {self.r}: "
                        f"{_show(reader.get(keyword, _MISSING))}); it cannot be compared, review by hand",
                    )
                )
        return found

    # -- values (enum / const writers) -----------------------------------------------------------------------

    def _value(self, value: Any, reader: Any, path: str) -> list[Incompatibility]:
        reader, _ = _resolve(reader, self.reader_root)
        if reader is True or _accepts_anything(reader):
            return []
        if reader is False:
            return [
                self.problem(path, "enum", f"{self.w} allows {_show(value)}, {self.r} accepts nothing here")
            ]
        for key in ("anyOf", "oneOf"):
            if key in reader:
                options = [self._value(value, b, path) for b in _branches(reader, key)]
                return self._best(options)
        if "allOf" in reader:
            return [p for part in _branches(reader, "allOf") for p in self._value(value, part, path)]
        reader_values = _enum_values(reader)
        if reader_values is not None and not any(_same_value(value, v) for v in reader_values):
            return [
                self.problem(path, "enum", f"{self.w} allows {_show(value)}, which {self.r} does not list")
            ]
        value_type = _json_type(value)
        if not _type_accepts(_types(reader), value_type):
            aspect = "nullable" if value is None else "type"
            return [
                self.problem(
                    path,
                    aspect,
                    f"{self.w} allows {_show(value)}, {self.r} only {_show_types(_types(reader))}",
                )
            ]
        if isinstance(value, str):
            return self._string(
                {"minLength": len(value), "maxLength": len(value), "const": value}, reader, path
            )
        if value_type in ("number", "integer"):
            return self._number({"minimum": value, "maximum": value, "const": value}, reader, path)
        if isinstance(value, list):
            return self._array(
                {
                    "minItems": len(value),
                    "maxItems": len(value),
                    "prefixItems": [{"const": v} for v in value],
                    "items": False,
                },
                reader,
                path,
            )
        if isinstance(value, dict):
            shape = {
                "properties": {k: {"const": v} for k, v in value.items()},
                "required": list(value),
                "additionalProperties": False,
            }
            return self._object(shape, reader, path)
        return []

    # -- per type --------------------------------------------------------------------------------------------

    def _bound(
        self, path: str, keyword: str, writer_value: float | None, reader_value: float | None, lower: bool
    ) -> list[Incompatibility]:
        """A lower (minLength, minItems, ...) or upper bound: the writer's must be at least as tight."""
        if reader_value is None:
            return []
        if writer_value is not None and (
            writer_value >= reader_value if lower else writer_value <= reader_value
        ):
            return []
        allowed = "no bound" if writer_value is None else f"{keyword} {_show(writer_value)}"
        return [
            self.problem(
                path,
                "bound",
                f"{self.r} has {keyword} {_show(reader_value)}, {self.w} {allowed}",
                keyword=keyword,
            )
        ]

    def _string(self, writer: dict[str, Any], reader: dict[str, Any], path: str) -> list[Incompatibility]:
        found = self._bound(
            path, "minLength", writer.get("minLength", 0), reader.get("minLength"), lower=True
        )
        found += self._bound(path, "maxLength", writer.get("maxLength"), reader.get("maxLength"), lower=False)
        if "pattern" in reader:
            pattern = reader["pattern"]
            if "const" in writer:
                ok = re.search(pattern, writer["const"]) is not None
            else:
                ok = writer.get("pattern") == pattern
            if not ok:
                had = f"pattern {writer['pattern']!r}" if "pattern" in writer else "no pattern"
                shown = _show(writer["const"]) if "const" in writer else had
                found.append(
                    self.problem(path, "pattern", f"{self.r} has pattern {pattern!r}, {self.w} {shown}")
                )
        if "format" in reader and "const" not in writer and writer.get("format") != reader["format"]:
            had = f"format {writer['format']!r}" if "format" in writer else "no format"
            found.append(
                self.problem(path, "format", f"{self.r} has format {reader['format']!r}, {self.w} {had}")
            )
        return found

    def _number(self, writer: dict[str, Any], reader: dict[str, Any], path: str) -> list[Incompatibility]:
        found: list[Incompatibility] = []
        for lower in (True, False):
            writer_bound, reader_bound = _numeric_bound(writer, lower), _numeric_bound(reader, lower)
            if reader_bound is None:
                continue
            keyword = reader_bound[2]
            if writer_bound is not None:
                (a, a_exclusive, _), (b, b_exclusive, _) = writer_bound, reader_bound
                inside = (a > b if lower else a < b) or (a == b and (a_exclusive or not b_exclusive))
                if inside:
                    continue
            allowed = "no bound" if writer_bound is None else f"{writer_bound[2]} {_show(writer_bound[0])}"
            found.append(
                self.problem(
                    path,
                    "bound",
                    f"{self.r} has {keyword} {_show(reader_bound[0])}, {self.w} {allowed}",
                    keyword=keyword,
                )
            )
        if "multipleOf" in reader:
            step = reader["multipleOf"]
            mine = writer.get("const", writer.get("multipleOf"))
            integers_only = step == 1 and "number" not in _types(writer)  # every integer is a multiple of 1
            if not integers_only and (mine is None or not _is_multiple(mine, step)):
                allowed = "none" if mine is None else _show(mine)
                found.append(
                    self.problem(
                        path,
                        "bound",
                        f"{self.r} has multipleOf {_show(step)}, {self.w} {allowed}",
                        "multipleOf",
                    )
                )
        return found

    def _array(self, writer: dict[str, Any], reader: dict[str, Any], path: str) -> list[Incompatibility]:
        found = self._bound(path, "minItems", writer.get("minItems", 0), reader.get("minItems"), lower=True)
        found += self._bound(path, "maxItems", writer.get("maxItems"), reader.get("maxItems"), lower=False)
        if reader.get("uniqueItems") and not writer.get("uniqueItems") and writer.get("maxItems", 2) > 1:
            found.append(
                self.problem(path, "bound", f"{self.r} wants unique items, {self.w} not", "uniqueItems")
            )
        writer_prefix, reader_prefix = writer.get("prefixItems", []), reader.get("prefixItems", [])
        for index in range(max(len(writer_prefix), len(reader_prefix))):
            if index >= writer.get("maxItems", math.inf):
                break
            w_item = writer_prefix[index] if index < len(writer_prefix) else writer.get("items", True)
            r_item = reader_prefix[index] if index < len(reader_prefix) else reader.get("items", True)
            found += self.subset(w_item, r_item, f"{path}[{index}]")
        if writer.get("maxItems", math.inf) > len(writer_prefix):
            found += self.subset(writer.get("items", True), reader.get("items", True), f"{path}[*]")
        return found

    def _object(self, writer: dict[str, Any], reader: dict[str, Any], path: str) -> list[Incompatibility]:
        found = self._bound(
            path, "minProperties", writer.get("minProperties", 0), reader.get("minProperties"), lower=True
        )
        found += self._bound(
            path, "maxProperties", writer.get("maxProperties"), reader.get("maxProperties"), lower=False
        )
        writer_props: dict[str, Any] = writer.get("properties", {})
        reader_props: dict[str, Any] = reader.get("properties", {})
        writer_extra = writer.get("additionalProperties", True)
        reader_extra = reader.get("additionalProperties", True)
        writer_required = set(writer.get("required", []))

        for name in reader.get("required", []):
            if name not in writer_required:
                found.append(
                    self.problem(
                        _join(path, name),
                        "required",
                        f"{self.r} requires {name!r}, {self.w} does not, so it may be absent",
                    )
                )
        for name, reader_prop in reader_props.items():
            where = _join(path, name)
            if name in writer_props:
                found += self.subset(writer_props[name], reader_prop, where)
            elif writer_extra is False:
                continue  # the writer never sends it
            elif _accepts_anything(writer_extra) or writer_extra is True:
                if not _accepts_anything(_resolve(reader_prop, self.reader_root)[0]):
                    found.append(
                        self.problem(
                            where,
                            "property-open",
                            f"{self.r} declares {name!r}; {self.w} does not but allows additional "
                            "properties, so its documents may hold any value there",
                        )
                    )
            else:
                found += self.subset(writer_extra, reader_prop, where)
        for name, writer_prop in writer_props.items():
            if name in reader_props or writer_prop is False:
                continue
            where = _join(path, name)
            if reader_extra is False:
                found.append(
                    self.problem(
                        where,
                        "property-closed",
                        f"{self.w} allows {name!r}, {self.r} does not and forbids additional properties",
                    )
                )
            else:
                found += self.subset(writer_prop, reader_extra, where)
        if writer_extra is not False and not _accepts_anything(reader_extra) and reader_extra is not True:
            if reader_extra is False:
                found.append(
                    self.problem(
                        f"{path}.*",
                        "additional-properties",
                        f"{self.w} allows additional properties, {self.r} forbids them",
                    )
                )
            else:
                found += self.subset(writer_extra, reader_extra, f"{path}.*")
        return found


# -- schema helpers ---------------------------------------------------------------------------------------


def _resolve(schema: Any, root: dict[str, Any]) -> tuple[Any, str]:
    """Follow ``$ref`` (local JSON pointers only), keeping its siblings; returns the last ref seen too."""
    last = ""
    seen: set[str] = set()
    while isinstance(schema, dict) and "$ref" in schema:
        ref = schema["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#") or ref in seen:
            raise ValueError(f"cannot resolve $ref {ref!r}: only local references (#/...) are supported")
        seen.add(ref)
        target: Any = root
        for token in ref[1:].split("/")[1:] if ref != "#" else []:
            token = token.replace("~1", "/").replace("~0", "~")
            target = target[int(token)] if isinstance(target, list) else target[token]
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**target, **siblings} if isinstance(target, dict) else target
        last = ref
    return schema, last


def _branches(schema: dict[str, Any], key: str) -> list[Any]:
    """The branches of anyOf/oneOf/allOf, each with the schema's other keywords (pydantic puts annotations
    such as default and title beside anyOf; assertions beside it apply to every branch too)."""
    siblings = {k: v for k, v in schema.items() if k != key}
    out = []
    for branch in schema[key]:
        if branch is True:
            out.append(siblings or True)
        elif branch is False:
            out.append(False)
        else:
            out.append({**siblings, **branch} if siblings else branch)
    return out


def _accepts_anything(schema: Any) -> bool:
    if schema is True:
        return True
    if not isinstance(schema, dict):
        return False
    return all(k in _ANNOTATIONS or k.startswith("x-") for k in schema)


def _enum_values(schema: dict[str, Any]) -> list[Any] | None:
    if "const" in schema:
        values = [schema["const"]]
        if "enum" in schema:
            values = [v for v in values if any(_same_value(v, e) for e in schema["enum"])]
        return values
    if "enum" in schema:
        return list(schema["enum"])
    return None


def _types(schema: dict[str, Any]) -> set[str]:
    declared = schema.get("type")
    if declared is None:
        values = _enum_values(schema)
        if values is not None:
            return {_json_type(v) for v in values}
        return set(_TYPES)
    return {declared} if isinstance(declared, str) else set(declared)


def _type_accepts(types: set[str], json_type: str) -> bool:
    return json_type in types or (json_type == "integer" and "number" in types)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _same_value(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but True is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _numeric_bound(schema: dict[str, Any], lower: bool) -> tuple[float, bool, str] | None:
    """The tighter of minimum/exclusiveMinimum (or maximum/exclusiveMaximum): (value, exclusive, keyword)."""
    inclusive_key, exclusive_key = (
        ("minimum", "exclusiveMinimum") if lower else ("maximum", "exclusiveMaximum")
    )
    bounds = []
    if isinstance(schema.get(inclusive_key), int | float):
        bounds.append((float(schema[inclusive_key]), False, inclusive_key))
    if isinstance(schema.get(exclusive_key), int | float):
        bounds.append((float(schema[exclusive_key]), True, exclusive_key))
    if not bounds:
        return None
    # lower: the larger value is tighter, at equal values the exclusive one; upper: the smaller value.
    return max(bounds, key=lambda b: (b[0], b[1])) if lower else min(bounds, key=lambda b: (b[0], not b[1]))


def _is_multiple(value: float, step: float) -> bool:
    quotient = value / step
    return math.isclose(quotient, round(quotient), rel_tol=0, abs_tol=1e-9)


def _join(path: str, name: str) -> str:
    return (
        f"{path}.{name}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else f"{path}[{json.dumps(name)}]"
    )


def _show(value: Any) -> str:
    if value is _MISSING:
        return "absent"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value, ensure_ascii=False)


def _show_types(types: set[str]) -> str:
    return " or ".join(t for t in _TYPES if t in types) if types != set(_TYPES) else "any type"
