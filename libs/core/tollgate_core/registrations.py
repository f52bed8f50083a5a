"""Live registration of dataset contracts and model catalog entries (topic ``registrations``).

The registry validates a contract or a catalog entry, checks a contract against what is registered under
the same name (:func:`breaking_changes`), and publishes a :class:`RegistrationEvent` on the compacted
``registrations`` topic, keyed by :func:`registration_key` (``contract/<name>/v<N>``, ``model/<name>``), so
compaction keeps the newest registration of every contract version and every model.

Every service follows that topic with a compacted follower into a :class:`LiveCatalog`: its contracts and
its model catalog start from the files under ``schemas/`` (the seed every process reads at start) and each
registration read from the topic adds or replaces one entry, within a poll of the follower, without a
restart. Seeding from files keeps a fresh service correct before (and without) any registration, and keeps
start-up free of an ordering dependency on the registry; the topic overrides the seed entry by entry.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from tollgate_core.compat import check as compat_check
from tollgate_core.contracts import ContractRegistry, DatasetContract, FieldSpec, FieldType
from tollgate_core.events import Envelope
from tollgate_core.models import ModelSpec
from tollgate_core.runtime import CompactedFollower, ConsumerSpec, build_follower, per_record
from tollgate_core.settings import ServiceSettings
from tollgate_core.topics import Topics

log = logging.getLogger(__name__)

Kind = Literal["contract", "model"]
CONTRACT: Kind = "contract"
MODEL: Kind = "model"
NAME_PATTERN = r"^[a-z][a-z0-9-]*[a-z0-9]$"


class RegistrationPayload(BaseModel):
    """One registered document: a dataset contract version or a model catalog entry."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind = Field(description="contract (a dataset contract version) or model (a catalog entry).")
    name: str = Field(pattern=NAME_PATTERN, description="Contract name or model name.")
    version: int | None = Field(
        None, ge=1, description="The contract's version (contracts only; models are keyed by name)."
    )
    revision: int = Field(
        ge=1, description="How many times this key was registered, this one included (1 for the first)."
    )
    digest: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the document's canonical JSON.")
    document: dict[str, Any] = Field(
        description="The validated document: a dataset contract or a model catalog entry, as JSON."
    )
    registered_by: str = Field(
        min_length=1, max_length=256, description="The authenticated principal that registered it."
    )
    registered_at: AwareDatetime
    changes: list[str] = Field(
        default_factory=list,
        description="Contracts: how this document differs from the previous revision or version "
        "(compatible changes, or the breaking changes a new version is allowed).",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="Valid but questionable (e.g. a classifier gated only on metrics a majority-class model "
        "passes).",
    )

    @property
    def key(self) -> str:
        return registration_key(self.kind, self.name, self.version)


class RegistrationEvent(Envelope[RegistrationPayload]):
    """``registrations.v1``: event_type ``contract.registered`` or ``model.registered``."""


def registration_key(kind: str, name: str, version: int | None = None) -> str:
    """The message key: ``contract/<name>/v<N>`` or ``model/<name>`` (compaction keeps the newest of each)."""
    if kind == CONTRACT:
        if version is None:
            raise ValueError("a contract registration names its version")
        return f"contract/{name}/v{version}"
    return f"model/{name}"


def contract_document(contract: DatasetContract) -> dict[str, Any]:
    """The canonical JSON document of a contract (what is registered; its digest is the contract's)."""
    doc: dict[str, Any] = orjson.loads(contract.model_dump_json(exclude_none=True))
    return doc


def model_document(spec: ModelSpec) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(spec.model_dump_json(exclude_none=True))
    return doc


def model_digest(spec: ModelSpec) -> str:
    return hashlib.sha256(spec.model_dump_json(exclude_none=True).encode()).hexdigest()


# ------------------------------------------------------------------------------------ compatibility


def _field_schema(spec: FieldSpec) -> dict[str, Any]:
    schema: dict[str, Any]
    if spec.type is FieldType.CATEGORY:
        schema = {"type": "string", "enum": list(spec.categories or ())}
    else:
        schema = {"type": str(spec.type.value)}
    if spec.minimum is not None:
        schema["minimum"] = spec.minimum
    if spec.maximum is not None:
        schema["maximum"] = spec.maximum
    if spec.nullable:
        return {"anyOf": [schema, {"type": "null"}]}
    return schema


def record_schema(contract: DatasetContract) -> dict[str, Any]:
    """The JSON Schema of one record the contract accepts (what the contract compiler enforces): every
    field typed and bounded, categories as an enum, nullable fields optional, nothing undeclared."""
    return {
        "type": "object",
        "properties": {f.name: _field_schema(f) for f in contract.all_fields},
        "required": [f.name for f in contract.all_fields if not f.nullable],
        "additionalProperties": False,
    }


def _roles(contract: DatasetContract) -> dict[str, str]:
    roles = {contract.entity_id.name: "entity id", contract.label.name: "label"}
    roles.update({f.name: "feature" for f in contract.features})
    roles.update({f.name: "attribute" for f in contract.attributes})
    return roles


def breaking_changes(old: DatasetContract, new: DatasetContract) -> list[str]:
    """Why ``new`` cannot replace ``old`` under the same version: records ``old`` accepts that ``new`` would
    reject (the topic catalog's BACKWARD rules of :mod:`tollgate_core.compat` on :func:`record_schema`),
    and changes of meaning that models trained on ``old`` depend on (a field's role, the label's task or
    positive class, personal-data handling, segment, event time). Empty when ``new`` is compatible."""
    found = [
        f"{p.path.removeprefix('$.')}: {p.rule}: {p.message}"
        for p in compat_check(record_schema(old), record_schema(new), "BACKWARD")
    ]
    old_roles, new_roles = _roles(old), _roles(new)
    for name, role in old_roles.items():
        now = new_roles.get(name)
        if now is not None and now != role:
            found.append(f"{name}: role-changed: was the {role}, would be the {now}")
    if old.label.task != new.label.task:
        found.append(f"{new.label.name}: task-changed: {old.label.task} → {new.label.task}")
    if old.label.positive_class != new.label.positive_class:
        found.append(
            f"{new.label.name}: positive-class-changed: {old.label.positive_class!r} → "
            f"{new.label.positive_class!r}"
        )
    old_fields, new_fields = old.fields_by_name, new.fields_by_name
    for name, spec in old_fields.items():
        other = new_fields.get(name)
        if other is not None and other.pii != spec.pii:
            was, now = spec.pii.value if spec.pii else "none", other.pii.value if other.pii else "none"
            found.append(f"{name}: pii-changed: {was} → {now}")
    if old.segment != new.segment:
        found.append(f"segment-changed: {old.segment} → {new.segment}")
    if old.event_time != new.event_time:
        found.append(f"event-time-changed: {old.event_time} → {new.event_time}")
    return found


def differences(old: DatasetContract, new: DatasetContract) -> list[str]:
    """What changed from ``old`` to ``new``, field by field (for the reply and the audit trail)."""
    out: list[str] = []
    old_fields, new_fields = old.fields_by_name, new.fields_by_name
    for name in new_fields.keys() - old_fields.keys():
        out.append(f"{name}: added")
    for name in old_fields.keys() - new_fields.keys():
        out.append(f"{name}: removed")
    for name in sorted(old_fields.keys() & new_fields.keys()):
        before, after = old_fields[name].model_dump(), new_fields[name].model_dump()
        for attribute in before:
            if before[attribute] != after[attribute]:
                out.append(f"{name}.{attribute}: {before[attribute]!r} → {after[attribute]!r}")
    return sorted(out)


# ------------------------------------------------------------------------------------ following


@dataclass(frozen=True)
class Applied:
    """A registration that changed what a :class:`LiveCatalog` holds."""

    kind: Kind
    name: str  # contract schema id (name.vN) or model name
    digest: str


Listener = Callable[[Applied], Awaitable[None] | None]


class LiveCatalog:
    """A service's dataset contracts and model catalog: the seed from ``schemas/``, then every registration
    followed on the topic. ``contracts`` and ``models`` are updated in place, so whoever holds them sees a
    registration as soon as it is applied; listeners are told (e.g. to recompile or reload)."""

    def __init__(self, contracts: ContractRegistry, models: Mapping[str, ModelSpec] | None = None) -> None:
        self.contracts = contracts
        self.models: dict[str, ModelSpec] = dict(models or {})
        self.registrations: dict[str, RegistrationPayload] = {}
        self._listeners: list[Listener] = []

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def apply(self, payload: RegistrationPayload) -> Applied | None:
        """Put the registered document in force; None when exactly it is in force already. Raises
        ``ValueError`` (a pydantic ``ValidationError`` included) for a document this code cannot read."""
        if payload.kind == CONTRACT:
            contract = DatasetContract.model_validate(payload.document)
            if contract.contract != payload.name or contract.version != payload.version:
                raise ValueError(
                    f"registration {payload.key} holds contract {contract.schema_id}, not its key's"
                )
            current = self.contracts.get(contract.schema_id)
            self.registrations[payload.key] = payload
            if current is not None and current.digest == contract.digest:
                return None
            self.contracts.put(contract)
            return Applied(CONTRACT, contract.schema_id, contract.digest)
        spec = ModelSpec.model_validate(payload.document)
        if spec.model != payload.name:
            raise ValueError(f"registration {payload.key} holds model {spec.model}, not its key's")
        self.registrations[payload.key] = payload
        current_spec = self.models.get(spec.model)
        if current_spec is not None and model_digest(current_spec) == model_digest(spec):
            return None
        self.models[spec.model] = spec
        return Applied(MODEL, spec.model, model_digest(spec))

    async def apply_record(self, body: bytes) -> None:
        """The follower's per-record handler: apply one registration, then tell the listeners."""
        event = RegistrationEvent.model_validate_json(body)
        applied = self.apply(event.payload)
        if applied is None:
            return
        log.info("registration in force: %s %s (%s)", applied.kind, applied.name, applied.digest[:12])
        for listener in self._listeners:
            result = listener(applied)
            if inspect.isawaitable(result):
                await result


def follower_spec(
    service: str, settings: ServiceSettings, uses: str, name: str | None = None
) -> ConsumerSpec:
    """A service's follower of the registrations topic (declared in its ``consumers`` module): every
    replica reads the whole topic on start and then follows it. ``uses`` says what the service does with
    the registrations."""
    topics = Topics(settings.topic_namespace)
    return ConsumerSpec(
        service=service,
        name=name or f"{service}-registrations",
        kind="compacted_follower",
        topics=(topics.registrations,),
        group=None,
        description=f"Follow registered dataset contracts and model catalog entries: {uses} Applied on top "
        "of the schemas/ files, within seconds, without a restart.",
        dlq=topics.dlq(service),
        max_records=100,
    )


async def start_following(
    spec: ConsumerSpec, live: LiveCatalog, settings: ServiceSettings, **kwargs: Any
) -> CompactedFollower:
    """Build a service's registrations follower (its spec bound to ``live``), start it and read the topic
    up to its end, so the service starts with every registration in force; run its ``run`` afterwards."""
    follower = build_follower(spec.bind(per_record(live.apply_record)), settings, **kwargs)
    await follower.start()
    await follower.catch_up()
    return follower
