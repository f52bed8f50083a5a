"""Contracts and data sets shared by the trainer's unit tests; kept small so the suite stays fast."""

from __future__ import annotations

from functools import cache
from typing import Any

from tollgate_core.contracts import ContractRegistry, DatasetContract
from tollgate_demo.datasets import generate_records, load_islp_default

REGISTRY = ContractRegistry.from_directory()
CREDIT = REGISTRY.latest("credit-default")
RISK = REGISTRY.latest("synthetic-risk")

# A regression contract with every feature type, nullable fields, a nullable segment and an event time.
DELIVERY = DatasetContract.model_validate(
    {
        "contract": "delivery-time",
        "version": 1,
        "entity_id": {"name": "order_id", "type": "string"},
        "label": {"name": "minutes", "type": "number", "task": "regression", "minimum": 0, "maximum": 240},
        "features": [
            {"name": "distance_km", "type": "number", "minimum": 0, "maximum": 50},
            {"name": "items", "type": "integer", "minimum": 1, "maximum": 40},
            {"name": "basket_value", "type": "number", "minimum": 0, "maximum": 500, "nullable": True},
            {"name": "courier", "type": "category", "categories": ["bike", "car", "foot"]},
            {"name": "raining", "type": "boolean", "nullable": True},
            {
                "name": "zone",
                "type": "category",
                "categories": ["north", "south", "east", "west"],
                "nullable": True,
            },
        ],
        "attributes": [{"name": "placed_at", "type": "string"}],
        "segment": "zone",
        "event_time": "placed_at",
    }
)

CONTRACTS = {c.contract: c for c in (CREDIT, RISK, DELIVERY)}


@cache
def _records(name: str) -> tuple[dict[str, Any], ...]:
    if name == "credit-default":
        return tuple(load_islp_default())
    return tuple(generate_records(CONTRACTS[name], 2000, seed=1))


def dataset(name: str) -> tuple[DatasetContract, list[dict[str, Any]]]:
    """The contract and its records: all 10,000 real ISLP rows, or 2,000 generated ones."""
    return CONTRACTS[name], list(_records(name))
