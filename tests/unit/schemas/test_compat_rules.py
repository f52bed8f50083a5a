"""The compatibility rules of ``tollgate_core.compat.check`` on schemas as pydantic generates them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from tollgate_core.compat import RULES, Incompatibility, check
from tollgate_core.events import DataEvent, IngestedEvent, RejectedEvent, ValidatedEvent
from tollgate_core.topics import Compatibility


def schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(by_alias=True, mode="serialization")


def rules(found: list[Incompatibility]) -> set[tuple[str, str]]:
    return {(i.path, i.rule) for i in found}


def breaks(old: type[BaseModel], new: type[BaseModel]) -> dict[str, set[tuple[str, str]]]:
    """Incompatibilities per direction: backward (new reads old data) and forward (old reads new data)."""
    return {
        "backward": rules(check(schema(old), schema(new), "BACKWARD")),
        "forward": rules(check(schema(old), schema(new), "FORWARD")),
    }


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")  # additionalProperties: false


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")  # additionalProperties: true


class Base(Closed):
    id: str
    amount: int


class WithRequired(Closed):
    id: str
    amount: int
    currency: str


class WithOptional(Closed):
    id: str
    amount: int
    currency: str = "EUR"


class WithoutAmount(Closed):
    id: str


class OpenBase(Open):
    id: str
    amount: int


class OpenWithOptional(Open):
    id: str
    amount: int
    currency: str = "EUR"


class OpenWithOptionalAny(Open):
    id: str
    amount: int
    currency: Any = None


class OpenWithoutAmount(Open):
    id: str


class AmountNumber(Closed):
    id: str
    amount: float


class AmountNullable(Closed):
    id: str
    amount: int | None = None


class AmountRequiredNullable(Closed):
    id: str
    amount: int | None


class Kind2(Closed):
    kind: Literal["buy", "sell"]


class Kind3(Closed):
    kind: Literal["buy", "sell", "hold"]


class Short(Closed):
    name: str = Field(max_length=10)


class Shorter(Closed):
    name: str = Field(max_length=5, min_length=1)


class Ranged(Closed):
    score: float = Field(ge=0, le=1)


class Wider(Closed):
    score: float = Field(ge=-1, le=1)


class Patterned(Closed):
    name: str = Field(pattern=r"^[a-z]+$")


class Plain(Closed):
    name: str


class Stamp(Closed):
    at: str


class DateStamp(Closed):
    at: datetime


class Item(Closed):
    sku: str
    qty: int


class ItemV2(Closed):
    sku: str
    qty: float


class Order(Closed):
    items: list[Item]


class OrderV2(Closed):
    items: list[ItemV2]


class Tree(Closed):
    label: str
    children: list[Tree] = []


class TreeV2(Closed):
    label: str
    weight: float = 1.0
    children: list[TreeV2] = []


def test_adding_a_required_field_breaks_backward() -> None:
    found = breaks(Base, WithRequired)
    assert ("$.currency", "required-added") in found["backward"]
    # old readers are closed: they reject the new field in new data too
    assert found["forward"] == {("$.currency", "property-added")}


def test_adding_a_required_field_to_an_open_schema_breaks_backward_only() -> None:
    class OpenWithRequired(Open):
        id: str
        amount: int
        currency: str

    found = breaks(OpenBase, OpenWithRequired)
    assert ("$.currency", "required-added") in found["backward"]
    assert found["forward"] == set()


def test_removing_a_required_field_breaks_forward() -> None:
    found = breaks(OpenBase, OpenWithoutAmount)
    # old readers need it; and new writers may now put anything under that name (open content)
    assert found["forward"] == {("$.amount", "required-removed"), ("$.amount", "property-removed")}
    # open new readers accept the old field, whatever it holds
    assert found["backward"] == set()


def test_removing_a_field_from_a_closed_schema_breaks_both() -> None:
    found = breaks(Base, WithoutAmount)
    assert found["forward"] == {("$.amount", "required-removed")}
    assert found["backward"] == {("$.amount", "property-removed")}


def test_optional_field_added_to_closed_schema_is_backward_compatible() -> None:
    # Old data never carries the field (closed), so new readers accept all of it.
    found = breaks(Base, WithOptional)
    assert found["backward"] == set()
    assert found["forward"] == {("$.currency", "property-added")}
    assert check(schema(Base), schema(WithOptional), Compatibility.BACKWARD_TRANSITIVE) == []
    assert check(schema(Base), schema(WithOptional), Compatibility.FULL_TRANSITIVE) != []


def test_optional_field_added_to_open_schema_is_forward_compatible_only() -> None:
    # Old writers could put anything under the new name (open content), so the new constraint may reject it.
    found = breaks(OpenBase, OpenWithOptional)
    assert found["backward"] == {("$.currency", "property-added")}
    assert found["forward"] == set()


def test_optional_untyped_field_added_to_open_schema_is_fully_compatible() -> None:
    assert breaks(OpenBase, OpenWithOptionalAny) == {"backward": set(), "forward": set()}


def test_type_narrowing_number_to_integer_breaks_backward() -> None:
    found = breaks(AmountNumber, Base)
    assert found["backward"] == {("$.amount", "type-narrowed")}
    assert found["forward"] == set()


def test_type_widening_integer_to_number_breaks_forward() -> None:
    found = breaks(Base, AmountNumber)
    assert found["backward"] == set()
    assert found["forward"] == {("$.amount", "type-widened")}
    assert check(schema(Base), schema(AmountNumber), "BACKWARD_TRANSITIVE") == []
    assert rules(check(schema(Base), schema(AmountNumber), "FULL_TRANSITIVE")) == {
        ("$.amount", "type-widened")
    }


def test_enum_value_added_breaks_forward_and_removed_breaks_backward() -> None:
    added = breaks(Kind2, Kind3)
    assert added == {"backward": set(), "forward": {("$.kind", "enum-value-added")}}
    removed = breaks(Kind3, Kind2)
    assert removed == {"backward": {("$.kind", "enum-value-removed")}, "forward": set()}


def test_additional_properties_tightened_breaks_backward() -> None:
    found = breaks(OpenBase, Base)
    assert found["backward"] == {("$.*", "additional-properties-tightened")}
    assert found["forward"] == set()
    assert breaks(Base, OpenBase)["forward"] == {("$.*", "additional-properties-loosened")}


def test_nullable_to_required_breaks_backward() -> None:
    found = breaks(AmountNullable, Base)
    assert found["backward"] == {("$.amount", "required-added"), ("$.amount", "nullable-removed")}
    assert found["forward"] == set()


def test_required_to_nullable_breaks_forward() -> None:
    found = breaks(Base, AmountRequiredNullable)
    assert found["backward"] == set()
    assert found["forward"] == {("$.amount", "nullable-added")}


def test_string_and_number_bounds() -> None:
    assert breaks(Short, Shorter) == {
        "backward": {("$.name", "maxLength-tightened"), ("$.name", "minLength-tightened")},
        "forward": set(),
    }
    assert breaks(Ranged, Wider) == {"backward": set(), "forward": {("$.score", "minimum-loosened")}}
    assert breaks(Plain, Patterned)["backward"] == {("$.name", "pattern-changed")}
    assert breaks(Patterned, Plain) == {"backward": set(), "forward": {("$.name", "pattern-changed")}}


def test_format_added_breaks_backward() -> None:
    found = breaks(Stamp, DateStamp)
    assert found == {"backward": {("$.at", "format-changed")}, "forward": set()}


def test_changes_inside_array_items_and_defs_are_found() -> None:
    found = breaks(Order, OrderV2)
    assert found == {"backward": set(), "forward": {("$.items[*].qty", "type-widened")}}


def test_recursive_models_terminate() -> None:
    assert breaks(Tree, Tree) == {"backward": set(), "forward": set()}
    found = breaks(Tree, TreeV2)
    assert found["backward"] == set()
    # children are the same pair of definitions again: reported once, where it first appears
    assert found["forward"] == {("$.weight", "property-added")}


@pytest.mark.parametrize("model", [DataEvent, IngestedEvent, ValidatedEvent, RejectedEvent])
def test_every_event_schema_is_fully_compatible_with_itself(model: type[BaseModel]) -> None:
    assert check(schema(model), schema(model), Compatibility.FULL_TRANSITIVE) == []


def test_the_platform_events_are_not_interchangeable() -> None:
    found = check(schema(IngestedEvent), schema(RejectedEvent), "BACKWARD")
    assert ("$.violations", "required-added") in rules(found)
    assert all(i.direction == "backward" for i in found)


def test_none_allows_anything() -> None:
    assert check(schema(Base), schema(Kind2), Compatibility.NONE) == []


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown compatibility mode"):
        check({}, {}, "SIDEWAYS")


def test_raw_schema_keywords() -> None:
    integer = {"type": "integer"}
    assert check({"type": "integer"}, {"type": ["integer", "null"]}, "BACKWARD") == []
    assert rules(check({"type": ["integer", "null"]}, integer, "BACKWARD")) == {("$", "nullable-removed")}
    assert check({"const": 3}, {"type": "integer", "minimum": 0}, "BACKWARD") == []
    assert rules(check({"const": -3}, {"type": "integer", "minimum": 0}, "BACKWARD")) == {
        ("$", "minimum-tightened")
    }
    assert (
        check({"type": "integer", "multipleOf": 10}, {"type": "integer", "multipleOf": 5}, "BACKWARD") == []
    )
    assert rules(
        check({"type": "integer", "exclusiveMinimum": 0}, {"type": "integer", "minimum": 0}, "FULL")
    ) == {("$", "exclusiveMinimum-loosened")}
    assert rules(check({"type": "array"}, {"type": "array", "maxItems": 3}, "BACKWARD")) == {
        ("$", "maxItems-tightened")
    }
    prefix_old = {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": False}
    prefix_new = {"type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}], "items": False}
    assert rules(check(prefix_old, prefix_new, "FORWARD")) == {("$[1]", "type-widened")}
    # anything (pydantic's Any) narrowed to a string
    assert rules(check({}, {"type": "string"}, "BACKWARD")) == {("$", "type-narrowed")}
    assert check({"type": "string"}, {}, "BACKWARD") == []
    # a keyword the checker does not model must not change unnoticed
    assert rules(check({"type": "string"}, {"type": "string", "not": {"const": ""}}, "BACKWARD")) == {
        ("$", "unsupported-change")
    }
    # references that cannot be followed are reported, not raised
    remote = {"$ref": "https://example.com/order.json"}
    assert rules(check({"type": "string"}, remote, "BACKWARD")) == {("$", "unsupported-change")}
    assert rules(check({"$ref": "#/$defs/Gone"}, {}, "FORWARD")) == {("$", "unsupported-change")}
    # dict[str, int] -> dict[str, float]
    old_map = {"type": "object", "additionalProperties": {"type": "integer"}}
    new_map = {"type": "object", "additionalProperties": {"type": "number"}}
    assert check(old_map, new_map, "BACKWARD") == []
    assert rules(check(old_map, new_map, "FORWARD")) == {("$.*", "type-widened")}


def test_every_rule_name_is_documented() -> None:
    readme_text = (_readme()).read_text(encoding="utf-8")
    for aspect, (on_backward, on_forward, reason) in RULES.items():
        assert reason, aspect
        for name in (on_backward, on_forward):
            documented = name.replace("{keyword}", "<keyword>")
            assert f"`{documented}`" in readme_text, f"{documented} is not in schemas/README.md"


def _readme() -> Any:
    from tollgate_core.paths import schemas_dir

    return schemas_dir() / "README.md"
