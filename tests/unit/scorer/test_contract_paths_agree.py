"""The scorer's fast converters and the contract compiler give the same verdict and message for any value.

Generated values (a seeded generator: reproducible): every JSON type, numbers around and at the bounds,
integral floats, NaN and infinities, booleans where numbers are wanted, unknown categories.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from tollgate_core.contract_rules import CompiledContract, compile_field
from tollgate_core.contracts import ContractRegistry, FieldSpec, FieldType
from tollgate_scorer.instances import InstanceReader, InvalidInstances, _Bad, numeric_converter, value_checker
from tollgate_scorer.signature import Signature

CASES = 4000

SPECS = [
    FieldSpec(name="n", type=FieldType.NUMBER, minimum=-2.5, maximum=10),
    FieldSpec(name="u", type=FieldType.NUMBER),
    FieldSpec(name="i", type=FieldType.INTEGER, minimum=0, maximum=41),
    FieldSpec(name="b", type=FieldType.BOOLEAN),
    FieldSpec(name="c", type=FieldType.CATEGORY, categories=("red", "green")),
    FieldSpec(name="s", type=FieldType.STRING),
    FieldSpec(name="p", type=FieldType.CATEGORY, categories=("a", "b"), pii="hash"),  # type: ignore[arg-type]
]


def value(rng: random.Random) -> Any:
    kind = rng.randrange(12)
    if kind == 0:
        return rng.choice([math.nan, math.inf, -math.inf, -0.0])
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.randint(-100, 100)
    if kind == 3:
        return float(rng.randint(-5, 50))  # integral floats
    if kind == 4:
        return rng.uniform(-20, 20)
    if kind == 5:
        return rng.choice([-2.5, 10.0, 10, 0, 41, 42, -1, 1e300, -1e300, 2**70])  # at and beyond the bounds
    if kind == 6:
        return rng.choice(["red", "green", "blue", "", "a", "b", "Red", "1", "true"])
    if kind == 7:
        return [rng.randint(0, 3)]
    if kind == 8:
        return {"x": 1}
    if kind == 9:
        return str(rng.random())
    if kind == 10:
        return rng.choice(["a", "b", "zz"])
    return rng.random() * 60 - 10


def fast(spec: FieldSpec, v: Any) -> tuple[str, str] | None:
    check = (
        numeric_converter(spec)
        if spec.type in (FieldType.NUMBER, FieldType.INTEGER, FieldType.BOOLEAN)
        else value_checker(spec)
    )
    try:
        check(v)
    except _Bad as bad:
        return (bad.rule, bad.message)
    return None


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.name}-{s.type}")
def test_every_value_gets_the_same_verdict_and_message(spec: FieldSpec) -> None:
    rule = compile_field(spec)
    rng = random.Random(f"agree-{spec.name}")
    for _ in range(CASES):
        v = value(rng)
        expected = rule(v)
        got = fast(spec, v)
        assert got == (None if expected is None else (expected.rule, expected.message)), (spec.name, v)


def test_whole_instances_get_the_compilers_violations() -> None:
    contract = ContractRegistry.from_directory().latest("synthetic-risk")
    features = [f.name for f in contract.features]
    numeric = [f.name for f in contract.features if f.type is not FieldType.CATEGORY]
    category = [f.name for f in contract.features if f.type is FieldType.CATEGORY]
    signature = Signature.model_validate(
        {
            "contract": contract.schema_id,
            "contract_digest": contract.digest,
            "task": contract.label.task,
            "inputs": [
                *(
                    [
                        {
                            "name": "numeric",
                            "dtype": "double",
                            "shape": [None, len(numeric)],
                            "columns": numeric,
                        }
                    ]
                    if numeric
                    else []
                ),
                *(
                    [
                        {
                            "name": "category",
                            "dtype": "string",
                            "shape": [None, len(category)],
                            "columns": category,
                        }
                    ]
                    if category
                    else []
                ),
            ],
            "outputs": [],
            "classes": [False, True],
        }
    )
    reader = InstanceReader(contract, signature)
    compiled = CompiledContract(contract)
    rng = random.Random("instances")
    fields = {f.name: f for f in contract.features}
    for _ in range(1500):
        instance: dict[str, Any] = {}
        for name in features:
            if rng.random() < 0.1:
                continue  # missing
            instance[name] = value(rng) if rng.random() < 0.3 else _valid(fields[name], rng)
        if rng.random() < 0.1:
            instance["surprise"] = 1
        try:
            reader.read_rows([instance])
            got: list[tuple[str, str, str]] = []
        except InvalidInstances as exc:
            got = sorted((v["field"], v["rule"], v["message"]) for v in exc.violations)
        # The compiler judges whole records; a scoring request carries the features, and may leave out the
        # label, the entity id and the attributes (logged when sent, never required).
        expected = sorted(
            (v.field, v.rule, v.message)
            for v in compiled.violations({contract.entity_id.name: "e-1", **instance})
            if v.field in features or v.rule != "required"
        )
        assert got == expected, instance


def _valid(spec: FieldSpec, rng: random.Random) -> Any:
    if spec.type is FieldType.CATEGORY:
        return rng.choice(list(spec.categories or ()))
    if spec.type is FieldType.BOOLEAN:
        return rng.random() < 0.5
    lo = spec.minimum if spec.minimum is not None else -10
    hi = spec.maximum if spec.maximum is not None else 10
    return int(rng.uniform(lo, hi)) if spec.type is FieldType.INTEGER else rng.uniform(lo, hi)
