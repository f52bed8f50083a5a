"""Live registrations: which contract changes break a registered version, how a follower applies them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from tollgate_core.contract_rules import CompiledContract
from tollgate_core.contracts import ContractRegistry, DatasetContract
from tollgate_core.events import dumps
from tollgate_core.models import model_catalog
from tollgate_core.registrations import (
    LiveCatalog,
    RegistrationEvent,
    RegistrationPayload,
    breaking_changes,
    contract_document,
    model_digest,
    model_document,
    registration_key,
)
from tollgate_registry.registrar import BreakingChange, contract_decision

BASE = ContractRegistry.from_directory().latest("credit-default")


def changed(contract: DatasetContract, **fields: Any) -> DatasetContract:
    """``contract`` with feature fields changed: ``fields`` maps a feature name to its new attributes."""
    doc = contract_document(contract)
    for feature in doc["features"]:
        feature.update(fields.get(feature["name"], {}))
    return DatasetContract.model_validate(doc)


def numeric_feature(contract: DatasetContract) -> str:
    return next(f.name for f in contract.features if f.maximum is not None)


def test_identical_and_widened_contracts_are_compatible() -> None:
    assert breaking_changes(BASE, BASE) == []
    name = numeric_feature(BASE)
    spec = BASE.fields_by_name[name]
    assert spec.maximum is not None
    wider = changed(BASE, **{name: {"maximum": spec.maximum * 2}})
    assert breaking_changes(BASE, wider) == []


def test_a_tightened_bound_is_named() -> None:
    name = numeric_feature(BASE)
    spec = BASE.fields_by_name[name]
    assert spec.maximum is not None
    narrower = changed(BASE, **{name: {"maximum": spec.maximum / 2}})
    found = breaking_changes(BASE, narrower)
    assert len(found) == 1 and found[0].startswith(f"{name}: maximum-tightened"), found


def test_removed_category_required_field_and_role_change_are_named() -> None:
    doc = contract_document(BASE)
    category = next(f for f in doc["features"] if f["type"] == "category")
    category["categories"] = category["categories"][:1]
    doc["features"].append({"name": "tenure_years", "type": "number"})  # a new required field
    found = breaking_changes(BASE, DatasetContract.model_validate(doc))
    rules = {line.split(": ")[1] for line in found}
    assert "enum-value-removed" in rules and "required-added" in rules, found
    assert any(line.startswith(f"{category['name']}") for line in found)


def test_a_new_nullable_feature_is_compatible() -> None:
    doc = contract_document(BASE)
    doc["features"].append({"name": "tenure_years", "type": "number", "nullable": True})
    assert breaking_changes(BASE, DatasetContract.model_validate(doc)) == []


def test_the_record_schema_agrees_with_the_compiler_on_what_breaks() -> None:
    """A record the old contract accepts and the narrowed one refuses exists exactly when a break is named."""
    name = numeric_feature(BASE)
    spec = BASE.fields_by_name[name]
    assert spec.maximum is not None
    narrower = changed(BASE, **{name: {"maximum": spec.maximum / 2}})
    record = {f.name: _valid(f) for f in BASE.all_fields if not f.nullable}
    record[name] = spec.maximum
    assert CompiledContract(BASE).violations(record) == []
    assert [v.rule for v in CompiledContract(narrower).violations(record)] == ["maximum"]


def _valid(field: Any) -> Any:
    if field.type.value == "category":
        return field.categories[0]
    if field.type.value == "boolean":
        return True
    if field.type.value == "string":
        return "x"
    return field.minimum if field.minimum is not None else 0


def test_the_registry_refuses_a_break_of_a_version_in_force_and_allows_it_as_a_new_version() -> None:
    name = numeric_feature(BASE)
    spec = BASE.fields_by_name[name]
    assert spec.maximum is not None
    narrower = changed(BASE, **{name: {"maximum": spec.maximum / 2}})
    with pytest.raises(BreakingChange, match=rf"{name}: maximum-tightened.*version {BASE.version + 1}"):
        contract_decision(narrower, {BASE.version: BASE})
    doc = contract_document(narrower)
    doc["version"] = BASE.version + 1
    unchanged, notes = contract_decision(DatasetContract.model_validate(doc), {BASE.version: BASE})
    assert not unchanged and any("allowed: a new version" in n for n in notes)
    assert contract_decision(BASE, {BASE.version: BASE}) == (True, [])


def _event(payload: RegistrationPayload) -> bytes:
    return dumps(
        RegistrationEvent(
            event_id=uuid.uuid4(),
            event_type=f"{payload.kind}.registered",
            schema_="registrations.v1",
            occurred_at=datetime.now(UTC),
            producer="registry",
            payload=payload,
        )
    )


def _payload(kind: str, name: str, version: int | None, document: dict[str, Any], digest: str) -> Any:
    return RegistrationPayload.model_validate(
        {
            "kind": kind,
            "name": name,
            "version": version,
            "revision": 1,
            "digest": digest,
            "document": document,
            "registered_by": "ds-alice",
            "registered_at": datetime.now(UTC),
        }
    )


async def test_a_follower_applies_contracts_and_models_in_place_and_tells_listeners() -> None:
    contracts = ContractRegistry.from_directory()
    live = LiveCatalog(contracts, model_catalog())
    heard: list[str] = []
    live.on_change(lambda applied: heard.append(f"{applied.kind} {applied.name}"))

    same = _payload("contract", BASE.contract, BASE.version, contract_document(BASE), BASE.digest)
    await live.apply_record(_event(same))
    assert heard == []  # exactly the seed: nothing changes

    name = numeric_feature(BASE)
    spec = BASE.fields_by_name[name]
    assert spec.maximum is not None
    wider = changed(BASE, **{name: {"maximum": spec.maximum * 2}})
    await live.apply_record(
        _event(_payload("contract", BASE.contract, BASE.version, contract_document(wider), wider.digest))
    )
    assert contracts.get(BASE.schema_id) == wider  # the very registry the service holds
    doc = contract_document(wider)
    doc["version"] = 7
    await live.apply_record(_event(_payload("contract", BASE.contract, 7, doc, "0" * 64)))
    assert contracts.get(f"{BASE.contract}.v7") is not None

    model = next(iter(model_catalog().values())).model_copy(update={"model": "onboarded-risk"})
    await live.apply_record(
        _event(_payload("model", "onboarded-risk", None, model_document(model), model_digest(model)))
    )
    assert live.models["onboarded-risk"] == model
    assert heard == [
        f"contract {BASE.schema_id}",
        f"contract {BASE.contract}.v7",
        "model onboarded-risk",
    ]
    assert registration_key("contract", BASE.contract, 7) in live.registrations


async def test_a_registration_whose_key_and_document_disagree_is_refused() -> None:
    live = LiveCatalog(ContractRegistry.from_directory())
    wrong = _payload("contract", BASE.contract, BASE.version + 5, contract_document(BASE), BASE.digest)
    with pytest.raises(ValueError, match="not its key's"):
        await live.apply_record(_event(wrong))


def test_a_document_that_cannot_be_json_text_is_invalid_not_a_server_error() -> None:
    """Found by the OpenAPI fuzz test: a lone surrogate made orjson raise, a 500."""
    from tollgate_registry.registrar import InvalidDocument, parse_contract, parse_model

    for parse in (parse_contract, parse_model):
        with pytest.raises(InvalidDocument, match="cannot be stored as JSON text"):
            parse({"contract": "x\ud800"})
        with pytest.raises(InvalidDocument, match="NUL"):
            parse({"contract": "x\u0000"})
