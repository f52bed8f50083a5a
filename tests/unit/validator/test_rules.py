from __future__ import annotations

import math

import pytest

from tollgate_core.contract_rules import CompiledContract
from tollgate_core.contracts import ContractRegistry
from tollgate_core.reference import CategorySummary, NumericSummary, ReferenceProfile
from tollgate_validator.rules import Expectations


@pytest.fixture(scope="module")
def compiled() -> CompiledContract:
    contract = ContractRegistry.from_directory().get("credit-default.v1")
    assert contract is not None
    return CompiledContract(contract)


def good() -> dict[str, object]:
    return {"customer_id": "C1", "student": "No", "balance": 10.0, "income": 5.0, "default": False}


def test_valid_record_has_no_violations(compiled: CompiledContract) -> None:
    assert compiled.violations(good()) == []
    unlabeled = good()
    del unlabeled["default"]  # label is nullable: late labels
    assert compiled.violations(unlabeled) == []


@pytest.mark.parametrize(
    ("change", "field", "rule"),
    [
        ({"student": "Maybe"}, "student", "category"),
        ({"student": 1}, "student", "type"),
        ({"balance": -1}, "balance", "minimum"),
        ({"balance": 10001}, "balance", "maximum"),
        ({"balance": "10"}, "balance", "type"),
        ({"balance": True}, "balance", "type"),
        ({"balance": math.inf}, "balance", "type"),
        ({"balance": None}, "balance", "nullable"),
        ({"default": "yes"}, "default", "type"),
        ({"customer_id": 7}, "customer_id", "type"),
        ({"surprise": 1}, "surprise", "unknown_field"),
    ],
)
def test_each_rule(compiled: CompiledContract, change: dict[str, object], field: str, rule: str) -> None:
    rec = {**good(), **change}
    problems = compiled.violations(rec)
    assert [(p.field, p.rule) for p in problems] == [(field, rule)]
    assert field in problems[0].message


def test_every_failure_is_listed(compiled: CompiledContract) -> None:
    rec = {"student": "Maybe", "balance": -3, "income": None}
    rules = {(p.field, p.rule) for p in compiled.violations(rec)}
    assert rules == {("customer_id", "required"), ("student", "category"), ("balance", "minimum")}


def test_expectations_flag_far_outside_training() -> None:
    numeric = NumericSummary(
        count=100,
        null_fraction=0,
        mean=50,
        std=10,
        min=0,
        max=100,
        quantiles={"0.001": 1, "0.25": 40, "0.75": 60, "0.999": 99},
        bin_edges=[50],
        bin_fractions=[0.5, 0.5],
    )
    ref = ReferenceProfile(
        contract="credit-default.v1",
        row_count=100,
        features={
            "balance": numeric,
            "student": CategorySummary(count=100, null_fraction=0, frequencies={"No": 1.0}),
        },
        prediction=numeric,
    )
    exp = Expectations(ref, iqr_factor=3)
    assert exp.flags({"balance": 150, "student": "No"}) == []  # within 99 + 3*20
    flags = exp.flags({"balance": 160, "student": "Yes"})
    assert {(f["field"], f["check"]) for f in flags} == {
        ("balance", "outside_training_range"),
        ("student", "unseen_category"),
    }


def test_messages_never_quote_the_value_of_a_personal_data_field() -> None:
    """A rejection (on events.rejected, readable by every consumer of the topic) names the field and the
    rule of a PII field, never its value; other fields keep the value in the message."""
    base = ContractRegistry.from_directory().get("credit-default.v1")
    assert base is not None
    doc = base.model_dump(mode="json")
    for spec in doc["features"]:
        if spec["name"] == "balance":
            spec["pii"] = "mask"
        if spec["name"] == "student":
            spec["pii"] = "hash"
    compiled = CompiledContract(type(base).model_validate(doc))
    cases = [
        ({"balance": -123456.5}, "balance", "minimum", "-123456.5"),
        ({"balance": 987654321}, "balance", "maximum", "987654321"),
        ({"student": "Secret-Value-77"}, "student", "category", "Secret-Value-77"),
    ]
    for change, field, rule, shown in cases:
        (problem,) = compiled.violations({**good(), **change})
        assert (problem.field, problem.rule) == (field, rule)
        assert shown not in problem.message, problem.message
        assert field in problem.message and "withheld" in problem.message
    plain = CompiledContract(base)
    (problem,) = plain.violations({**good(), "balance": -123456.5})
    assert "-123456.5" in problem.message  # not personal data: the value helps whoever fixes it
