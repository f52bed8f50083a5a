"""Demo data: the ISLP Default data set as contract records, and the contract-driven generator."""

from __future__ import annotations

import importlib.util
from collections import Counter
from typing import Any

import numpy as np
import pytest

from tollgate_core.contracts import ContractRegistry, DatasetContract, FieldSpec, FieldType
from tollgate_demo.datasets import (
    DatasetUnavailableError,
    generate_records,
    load_islp_default,
)

REGISTRY = ContractRegistry.from_directory()
CREDIT = REGISTRY.latest("credit-default")
RISK = REGISTRY.latest("synthetic-risk")

# Exercises what the shipped contracts do not: unbounded and half-bounded ranges, a multi-class category
# label, a nullable boolean, a category attribute and no event time.
ODD = DatasetContract.model_validate(
    {
        "contract": "odd-shapes",
        "version": 1,
        "entity_id": {"name": "key", "type": "string"},
        "label": {
            "name": "tier",
            "type": "category",
            "task": "classification",
            "categories": ["a", "b", "c"],
        },
        "features": [
            {"name": "free", "type": "number"},
            {"name": "low_only", "type": "number", "minimum": -5},
            {"name": "high_only", "type": "integer", "maximum": 3},
            {"name": "tiny", "type": "integer", "minimum": 0, "maximum": 1},
            {"name": "flag", "type": "boolean", "nullable": True},
            {"name": "colour", "type": "category", "categories": ["red", "green"], "nullable": True},
        ],
        "attributes": [{"name": "group", "type": "category", "categories": ["x", "y"]}],
        "segment": "group",
    }
)

REGRESSION = DatasetContract.model_validate(
    {
        "contract": "house-price",
        "version": 1,
        "entity_id": {"name": "house_id", "type": "string"},
        "label": {"name": "price", "type": "number", "task": "regression", "minimum": 0, "maximum": 2000000},
        "features": [
            {"name": "area", "type": "number", "minimum": 20, "maximum": 400},
            {"name": "rooms", "type": "integer", "minimum": 1, "maximum": 12},
        ],
    }
)


def violations(contract: DatasetContract, record: dict[str, Any]) -> list[str]:
    """Independent re-statement of what the contract allows, to check the generator against."""
    problems = []
    if set(record) != {f.name for f in contract.all_fields}:
        problems.append(f"fields {sorted(record)}")
    for spec in contract.all_fields:
        value = record.get(spec.name)
        if value is None:
            if not spec.nullable:
                problems.append(f"{spec.name} is null")
            continue
        problems.extend(_type_problems(spec, value))
    return problems


def _type_problems(spec: FieldSpec, value: Any) -> list[str]:
    if spec.type is FieldType.NUMBER:
        ok = isinstance(value, float)
    elif spec.type is FieldType.INTEGER:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif spec.type is FieldType.BOOLEAN:
        ok = isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        return [f"{spec.name}={value!r} is not {spec.type}"]
    if spec.minimum is not None and value < spec.minimum:
        return [f"{spec.name}={value} below {spec.minimum}"]
    if spec.maximum is not None and value > spec.maximum:
        return [f"{spec.name}={value} above {spec.maximum}"]
    if spec.categories is not None and value not in spec.categories:
        return [f"{spec.name}={value!r} not allowed"]
    return []


# --------------------------------------------------------------------------------------------------- ISLP


def test_islp_default_follows_credit_default_contract() -> None:
    records = load_islp_default()
    assert len(records) == 10_000
    assert records[0] == {
        "customer_id": "C00001",
        "default": False,
        "student": "No",
        "balance": pytest.approx(729.5264952072861),
        "income": pytest.approx(44361.62507426691),
        "customer_email": "c00001@example.com",
    }
    assert records[-1]["customer_id"] == "C10000"
    assert len({r["customer_id"] for r in records}) == 10_000
    assert sum(r["default"] for r in records) == 333  # the published default count of the data set
    assert Counter(r["student"] for r in records) == {"No": 7056, "Yes": 2944}
    bad = [(r["customer_id"], p) for r in records for p in violations(CREDIT, r)]
    assert bad == []


def test_islp_missing_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ISLP" else real(name, *a)
    )
    with pytest.raises(DatasetUnavailableError, match="islp"):
        load_islp_default()


# ---------------------------------------------------------------------------------------------- generator


@pytest.mark.parametrize("contract", [CREDIT, RISK, ODD, REGRESSION], ids=lambda c: c.contract)
def test_generated_records_respect_the_contract(contract: DatasetContract) -> None:
    records = generate_records(contract, 3000, seed=11)
    assert len(records) == 3000
    bad = [p for r in records for p in violations(contract, r)]
    assert bad[:5] == []
    ids = [r[contract.entity_id.name] for r in records]
    assert len(set(ids)) == len(ids)
    for spec in contract.features:
        nulls = sum(r[spec.name] is None for r in records)
        assert (nulls > 0) == spec.nullable, spec.name
        if spec.categories:
            seen = {r[spec.name] for r in records} - {None}
            assert seen == set(spec.categories), spec.name


def test_generator_is_deterministic_and_seeded() -> None:
    assert generate_records(RISK, 200, seed=5) == generate_records(RISK, 200, seed=5)
    assert generate_records(RISK, 200, seed=5) != generate_records(RISK, 200, seed=6)


def test_entity_ids_are_stable_and_batches_continue() -> None:
    first = generate_records(RISK, 3, seed=1)
    later = generate_records(RISK, 3, seed=2, start=3)
    assert [r["account_id"] for r in first + later] == [f"synthetic-risk-{i:08d}" for i in range(6)]
    assert first[0]["contact_email"] == "synthetic-risk-00000000@example.com"
    times = [r["observed_at"] for r in first + later]
    assert (
        times == sorted(times) and times[0] == "2024-01-01T00:00:00Z" and times[3] == "2024-01-01T00:03:00Z"
    )


def test_classification_labels_are_balanced_ish() -> None:
    for contract in (CREDIT, RISK):
        labels = [r[contract.label.name] for r in generate_records(contract, 4000, seed=3)]
        present = [v for v in labels if v is not None]
        assert 0.3 < np.mean(present) < 0.7
    tiers = Counter(r["tier"] for r in generate_records(ODD, 4000, seed=3))
    assert set(tiers) == {"a", "b", "c"} and min(tiers.values()) > 200


def test_label_nulls_only_when_the_label_is_nullable() -> None:
    assert any(r["default"] is None for r in generate_records(CREDIT, 2000, seed=1))
    assert all(r["high_risk"] is not None for r in generate_records(RISK, 2000, seed=1))


def test_label_follows_the_features() -> None:
    """The hidden model makes the label learnable: a linear probe on the features beats chance clearly."""
    records = generate_records(RISK, 4000, seed=9)
    numeric = [f.name for f in RISK.features if f.type in (FieldType.NUMBER, FieldType.INTEGER)]
    x = np.array([[np.nan if r[n] is None else float(r[n]) for n in numeric] for r in records])
    x = np.where(np.isnan(x), np.nanmean(x, axis=0), x)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    y = np.array([r["high_risk"] for r in records], dtype=float)
    coef, *_ = np.linalg.lstsq(np.c_[x, np.ones(len(x))], y, rcond=None)
    accuracy = np.mean((np.c_[x, np.ones(len(x))] @ coef > 0.5) == y)
    assert accuracy > 0.65


def test_regression_labels_stay_in_range_and_vary() -> None:
    prices = np.array([r["price"] for r in generate_records(REGRESSION, 2000, seed=2)])
    assert prices.min() >= 0 and prices.max() <= 2_000_000 and prices.std() > 10_000


def test_same_world_for_every_seed() -> None:
    """Distributions depend on the contract, not the seed: two seeds are two samples of one world."""
    a = np.array([r["credit_score"] for r in generate_records(RISK, 4000, seed=1)])
    b = np.array([r["credit_score"] for r in generate_records(RISK, 4000, seed=2)])
    assert abs(a.mean() - b.mean()) < 0.1 * a.std()


def test_numeric_drift_shifts_by_standard_deviations() -> None:
    base = np.array([r["credit_utilization"] for r in generate_records(RISK, 5000, seed=4)])
    drifted = np.array(
        [
            r["credit_utilization"]
            for r in generate_records(RISK, 5000, seed=4, drift={"credit_utilization": 1.5})
        ]
    )
    shift = (drifted.mean() - base.mean()) / base.std()
    assert 1.2 < shift < 1.6  # clipping at the contract's bounds can only pull it in
    assert drifted.max() <= 1.0


def test_category_and_boolean_drift_skews_frequencies() -> None:
    base = generate_records(RISK, 5000, seed=4)
    drifted = generate_records(RISK, 5000, seed=4, drift={"channel": 2.0, "autopay_enabled": -2.0})
    cats = RISK.fields_by_name["channel"].categories or ()
    before = np.array([sum(r["channel"] == c for r in base) for c in cats]) / len(base)
    after = np.array([sum(r["channel"] == c for r in drifted) for c in cats]) / len(drifted)
    assert 0.5 * np.abs(after - before).sum() > 0.2  # total variation distance
    assert after[-1] > before[-1] and after[0] < before[0]
    assert (
        np.mean([r["autopay_enabled"] for r in drifted]) < np.mean([r["autopay_enabled"] for r in base]) - 0.2
    )
    # Untouched features keep their distribution.
    assert (
        abs(np.mean([r["interest_rate"] for r in drifted]) - np.mean([r["interest_rate"] for r in base]))
        < 0.01
    )


def test_drift_moves_the_label_through_the_features() -> None:
    """Covariate shift: the concept is unchanged, so shifting an important feature moves the label rate."""
    base = np.mean([r["high_risk"] for r in generate_records(RISK, 5000, seed=8)])
    moved = [
        abs(
            np.mean([r["high_risk"] for r in generate_records(RISK, 5000, seed=8, drift={f.name: 3.0})])
            - base
        )
        for f in RISK.features
        if f.type is FieldType.NUMBER
    ]
    assert max(moved) > 0.1


@pytest.mark.parametrize(
    ("drift", "message"), [({"nope": 1.0}, "not a feature"), ({"contact_email": 1.0}, "string field")]
)
def test_bad_drift_is_refused(drift: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_records(RISK, 10, seed=1, drift=drift)
