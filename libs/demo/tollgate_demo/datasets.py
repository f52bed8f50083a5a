"""Data for demos, tests and benchmarks: a real offline data set and a contract-driven synthetic generator.

Nothing here downloads anything. The real data set is the ISLP package's ``Default.csv`` (10,000 credit-card
customers), read from the installed package; ISLP stays an optional dependency, so it is located lazily and a
clear error names it when it is missing. The generator knows nothing about any particular data set: it reads
only a :class:`~tollgate_core.contracts.DatasetContract`, so a new contract file is enough to get volume data
and injected drift for it.

Records are plain dicts keyed by field name, with JSON-ready values (``float``, ``int``, ``str``, ``bool`` or
``None``), exactly as producers send them on ``tollgate.events.raw.v1``.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from tollgate_core.contracts import DatasetContract, FieldSpec, FieldType

Record = dict[str, Any]

# When the label is nullable, this share of generated records arrives without a label (late labels).
LABEL_NULL_FRACTION = 0.02
# Share of values left null in a nullable feature or attribute.
NULL_FRACTION = 0.03
# First event time of generated records; each record is one minute after the previous one.
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


class DatasetUnavailableError(RuntimeError):
    """An optional package that ships a data set is not installed."""


# --------------------------------------------------------------------------------------------------- ISLP


def islp_csv_path(name: str) -> Path:
    """Path of one CSV file shipped in the ISLP package, found without importing ISLP.

    ``importlib.resources.files("ISLP")`` would import the package, and ISLP's ``__init__`` imports
    scikit-learn and pandas; the services that replay demo data must not need either. ``find_spec`` on a
    top-level package only locates it.
    """
    spec = importlib.util.find_spec("ISLP")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailableError(
            "the ISLP package is not installed; install 'islp==0.6.0' (it is in the dev dependency group) "
            "to use its data sets"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"{name}.csv"
    if not path.is_file():
        raise DatasetUnavailableError(f"the installed ISLP package has no data/{name}.csv")
    return path


def load_islp_default() -> list[Record]:
    """The ISLP ``Default`` data set as records following ``credit-default.v1``, in file order.

    The CSV has no identifier or contact field, so each row gets a stable ``customer_id`` from its position
    (``C00001`` is the first row) and a synthetic ``customer_email`` derived from it, so that entity keys and
    PII handling are exercised with real data.
    """
    records: list[Record] = []
    with islp_csv_path("Default").open(newline="", encoding="utf-8") as fh:
        for index, row in enumerate(csv.DictReader(fh), start=1):
            customer_id = f"C{index:05d}"
            records.append(
                {
                    "customer_id": customer_id,
                    "default": _yes_no(row["default"]),
                    "student": "Yes" if _yes_no(row["student"]) else "No",
                    "balance": float(row["balance"]),
                    "income": float(row["income"]),
                    "customer_email": f"{customer_id.lower()}@example.com",
                }
            )
    return records


def _yes_no(value: str) -> bool:
    if value not in ("Yes", "No"):
        raise ValueError(f"expected 'Yes' or 'No', got {value!r}")
    return value == "Yes"


# ---------------------------------------------------------------------------------------------- generator


@dataclass(frozen=True)
class _NumericLaw:
    center: float
    scale: float
    low: float
    high: float
    integer: bool


@dataclass(frozen=True)
class _Concept:
    """The hidden world of one contract: per-field distributions and the model that produces the label."""

    numeric: dict[str, _NumericLaw]
    category_probs: dict[str, np.ndarray]
    boolean_probs: dict[str, float]
    # label score = intercept + sum of per-feature contributions (numeric: weight * z-score;
    # category: weight of the category; boolean: weight if true). One column per output score.
    numeric_weights: dict[str, np.ndarray]
    category_weights: dict[str, np.ndarray]
    boolean_weights: dict[str, np.ndarray]
    intercept: np.ndarray


def _seed_of(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _numeric_law(spec: FieldSpec, rng: np.random.Generator) -> _NumericLaw:
    low = spec.minimum if spec.minimum is not None else -np.inf
    high = spec.maximum if spec.maximum is not None else np.inf
    if np.isfinite(low) and np.isfinite(high):
        span = high - low
        center = low + span * rng.uniform(0.3, 0.7)
        scale = span * rng.uniform(0.08, 0.18)
    elif np.isfinite(low):
        center = low + rng.uniform(20, 80)
        scale = rng.uniform(5, 20)
    elif np.isfinite(high):
        center = high - rng.uniform(20, 80)
        scale = rng.uniform(5, 20)
    else:
        center = rng.uniform(-50, 50)
        scale = rng.uniform(5, 20)
    integer = spec.type is FieldType.INTEGER
    if integer:
        low = float(np.ceil(low)) if np.isfinite(low) else low
        high = float(np.floor(high)) if np.isfinite(high) else high
        scale = max(scale, 1.0)  # keep small integer ranges from collapsing onto one value
    return _NumericLaw(float(center), float(scale), float(low), float(high), integer)


def _n_scores(contract: DatasetContract) -> int:
    label = contract.label
    if label.task == "classification" and label.type is FieldType.CATEGORY and label.categories:
        return len(label.categories)
    return 1


def _concept(contract: DatasetContract, concept_seed: int) -> _Concept:
    rng = np.random.default_rng(concept_seed)
    k = _n_scores(contract)
    fields = [*contract.features, *contract.attributes]
    numeric: dict[str, _NumericLaw] = {}
    category_probs: dict[str, np.ndarray] = {}
    boolean_probs: dict[str, float] = {}
    for spec in fields:
        if spec.type in (FieldType.NUMBER, FieldType.INTEGER):
            numeric[spec.name] = _numeric_law(spec, rng)
        elif spec.type is FieldType.CATEGORY:
            assert spec.categories is not None
            category_probs[spec.name] = rng.dirichlet(np.full(len(spec.categories), 3.0))
        elif spec.type is FieldType.BOOLEAN:
            boolean_probs[spec.name] = float(rng.uniform(0.25, 0.75))

    # Weights are drawn for features only: attributes (segment, PII, times) never drive the label.
    features = contract.features
    raw = rng.normal(0.0, 1.0, size=(len(features), k))
    # A few features matter much more than the rest, as in real data.
    raw *= rng.choice([0.3, 1.0, 2.5], size=(len(features), 1), p=[0.4, 0.4, 0.2])
    numeric_weights: dict[str, np.ndarray] = {}
    category_weights: dict[str, np.ndarray] = {}
    boolean_weights: dict[str, np.ndarray] = {}
    expected = np.zeros(k)
    for row, spec in zip(raw, features, strict=True):
        if spec.type in (FieldType.NUMBER, FieldType.INTEGER):
            numeric_weights[spec.name] = row
        elif spec.type is FieldType.CATEGORY:
            assert spec.categories is not None
            weights = rng.normal(0.0, 1.0, size=(len(spec.categories), k)) * np.abs(row)
            category_weights[spec.name] = weights
            expected += category_probs[spec.name] @ weights
        elif spec.type is FieldType.BOOLEAN:
            boolean_weights[spec.name] = row
            expected += boolean_probs[spec.name] * row
    # Normalise the score so the label is learnable but not trivial: a score spread of about 2 logits.
    total = (
        sum(float(np.sum(w**2)) for w in numeric_weights.values())
        + sum(float(np.sum(w**2)) / max(len(w), 1) for w in category_weights.values())
        + sum(float(np.sum(w**2)) / 4 for w in boolean_weights.values())
    )
    factor = 2.0 / np.sqrt(max(total / k, 1e-12))
    numeric_weights = {n: w * factor for n, w in numeric_weights.items()}
    category_weights = {n: w * factor for n, w in category_weights.items()}
    boolean_weights = {n: w * factor for n, w in boolean_weights.items()}
    # Centring the score makes classes balanced-ish; numeric z-scores already have mean about zero.
    intercept = -expected * factor
    return _Concept(
        numeric, category_probs, boolean_probs, numeric_weights, category_weights, boolean_weights, intercept
    )


def _check_drift(contract: DatasetContract, drift: Mapping[str, float]) -> None:
    known = {f.name: f for f in (*contract.features, *contract.attributes)}
    for name in drift:
        spec = known.get(name)
        if spec is None:
            raise ValueError(
                f"drift names {name!r}, which is not a feature or attribute of {contract.schema_id}"
            )
        if spec.type is FieldType.STRING:
            raise ValueError(f"drift cannot shift string field {name!r}")


def _tilted(probs: np.ndarray, strength: float) -> np.ndarray:
    """Skew category frequencies: positive strength moves weight towards the later categories."""
    if strength == 0 or len(probs) < 2:
        return probs
    ranks = np.linspace(-1.0, 1.0, len(probs))
    tilted: np.ndarray = probs * np.exp(strength * ranks)
    return tilted / float(tilted.sum())


def generate_records(
    contract: DatasetContract,
    n: int,
    seed: int,
    drift: Mapping[str, float] | None = None,
    *,
    start: int = 0,
    concept_seed: int | None = None,
) -> list[Record]:
    """``n`` synthetic records following ``contract``, reproducible from ``seed``.

    - Numbers and integers fall within the contract's ranges, categories come from its allowed lists,
      nullable fields are occasionally null, and the entity id is ``<contract>-<index>`` (``start``
      offsets the index so that batches can continue one another without id clashes).
    - The label follows a hidden model of the features: logistic of a linear score for classification
      (softmax over one score per category for a category label), linear score plus noise for regression.
      The hidden model and the per-field distributions depend on the contract name and ``concept_seed``
      only, never on ``seed``: two seeds are two samples of the same world, so a model trained on one
      generalises to the other.
    - ``drift`` maps a field name to a strength. A number or integer is shifted by that many standard
      deviations; a category's frequencies are tilted towards its later categories (negative: earlier);
      a boolean's log-odds of being true move by the strength. The label still follows the same hidden
      model (covariate shift), so a drifted sample shows both feature drift and the label shift it implies.
    - When the contract names an ``event_time`` field, records get increasing ISO 8601 UTC times, one minute
      apart from :data:`EPOCH` plus ``start`` minutes.
    """
    if n < 0:
        raise ValueError("n must not be negative")
    drift = dict(drift or {})
    _check_drift(contract, drift)
    concept = _concept(contract, concept_seed if concept_seed is not None else _seed_of(contract.contract))
    rng = np.random.default_rng(seed)
    index = np.arange(start, start + n)

    columns: dict[str, list[Any]] = {}
    score = np.tile(concept.intercept, (n, 1))
    for spec in (*contract.features, *contract.attributes):
        if spec.name == contract.event_time:
            continue
        strength = float(drift.get(spec.name, 0.0))
        nulls = rng.random(n) < NULL_FRACTION if spec.nullable else np.zeros(n, dtype=bool)
        if spec.type in (FieldType.NUMBER, FieldType.INTEGER):
            law = concept.numeric[spec.name]
            values = rng.normal(law.center + strength * law.scale, law.scale, size=n)
            values = np.clip(values, law.low, law.high)
            values = np.round(values) if law.integer else np.round(values, 6)
            if spec.name in concept.numeric_weights:
                z = np.where(nulls, 0.0, (values - law.center) / law.scale)
                score += z[:, None] * concept.numeric_weights[spec.name]
            columns[spec.name] = _with_nulls(
                [int(v) for v in values] if law.integer else values.tolist(), nulls
            )
        elif spec.type is FieldType.CATEGORY:
            assert spec.categories is not None
            probs = _tilted(concept.category_probs[spec.name], strength)
            codes = rng.choice(len(spec.categories), size=n, p=probs)
            if spec.name in concept.category_weights:
                contribution = concept.category_weights[spec.name][codes]
                score += np.where(nulls[:, None], 0.0, contribution)
            columns[spec.name] = _with_nulls([spec.categories[c] for c in codes], nulls)
        elif spec.type is FieldType.BOOLEAN:
            p = concept.boolean_probs[spec.name]
            p = float(1.0 / (1.0 + np.exp(-(np.log(p / (1 - p)) + strength))))
            flags = rng.random(n) < p
            if spec.name in concept.boolean_weights:
                score += np.where(flags & ~nulls, 1.0, 0.0)[:, None] * concept.boolean_weights[spec.name]
            columns[spec.name] = _with_nulls(flags.tolist(), nulls)
        else:  # carried strings: identifiers, contact details
            columns[spec.name] = _with_nulls([_string_value(spec, contract, int(i)) for i in index], nulls)

    label_values = _labels(contract, score, rng)
    if contract.label.nullable:
        label_values = _with_nulls(label_values, rng.random(n) < LABEL_NULL_FRACTION)
    columns[contract.label.name] = label_values
    columns[contract.entity_id.name] = [_entity_id(contract, int(i)) for i in index]
    if contract.event_time is not None:
        columns[contract.event_time] = [
            (EPOCH + timedelta(minutes=int(i))).isoformat().replace("+00:00", "Z") for i in index
        ]

    order = [f.name for f in contract.all_fields]
    return [
        dict(zip(order, row, strict=True)) for row in zip(*(columns[name] for name in order), strict=True)
    ]


def _with_nulls(values: list[Any], nulls: np.ndarray) -> list[Any]:
    if not nulls.any():
        return values
    return [None if null else value for value, null in zip(values, nulls.tolist(), strict=True)]


def _entity_id(contract: DatasetContract, index: int) -> str:
    return f"{contract.contract}-{index:08d}"


def _string_value(spec: FieldSpec, contract: DatasetContract, index: int) -> str:
    entity = _entity_id(contract, index)
    if "email" in spec.name.lower():
        return f"{entity}@example.com"
    return f"{spec.name}-{index:08d}"


def _labels(contract: DatasetContract, score: np.ndarray, rng: np.random.Generator) -> list[Any]:
    label = contract.label
    n = score.shape[0]
    if label.task == "regression":
        noisy = score[:, 0] + rng.normal(0.0, 0.5, size=n)
        low = label.minimum if label.minimum is not None else -np.inf
        high = label.maximum if label.maximum is not None else np.inf
        if np.isfinite(low) and np.isfinite(high):
            values = (low + high) / 2 + noisy * (high - low) / 12
        elif np.isfinite(low):
            values = low + 50 + noisy * 10
        elif np.isfinite(high):
            values = high - 50 + noisy * 10
        else:
            values = noisy * 10
        values = np.clip(values, low, high)
        if label.type is FieldType.INTEGER:
            return [int(v) for v in np.round(values)]
        return [float(v) for v in np.round(values, 6)]
    if label.type is FieldType.CATEGORY:
        assert label.categories is not None
        shifted = score - score.max(axis=1, keepdims=True)
        probs = np.exp(shifted)
        probs /= probs.sum(axis=1, keepdims=True)
        draws = rng.random((n, 1))
        codes = (probs.cumsum(axis=1) < draws).sum(axis=1).clip(0, len(label.categories) - 1)
        return [label.categories[c] for c in codes]
    positive: np.ndarray = 1.0 / (1.0 + np.exp(-score[:, 0])) > rng.random(n)
    if label.type is FieldType.BOOLEAN:
        return [bool(v) for v in positive]
    if label.type in (FieldType.NUMBER, FieldType.INTEGER):
        return [int(v) for v in positive]
    raise ValueError(f"cannot generate a {label.type} classification label")
