"""Canary routing: sticky per entity, split within tolerance of the weight, monotone in the weight."""

from __future__ import annotations

import math

from tests.unit.scorer.support import MODEL, serving
from tollgate_core.scoring import Route
from tollgate_scorer.routing import BUCKETS, ModelRoute, ModelTable, bucket


def test_bucket_is_stable_and_in_range() -> None:
    assert bucket(MODEL, "C00042") == bucket(MODEL, "C00042")
    assert all(0 <= bucket(MODEL, f"E{i}") < BUCKETS for i in range(1000))
    # Salted by model: another model's canary picks other entities.
    same = sum(bucket(MODEL, f"E{i}") == bucket("other-model", f"E{i}") for i in range(1000))
    assert same < 10


def test_split_is_within_tolerance_of_the_weight_and_sticky() -> None:
    route = ModelRoute(MODEL, serving("1"), serving("2"), canary_weight=0.2)
    n = 20_000
    first = {f"E{i}": route.pick(f"E{i}") for i in range(n)}
    canary = sum(
        1 for model_route in first.values() if model_route is not None and model_route[1] is Route.CANARY
    )
    tolerance = 4 * math.sqrt(0.2 * 0.8 / n)  # four standard deviations of a binomial share
    assert abs(canary / n - 0.2) < tolerance
    again = {f"E{i}": route.pick(f"E{i}") for i in range(n)}
    assert again == first
    for picked in first.values():
        assert picked is not None
        model, why = picked
        assert (model.version, why) in {("1", Route.CHAMPION), ("2", Route.CANARY)}


def test_raising_the_weight_only_moves_entities_to_the_canary() -> None:
    low = ModelRoute(MODEL, serving("1"), serving("2"), canary_weight=0.1)
    high = ModelRoute(MODEL, serving("1"), serving("2"), canary_weight=0.5)
    for i in range(5000):
        if low.pick(f"E{i}") == (serving("2"), Route.CANARY):
            assert high.pick(f"E{i}") == (serving("2"), Route.CANARY)


def test_shadow_never_routes_to_staging() -> None:
    route = ModelRoute(MODEL, serving("1"), serving("2"), canary_weight=0.5, shadow=True)
    assert route.canary_buckets == 0
    assert route.shadow_model is serving("2")
    assert {route.pick(f"E{i}") for i in range(2000)} == {(serving("1"), Route.CHAMPION)}


def test_without_production() -> None:
    assert ModelRoute(MODEL, None, serving("2"), canary_weight=0.1).pick("E1") == (serving("2"), Route.CANARY)
    assert ModelRoute(MODEL, None, serving("2"), shadow=True).pick("E1") is None
    assert ModelRoute(MODEL, None).pick("E1") is None


def test_weight_without_staging_is_ignored_and_versions_resolve() -> None:
    route = ModelRoute(MODEL, serving("1"), None, canary_weight=0.9)
    assert route.canary_buckets == 0
    assert route.version("1") is serving("1") and route.version("2") is None


def test_table_swaps_by_replacing_the_reference() -> None:
    table = ModelTable()
    old = ModelRoute(MODEL, serving("1"))
    table.set(old)
    held = table.get(MODEL)  # a request in flight holds this
    table.set(ModelRoute(MODEL, serving("2")))
    assert held is old and held.production is serving("1")
    current = table.get(MODEL)
    assert current is not None and current.production is serving("2")
    table.remove(MODEL)
    assert table.get(MODEL) is None and len(table) == 0
