"""Two versions of a model side by side: metrics (which is better, by how much), gates, data and parameters.

A pure function of two stored versions; the API (``GET /v1/models/{model}/compare``) and ``tollgate compare``
only present it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tollgate_core.metrics import METRICS, Direction
from tollgate_registry.ports import VersionDetail

Better = Literal["a", "b", "same"] | None


class MetricComparison(BaseModel):
    model_config = ConfigDict(extra="forbid")

    a: float | None
    b: float | None
    delta: float | None = Field(description="b - a, when both report the metric.")
    better: Better = Field(
        description="Which version is better by the metric's direction (None: not comparable)."
    )


class GateComparison(BaseModel):
    model_config = ConfigDict(extra="forbid")

    a: bool | None = Field(description="Whether version a passed the gate (None: not evaluated for it).")
    b: bool | None


class Difference(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str = Field(description="What differs, e.g. lineage.family or hyperparameters.max_depth.")
    a: Any
    b: Any


class Comparison(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    a: str = Field(description="Version a.")
    b: str = Field(description="Version b.")
    stages: dict[str, str] = Field(description="Each version's stage.")
    metrics: dict[str, MetricComparison] = Field(description="Holdout metrics of either version.")
    gates: dict[str, GateComparison] = Field(description="Every gate evaluated for either version.")
    differences: list[Difference] = Field(
        description="Training data, family, hyperparameters, contract, code and libraries that differ."
    )


def _better(metric: str, a: float, b: float) -> Better:
    known = METRICS.get(metric)
    if known is None:
        return None
    if a == b:
        return "same"
    higher = known.direction is Direction.HIGHER_IS_BETTER
    return "b" if (b > a) == higher else "a"


def _metrics(a: dict[str, float], b: dict[str, float]) -> dict[str, MetricComparison]:
    out = {}
    for name in sorted(set(a) | set(b)):
        va, vb = a.get(name), b.get(name)
        out[name] = MetricComparison(
            a=va,
            b=vb,
            delta=vb - va if va is not None and vb is not None else None,
            better=_better(name, va, vb) if va is not None and vb is not None else None,
        )
    return out


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key in sorted(value):
            flat.update(_flat(f"{prefix}.{key}", value[key]))
        return flat
    return {prefix: value}


def _differences(a: VersionDetail, b: VersionDetail) -> list[Difference]:
    la, lb = a.candidate.lineage, b.candidate.lineage
    fields: dict[str, tuple[Any, Any]] = {
        "contract": (la.contract, lb.contract),
        "contract_digest": (la.contract_digest, lb.contract_digest),
        "data.row_count": (la.row_count, lb.row_count),
        "data.data_hash": (la.data_hash, lb.data_hash),
        "data.offsets": (
            [o.model_dump() for o in la.offsets],
            [o.model_dump() for o in lb.offsets],
        ),
        "family": (la.family, lb.family),
        "seed": (la.seed, lb.seed),
        "code_version": (la.code_version, lb.code_version),
        "trigger": (la.trigger, lb.trigger),
    }
    ha, hb = _flat("hyperparameters", la.hyperparameters), _flat("hyperparameters", lb.hyperparameters)
    for key in sorted(set(ha) | set(hb)):
        fields[key] = (ha.get(key), hb.get(key))
    for key in sorted(set(la.holdout) | set(lb.holdout)):
        fields[f"holdout.{key}"] = (la.holdout.get(key), lb.holdout.get(key))
    for key in sorted(set(la.libraries) | set(lb.libraries)):
        fields[f"libraries.{key}"] = (la.libraries.get(key), lb.libraries.get(key))
    return [Difference(field=name, a=va, b=vb) for name, (va, vb) in fields.items() if va != vb]


def compare_versions(a: VersionDetail, b: VersionDetail) -> Comparison:
    """``a`` and ``b`` (two versions of one model) side by side."""
    gates_a = {g.gate: g.passed for g in a.gates}
    gates_b = {g.gate: g.passed for g in b.gates}
    names = list(dict.fromkeys([*gates_a, *gates_b]))
    return Comparison(
        model=a.record.model,
        a=a.record.version,
        b=b.record.version,
        stages={a.record.version: a.record.stage.value, b.record.version: b.record.stage.value},
        metrics=_metrics(dict(a.candidate.metrics), dict(b.candidate.metrics)),
        gates={n: GateComparison(a=gates_a.get(n), b=gates_b.get(n)) for n in names},
        differences=_differences(a, b),
    )
