"""Request instances → model input arrays, checked against the dataset contract on the way.

One :class:`InstanceReader` is compiled per served model from its contract and its ONNX signature: a flat
tuple of per-column converters in the exact order of the model's ``numeric`` (float64) and ``category``
(string) input blocks. Reading an instance is then one pass over those tuples that both validates and
converts; there is no second pass to build the arrays. A single-row request writes into arrays allocated
once per model (the common case on the hot path); a batch fills two flat lists that numpy converts in one
call each.

The rules are the contract compiler's (``tollgate_core.contract_rules``, which the validator and the gateway
use too). The converters below are a fast path that accepts exactly the values those rules accept; when a
value is not plainly valid they ask the compiled rule for the violation, so every message is the compiler's
(a property test holds both to the same verdicts).
A missing or null nullable feature becomes NaN / ``""``, which the model imputes. The entity id and the
contract's attributes may be sent along (the entity id routes canaries, attributes are logged with PII
protected); they are type-checked but never required. The label is refused, as is any unknown field, with
a message naming the field, the rule and the value.

Safety of the shared single-row arrays: they are filled and consumed by ``session.run`` with no ``await``
in between, and sessions run on the event loop's thread, so two requests never see each other's values.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np

from tollgate_core import contract_rules
from tollgate_core.contract_rules import FieldCheck, compile_field
from tollgate_core.contracts import DatasetContract, FieldSpec, FieldType
from tollgate_scorer.signature import CATEGORY_INPUT, NUMERIC_INPUT, Signature

MAX_VIOLATIONS = 100
NAN = float("nan")
MISSING_CATEGORY = ""

Violation = dict[str, Any]
Feeds = dict[str, np.ndarray]


class InvalidInstances(ValueError):
    """Instances that break the contract; ``violations`` lists every broken rule (up to a cap)."""

    def __init__(self, violations: list[Violation]) -> None:
        first = violations[0]
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        where = f"instance {first['instance']}: " if first.get("instance") is not None else ""
        super().__init__(f"{where}{first['message']}{more}")
        self.violations = violations


class _Bad(Exception):
    def __init__(self, rule: str, message: str, value: Any) -> None:
        self.rule, self.message, self.value = rule, message, value


def _refusal(rule: FieldCheck, value: Any) -> _Bad:
    """The compiled rule's violation for a value the fast path did not accept."""
    found = rule(value)
    if found is None:  # the fast path refused what the rule accepts: a defect, reported, never silent
        return _Bad("type", f"value {value!r} refused by the scorer but valid for the contract", value)
    return _Bad(found.rule, found.message, found.value)


def numeric_converter(spec: FieldSpec) -> Callable[[Any], float]:
    """A function that returns the model's float64 value for a (non-null) JSON value, or raises ``_Bad``
    with the contract compiler's violation."""
    rule = compile_field(spec)
    lo = -math.inf if spec.minimum is None else spec.minimum
    hi = math.inf if spec.maximum is None else spec.maximum
    if spec.type is FieldType.BOOLEAN:

        def boolean(value: Any) -> float:
            if value is True:
                return 1.0
            if value is False:
                return 0.0
            raise _refusal(rule, value)

        return boolean
    if spec.type is FieldType.INTEGER:

        def integer(value: Any) -> float:
            kind = type(value)
            if kind is int:
                number = float(value)
            elif kind is float and value.is_integer():
                number = value
            else:
                raise _refusal(rule, value)
            if lo <= number <= hi:
                return number
            raise _refusal(rule, value)

        return integer

    def number(value: Any) -> float:
        kind = type(value)
        if kind is float:
            if lo <= value <= hi and value - value == 0.0:  # in range and finite (inf - inf is NaN)
                return float(value)
        elif kind is int:
            number = float(value)
            if lo <= number <= hi:
                return number
        raise _refusal(rule, value)

    return number


def value_checker(spec: FieldSpec) -> Callable[[Any], None]:
    """Check of a field that is not a model input (entity id, attributes): raises ``_Bad``."""
    rule = compile_field(spec)

    def check(value: Any) -> None:
        found = rule(value)
        if found is not None:
            raise _Bad(found.rule, found.message, found.value)

    return check


class ColumnBatch(Sequence[dict[str, Any]]):
    """Instances held as columns, the way an OIP request carries them: input name -> numpy array (binary
    tensor data) or list (JSON ``data``), every column ``n`` long.

    It is a sequence of instance dicts to whatever wants rows (routing by entity id, error messages, the
    inference log), built on first use; the reader takes the columns as they are. Binary tensors have no
    null, so NaN in a floating-point column is one: it reads as ``None`` (accepted where the contract
    makes the feature nullable, named as a missing value where it does not).
    """

    __slots__ = ("_rows", "columns", "n")

    def __init__(self, columns: dict[str, np.ndarray | list[Any]], n: int) -> None:
        self.columns = columns
        self.n = n
        self._rows: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: Any) -> Any:
        # A small batch is read row by row, so its rows are all built anyway; a large one is read as columns
        # and only the rows asked for (the first one, for routing) are made.
        if self._rows is not None or type(index) is not int or self.n < BATCH_THRESHOLD:
            return self.rows()[index]
        row = {}
        for name, column in self.columns.items():
            value = column[index].item() if type(column) is np.ndarray else column[index]
            row[name] = None if type(value) is float and value != value else value
        return row

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows())

    def rows(self) -> list[dict[str, Any]]:
        """One dict per instance, keys in input order, values as JSON would give them."""
        if self._rows is None:
            names = list(self.columns)
            values = [_values(c) for c in self.columns.values()]
            self._rows = [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]
        return self._rows


def _values(column: np.ndarray | list[Any]) -> list[Any]:
    if type(column) is not np.ndarray:
        return column  # type: ignore[return-value]
    values = column.tolist()
    if column.dtype.kind == "f" and np.isnan(column).any():
        values = [None if v != v else v for v in values]
    return values  # type: ignore[no-any-return]


class InstanceReader:
    """Validates instances against one contract and builds one model's input arrays from them."""

    def __init__(self, contract: DatasetContract, signature: Signature) -> None:
        self.contract = contract
        self.entity_field = contract.entity_id.name
        self.label_field = contract.label.name
        fields = contract.fields_by_name
        numeric_spec = signature.input(NUMERIC_INPUT)
        category_spec = signature.input(CATEGORY_INPUT)
        numeric = list(numeric_spec.columns) if numeric_spec is not None else []
        category = list(category_spec.columns) if category_spec is not None else []
        features = set(contract.feature_names)
        for column in numeric + category:
            if column not in features:
                raise ValueError(
                    f"the model reads {column!r}, which is not a feature of {contract.schema_id}"
                )
        for column in numeric:
            if fields[column].type is FieldType.CATEGORY:
                raise ValueError(f"the model reads category {column!r} as a number")
        for column in category:
            if fields[column].type is not FieldType.CATEGORY:
                raise ValueError(
                    f"the model reads {column!r} as a category, the contract types it {fields[column].type}"
                )
        self.layout: tuple[tuple[str, ...], tuple[str, ...]] = (tuple(numeric), tuple(category))
        self._numeric = tuple((n, numeric_converter(fields[n]), fields[n].nullable) for n in numeric)
        self._category = tuple(
            (n, frozenset(fields[n].categories or ()), fields[n].nullable, compile_field(fields[n]))
            for n in category
        )
        used = set(numeric) | set(category)
        self._extra = tuple(
            (f.name, value_checker(f))
            for f in (contract.entity_id, *contract.features, *contract.attributes)
            if f.name not in used
        )
        self._known = frozenset(f.name for f in contract.all_fields if f.name != self.label_field)
        self._k, self._m = len(numeric), len(category)
        self._num1 = np.empty((1, self._k), dtype=np.float64)
        self._cat1 = np.empty((1, self._m), dtype=object)
        self._batch = _BatchReader(contract, numeric, category, self._extra, self._known)

    def read(self, instances: Sequence[Any], indices: Sequence[int] | None = None) -> Feeds:
        """Input arrays for ``instances``; raises :class:`InvalidInstances` listing every broken rule.

        ``indices`` are the instances' positions in the request, for error messages (default 0..n-1).
        A batch whose every value is well-formed is read column by column (:class:`_BatchReader`); any
        doubt sends it through the row-by-row reader, which names every broken rule.
        """
        if len(instances) >= BATCH_THRESHOLD:
            if type(instances) is ColumnBatch:
                feeds = self._batch.read_columns(instances)
            else:
                feeds = self._batch.read(instances)
            if feeds is not None:
                return feeds
        if type(instances) is ColumnBatch:
            instances = instances.rows()
        return self.read_rows(instances, indices)

    def read_rows(self, instances: Sequence[Any], indices: Sequence[int] | None = None) -> Feeds:
        """:meth:`read`, one instance and one value at a time."""
        num: list[float] = []
        cat: list[str] = []
        violations: list[Violation] = []
        append_num, append_cat = num.append, cat.append
        known = self._known
        for position, instance in enumerate(instances):
            if type(instance) is not dict:
                index = indices[position] if indices is not None else position
                violations.append(
                    _violation(
                        index,
                        "instance",
                        "type",
                        f"an instance is an object, got {contract_rules.json_type(instance)}",
                        None,
                    )
                )
                continue
            get = instance.get
            for name, convert, nullable in self._numeric:
                value = get(name)
                if value is None:
                    append_num(NAN)
                    if not nullable:
                        violations.append(self._missing(instance, name, indices, position))
                    continue
                try:
                    append_num(convert(value))
                except _Bad as bad:
                    append_num(NAN)
                    violations.append(_from_bad(bad, name, indices, position))
            for name, allowed, nullable, rule in self._category:
                value = get(name)
                if value is None:
                    append_cat(MISSING_CATEGORY)
                    if not nullable:
                        violations.append(self._missing(instance, name, indices, position))
                elif type(value) is str and value in allowed:
                    append_cat(value)
                else:
                    append_cat(MISSING_CATEGORY)
                    violations.append(_from_bad(_refusal(rule, value), name, indices, position))
            for name, check in self._extra:
                value = get(name)
                if value is not None:
                    try:
                        check(value)
                    except _Bad as bad:
                        violations.append(_from_bad(bad, name, indices, position))
            if not instance.keys() <= known:
                violations.extend(self._unknown(instance, indices, position))
            if len(violations) >= MAX_VIOLATIONS:
                break
        if violations:
            raise InvalidInstances(violations[:MAX_VIOLATIONS])
        return self._arrays(num, cat, len(instances))

    def _arrays(self, num: list[float], cat: list[str], n: int) -> Feeds:
        feeds: Feeds = {}
        if n == 1:
            if self._k:
                self._num1[0] = num
                feeds[NUMERIC_INPUT] = self._num1
            if self._m:
                self._cat1[0] = cat
                feeds[CATEGORY_INPUT] = self._cat1
            return feeds
        if self._k:
            feeds[NUMERIC_INPUT] = np.array(num, dtype=np.float64).reshape(n, self._k)
        if self._m:
            feeds[CATEGORY_INPUT] = np.array(cat, dtype=object).reshape(n, self._m)
        return feeds

    def _missing(
        self, instance: Mapping[str, Any], name: str, indices: Sequence[int] | None, position: int
    ) -> Violation:
        index = indices[position] if indices is not None else position
        found = contract_rules.null(name) if name in instance else contract_rules.required(name)
        return _violation(index, name, found.rule, found.message, None)

    def _unknown(
        self, instance: Mapping[str, Any], indices: Sequence[int] | None, position: int
    ) -> list[Violation]:
        index = indices[position] if indices is not None else position
        found = []
        for key in instance:
            if key == self.label_field:
                found.append(
                    _violation(
                        index,
                        key,
                        "label_field",
                        f"{key} is the label of {self.contract.schema_id}; a scoring request "
                        "does not carry it",
                        None,
                    )
                )
            elif key not in self._known:
                unknown = contract_rules.unknown_field(key, self.contract.schema_id)
                found.append(_violation(index, key, unknown.rule, unknown.message, None))
        return found


# From this many instances on, a request is first read column by column.
BATCH_THRESHOLD = 8
_NONE = type(None)
_NUMBER_TYPES = frozenset((int, float, _NONE))
_BOOLEAN_TYPES = frozenset((bool, _NONE))
_STRING_TYPES = frozenset((str, _NONE))


class _BatchReader:
    """Reads a batch of well-formed instances column by column, with numpy doing the per-value work.

    ``read`` returns the same arrays as the row-by-row reader, or None as soon as anything is not plainly
    valid (a missing key, a type outside the column's, a value out of range or not finite, a null where
    the contract wants a value, an unknown field): the caller then reads the batch row by row, which
    finds and names every broken rule. Per value this costs a few tens of nanoseconds of C instead of a
    Python call, which is what a 1,000-row request or a Kafka batch spends most of its reading time on.
    """

    def __init__(
        self,
        contract: DatasetContract,
        numeric: list[str],
        category: list[str],
        extra: tuple[tuple[str, Callable[[Any], None]], ...],
        known: frozenset[str],
    ) -> None:
        fields = contract.fields_by_name
        self._category = category
        self._k, self._m = len(numeric), len(category)
        specs = [fields[n] for n in numeric]
        booleans = [i for i, f in enumerate(specs) if f.type is FieldType.BOOLEAN]
        numbers = [i for i, f in enumerate(specs) if f.type is not FieldType.BOOLEAN]
        self._integer_cols = np.array(
            [i for i, f in enumerate(specs) if f.type is FieldType.INTEGER], dtype=np.intp
        )
        self._required_cols = np.array([i for i, f in enumerate(specs) if not f.nullable], dtype=np.intp)
        self._lo = np.array(
            [f.minimum if f.minimum is not None else -np.inf for f in specs], dtype=np.float64
        )
        self._hi = np.array([f.maximum if f.maximum is not None else np.inf for f in specs], dtype=np.float64)
        # Per model input column: (name, accepted numpy dtype kinds, accepted JSON value types).
        self._columns = [
            (
                n,
                "b" if f.type is FieldType.BOOLEAN else "iuf",
                _BOOLEAN_TYPES if f.type is FieldType.BOOLEAN else _NUMBER_TYPES,
            )
            for n, f in zip(numeric, specs, strict=True)
        ]
        self._get_numbers = _getter([numeric[i] for i in numbers])
        self._get_booleans = _getter([numeric[i] for i in booleans])
        self._order = np.argsort(np.array(numbers + booleans, dtype=np.intp)) if booleans else None
        self._get_categories = _getter(category)
        self._allowed = [
            frozenset(fields[n].categories or ()) | ({None} if fields[n].nullable else set())
            for n in category
        ]
        self._string_extra = [name for name, _ in extra if fields[name].type is FieldType.STRING]
        self._other_extra = [
            (name, check) for name, check in extra if fields[name].type is not FieldType.STRING
        ]
        self._known = known

    def read(self, instances: Sequence[Any]) -> Feeds | None:
        n = len(instances)
        known = self._known
        try:
            if not all(map(known.issuperset, instances)):  # also raises TypeError for non-objects
                return None
            numbers = list(map(self._get_numbers, instances)) if self._get_numbers else None
            booleans = list(map(self._get_booleans, instances)) if self._get_booleans else None
            categories = list(map(self._get_categories, instances)) if self._get_categories else None
        except (KeyError, TypeError, AttributeError):
            return None  # a missing (maybe nullable) feature, or an instance that is not an object
        if not self._extras_valid(lambda name: [instance.get(name) for instance in instances]):
            return None
        feeds: Feeds = {}
        if self._k:
            blocks = []
            if numbers is not None:
                if not set(map(type, chain.from_iterable(numbers))) <= _NUMBER_TYPES:
                    return None
                try:
                    blocks.append(np.array(numbers, dtype=np.float64).reshape(n, -1))
                except (OverflowError, ValueError):
                    return None
            if booleans is not None:
                if not set(map(type, chain.from_iterable(booleans))) <= _BOOLEAN_TYPES:
                    return None
                blocks.append(np.array(booleans, dtype=np.float64).reshape(n, -1))
            block = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)[:, self._order]
            if not self._valid(block):
                return None
            feeds[NUMERIC_INPUT] = block
        if self._m:
            assert categories is not None
            columns = list(zip(*categories, strict=True))
            for column, allowed in zip(columns, self._allowed, strict=True):
                if not allowed.issuperset(column):
                    return None
            block = np.array(categories, dtype=object).reshape(n, self._m)
            block[block == None] = MISSING_CATEGORY  # noqa: E711 (elementwise comparison)
            feeds[CATEGORY_INPUT] = block
        return feeds

    def read_columns(self, batch: ColumnBatch) -> Feeds | None:
        """:meth:`read` for instances held as columns; None on any doubt, as there. A binary column is
        taken as it is when its dtype is one the row reader would accept every value of; its NaNs are
        nulls (see :class:`ColumnBatch`), refused below where the contract wants a value."""
        columns, n = batch.columns, batch.n
        if not self._known.issuperset(columns):
            return None
        if not self._extras_valid(lambda name: _values(columns[name]) if name in columns else None):
            return None
        feeds: Feeds = {}
        if self._k:
            block = np.empty((n, self._k), dtype=np.float64)
            for j, (name, kinds, types) in enumerate(self._columns):
                column = columns.get(name)
                if column is None:
                    block[:, j] = np.nan  # absent: null (refused below unless the feature is nullable)
                elif type(column) is np.ndarray:
                    if column.dtype.kind not in kinds:
                        return None
                    block[:, j] = column
                else:
                    if not set(map(type, column)) <= types:
                        return None
                    try:
                        block[:, j] = np.array(column, dtype=np.float64)
                    except (OverflowError, ValueError):
                        return None
            if not self._valid(block):
                return None
            feeds[NUMERIC_INPUT] = block
        if self._m:
            block = np.empty((n, self._m), dtype=object)
            for j, (name, allowed) in enumerate(zip(self._category, self._allowed, strict=True)):
                column = columns.get(name)
                if column is None:
                    if None not in allowed:
                        return None
                    block[:, j] = MISSING_CATEGORY
                    continue
                try:
                    if type(column) is not list or not allowed.issuperset(column):
                        return None
                except TypeError:  # unhashable values (objects, arrays)
                    return None
                if None in allowed:  # a nullable category: its nulls are the model's missing value
                    column = [MISSING_CATEGORY if value is None else value for value in column]
                block[:, j] = column
            feeds[CATEGORY_INPUT] = block
        return feeds

    def _extras_valid(self, values_of: Callable[[str], Sequence[Any] | None]) -> bool:
        """Whether the fields that are not model inputs (entity id, attributes) pass their type checks;
        ``values_of(name)`` gives a field's values as JSON would, or None when the batch lacks it."""
        for name in self._string_extra:
            values = values_of(name)
            if values is not None and not set(map(type, values)) <= _STRING_TYPES:
                return False
        for name, check in self._other_extra:
            for value in values_of(name) or ():
                if value is not None:
                    try:
                        check(value)
                    except _Bad:
                        return False
        return True

    def _valid(self, block: np.ndarray) -> bool:
        if np.isinf(block).any():
            return False
        if (block < self._lo).any() or (block > self._hi).any():
            return False
        if len(self._required_cols) and np.isnan(block[:, self._required_cols]).any():
            return False
        if len(self._integer_cols):
            ints = block[:, self._integer_cols]
            if (np.trunc(ints) != ints)[~np.isnan(ints)].any():
                return False
        return True


def _getter(names: list[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]] | None:
    if not names:
        return None
    if len(names) == 1:
        only = names[0]
        return lambda instance: (instance[only],)
    return operator.itemgetter(*names)


def _violation(index: int, field: str, rule: str, message: str, value: Any) -> Violation:
    return {"field": field, "rule": rule, "message": message, "value": value, "instance": index}


def _from_bad(bad: _Bad, name: str, indices: Sequence[int] | None, position: int) -> Violation:
    index = indices[position] if indices is not None else position
    return _violation(index, name, bad.rule, bad.message, bad.value)


def example_instance(contract: DatasetContract) -> dict[str, Any]:
    """A valid instance made from the contract alone (mid-range numbers, first categories): for warm-up."""
    instance: dict[str, Any] = {}
    for spec in contract.features:
        if spec.type is FieldType.CATEGORY:
            instance[spec.name] = (spec.categories or ("",))[0]
        elif spec.type is FieldType.BOOLEAN:
            instance[spec.name] = False
        else:
            lo = spec.minimum if spec.minimum is not None else 0.0
            hi = spec.maximum if spec.maximum is not None else lo + 1.0
            middle = (lo + hi) / 2
            instance[spec.name] = int(middle) if spec.type is FieldType.INTEGER else float(middle)
    return instance
