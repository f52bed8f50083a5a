"""Dataset contracts: the YAML files under ``schemas/datasets`` that describe one data set.

A contract names the entity-id field, the label, the typed features (with ranges, allowed categories and
nullability) and which fields are personal data. Every service reads contracts through this module, so a new
data set is a new YAML file and never new code.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tollgate_core.paths import schemas_dir

_NAME = re.compile(r"^[a-z][a-z0-9-]*[a-z0-9]$")
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class FieldType(StrEnum):
    NUMBER = "number"
    INTEGER = "integer"
    CATEGORY = "category"
    BOOLEAN = "boolean"
    STRING = "string"  # identifiers and carried attributes only, never a feature


class PiiAction(StrEnum):
    """What happens to a personal-data field before it reaches a log, an alert or the audit trail."""

    HASH = "hash"  # keyed, stable hash: joins still work, the value does not leak
    MASK = "mask"  # replaced by a fixed marker
    DROP = "drop"  # removed


class FieldSpec(BaseModel):
    """One field of a record: a feature, the label, the entity id or a carried attribute."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: FieldType
    description: str = ""
    nullable: bool = False
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[str, ...] | None = None
    pii: PiiAction | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _FIELD.match(value):
            raise ValueError(f"field name {value!r} must be an identifier")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FieldSpec:
        numeric = self.type in (FieldType.NUMBER, FieldType.INTEGER)
        if not numeric and (self.minimum is not None or self.maximum is not None):
            raise ValueError(f"field {self.name!r}: minimum/maximum only apply to number or integer fields")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"field {self.name!r}: minimum {self.minimum} is above maximum {self.maximum}")
        if self.type is FieldType.CATEGORY and not self.categories:
            raise ValueError(f"field {self.name!r}: a category field lists its allowed categories")
        if self.type is not FieldType.CATEGORY and self.categories:
            raise ValueError(f"field {self.name!r}: categories only apply to category fields")
        return self


class LabelSpec(FieldSpec):
    """The field a model learns to predict; ``task`` chooses metrics and model heads."""

    task: Literal["classification", "regression"]
    positive_class: str | bool | None = None


class DatasetContract(BaseModel):
    """A versioned dataset contract (see ``schemas/datasets/contract.schema.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    contract: str = Field(description="Dataset name, lower-case with dashes, e.g. credit-default.")
    version: int = Field(ge=1)
    description: str = ""
    source: str = Field("", description="Where the data comes from.")
    entity_id: FieldSpec
    label: LabelSpec
    features: tuple[FieldSpec, ...] = Field(min_length=1)
    attributes: tuple[FieldSpec, ...] = Field(
        default=(), description="Fields carried with a record that are neither features nor the label."
    )
    segment: str | None = Field(
        None, description="Sensitive or segment field whose groups are compared for fairness parity."
    )
    event_time: str | None = Field(
        None, description="Field holding the business time of a record; the envelope's occurred_at if unset."
    )

    @field_validator("contract")
    @classmethod
    def _contract_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"contract name {value!r} must be lower-case letters, digits and dashes")
        return value

    @model_validator(mode="after")
    def _unique_fields(self) -> DatasetContract:
        names = [f.name for f in self.all_fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"field names used twice: {', '.join(dupes)}")
        if self.segment is not None and self.segment not in names:
            raise ValueError(f"segment {self.segment!r} is not a field of the contract")
        if self.entity_id.nullable:
            raise ValueError("the entity id cannot be nullable")
        strings = [f.name for f in (self.label, *self.features) if f.type is FieldType.STRING]
        if strings:
            raise ValueError(f"string fields cannot be features or the label: {', '.join(strings)}")
        return self

    @property
    def schema_id(self) -> str:
        """The envelope ``schema`` value of records that follow this contract, e.g. ``credit-default.v1``."""
        return f"{self.contract}.v{self.version}"

    @property
    def all_fields(self) -> tuple[FieldSpec, ...]:
        return (self.entity_id, self.label, *self.features, *self.attributes)

    @cached_property
    def fields_by_name(self) -> dict[str, FieldSpec]:
        return {f.name: f for f in self.all_fields}

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def pii_fields(self) -> dict[str, PiiAction]:
        return {f.name: f.pii for f in self.all_fields if f.pii is not None}

    @cached_property
    def digest(self) -> str:
        """Content hash of the contract, recorded in lineage so a model names the exact contract it used."""
        body = self.model_dump_json(exclude_none=True).encode()
        return hashlib.sha256(body).hexdigest()


def load_contract(path: str | Path) -> DatasetContract:
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: a dataset contract is a YAML mapping")
    return DatasetContract.model_validate(data)


class ContractRegistry:
    """All known dataset contracts, looked up by ``name.vN`` as carried in the envelope's ``schema``."""

    def __init__(self, contracts: Iterable[DatasetContract]) -> None:
        self._by_id: dict[str, DatasetContract] = {}
        for contract in contracts:
            if contract.schema_id in self._by_id:
                raise ValueError(f"contract {contract.schema_id} is defined twice")
            self._by_id[contract.schema_id] = contract

    @classmethod
    def from_directory(cls, directory: str | Path | None = None) -> ContractRegistry:
        root = Path(directory) if directory is not None else schemas_dir() / "datasets"
        return cls(load_contract(p) for p in sorted(root.glob("*.yaml")))

    def get(self, schema_id: str) -> DatasetContract | None:
        return self._by_id.get(schema_id)

    def put(self, contract: DatasetContract) -> DatasetContract | None:
        """Add a contract version or replace the one with its schema id (a live registration); returns the
        one replaced, if any."""
        previous = self._by_id.get(contract.schema_id)
        self._by_id[contract.schema_id] = contract
        return previous

    def latest(self, name: str) -> DatasetContract:
        versions = [c for c in self._by_id.values() if c.contract == name]
        if not versions:
            raise KeyError(f"no dataset contract named {name!r}")
        return max(versions, key=lambda c: c.version)

    def __iter__(self) -> Any:
        return iter(list(self._by_id.values()))  # a copy: a registration may arrive while iterating

    def __len__(self) -> int:
        return len(self._by_id)
