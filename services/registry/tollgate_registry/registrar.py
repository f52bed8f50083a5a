"""Registering dataset contracts and model catalog entries live (``POST /v1/contracts``, ``POST /v1/models``).

A registration is validated (the checks of ``tollgate contracts check`` / ``check-model``), a contract is
compared with what is registered under its name (a change to a registered version must keep every record
it accepted valid and keep every field's meaning: :func:`tollgate_core.registrations.breaking_changes`; a
breaking change needs a new version), and the revision is stored in ``registry_registrations`` with its
``registrations`` event in the registry's outbox, in one PostgreSQL transaction under an advisory lock on
the key's name: nothing is lost when Kafka is down, and two registrations of one name never race. The
outbox relay publishes it; every service follows the topic; the audit-log records it with the principal.

What a contract is compared with: the newest revision registered of each of its versions, and the
``schemas/`` seed for versions never registered.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from pydantic import ValidationError

from tollgate_core.contracts import DatasetContract
from tollgate_core.events import dumps
from tollgate_core.models import ModelSpec, check_model
from tollgate_core.outbox import Outbox
from tollgate_core.registrations import (
    CONTRACT,
    MODEL,
    Kind,
    LiveCatalog,
    RegistrationEvent,
    RegistrationPayload,
    breaking_changes,
    contract_document,
    differences,
    model_digest,
    model_document,
    registration_key,
)
from tollgate_registry.gates import GateConfigError, check_gates

LOCK_NAMESPACE = "tollgate-registrations:"
# A registered document travels whole in one Kafka record (the broker's 1 MiB limit, with the envelope).
MAX_DOCUMENT_BYTES = 256 * 1024


class InvalidDocument(ValueError):
    """The document is not a valid contract or catalog entry (422)."""


class BreakingChange(ValueError):
    """A registered contract version would change incompatibly (409)."""


@dataclass(frozen=True)
class Registered:
    payload: RegistrationPayload
    event_id: uuid.UUID
    created: bool  # False: exactly this document was the newest revision already; nothing published


def _errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(document)'}: {e['msg']}" for e in exc.errors()
    )


def _size_checked(document: dict[str, Any]) -> None:
    try:
        encoded = orjson.dumps(document)
    except orjson.JSONEncodeError as exc:  # e.g. a lone surrogate: no UTF-8 text, no jsonb
        raise InvalidDocument(f"the document cannot be stored as JSON text: {exc}") from None
    if len(encoded) > MAX_DOCUMENT_BYTES:
        raise InvalidDocument(
            f"the document is {len(encoded)} bytes; at most {MAX_DOCUMENT_BYTES} are registered"
        )
    if b"\\u0000" in encoded:  # PostgreSQL's jsonb cannot hold NUL, and no name or text needs it
        raise InvalidDocument("the document holds a NUL character (\\u0000)")


def parse_contract(document: dict[str, Any]) -> DatasetContract:
    _size_checked(document)
    try:
        return DatasetContract.model_validate(document)
    except ValidationError as exc:
        raise InvalidDocument(f"not a valid dataset contract: {_errors(exc)}") from None


def parse_model(document: dict[str, Any]) -> ModelSpec:
    _size_checked(document)
    try:
        spec = ModelSpec.model_validate(document)
        check_gates(spec.model, spec.gates)
    except ValidationError as exc:
        raise InvalidDocument(f"not a valid model catalog entry: {_errors(exc)}") from None
    except GateConfigError as exc:
        raise InvalidDocument(str(exc)) from None
    return spec


def contract_decision(
    contract: DatasetContract, earlier: dict[int, DatasetContract]
) -> tuple[bool, list[str]]:
    """(unchanged, changes) of registering ``contract`` over the ``earlier`` versions of its name; raises
    :class:`BreakingChange` for an incompatible change of a version already in force."""
    same = earlier.get(contract.version)
    if same is not None:
        if same.digest == contract.digest:
            return True, []
        breaks = breaking_changes(same, contract)
        if breaks:
            newest = max(earlier)
            raise BreakingChange(
                f"contract {contract.schema_id} is in force (digest {same.digest[:12]}) and this change "
                f"breaks it: {'; '.join(breaks)}. Register it as a new version ({contract.contract} "
                f"version {newest + 1})."
            )
        return False, differences(same, contract)
    older = [v for v in earlier if v < contract.version]
    if not older:
        return False, []
    prior = earlier[max(older)]
    breaks = breaking_changes(prior, contract)
    notes = [f"new version of {prior.schema_id}: {d}" for d in differences(prior, contract)]
    if breaks:
        notes.append(f"breaking against {prior.schema_id} (allowed: a new version): {'; '.join(breaks)}")
    return False, notes


class Registrar:
    def __init__(
        self, pool: asyncpg.Pool, outbox: Outbox, topic: str, schema_id: str, live: LiveCatalog
    ) -> None:
        self._pool = pool
        self._outbox = outbox
        self._topic = topic
        self._schema_id = schema_id
        self.live = live

    @asynccontextmanager
    async def _locked(self, name: str) -> AsyncIterator[Any]:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", LOCK_NAMESPACE + name)
            yield conn

    async def _newest(self, conn: Any, kind: Kind, name: str) -> dict[str, Any]:
        rows = await conn.fetch(
            """SELECT DISTINCT ON (key) key, revision, version, digest, document, event_id,
                   registered_by, registered_at
               FROM registry_registrations WHERE kind = $1 AND name = $2 ORDER BY key, revision DESC""",
            kind,
            name,
        )
        return {r["key"]: r for r in rows}

    async def registered_contract(self, schema_id: str) -> DatasetContract | None:
        """The newest registered revision of a contract version, else the one in force here (the seed)."""
        name, _, version = schema_id.rpartition(".v")
        if name and version.isdigit():
            async with self._pool.acquire() as conn:
                row = await conn.fetchrow(
                    "SELECT document FROM registry_registrations WHERE key = $1 ORDER BY revision DESC "
                    "LIMIT 1",
                    registration_key(CONTRACT, name, int(version)),
                )
            if row is not None:
                return DatasetContract.model_validate_json(row["document"])
        return self.live.contracts.get(schema_id)

    async def register_contract(self, document: dict[str, Any], principal: str) -> Registered:
        contract = parse_contract(document)
        async with self._locked(f"contract/{contract.contract}") as conn:
            rows = await self._newest(conn, CONTRACT, contract.contract)
            earlier = {c.version: c for c in self.live.contracts if c.contract == contract.contract}
            for row in rows.values():
                earlier[row["version"]] = DatasetContract.model_validate_json(row["document"])
            unchanged, changes = contract_decision(contract, earlier)
            key = registration_key(CONTRACT, contract.contract, contract.version)
            newest = rows.get(key)
            if newest is not None and newest["digest"] == contract.digest:
                return self._existing(newest, CONTRACT, contract.contract)
            return await self._insert(
                conn,
                RegistrationPayload(
                    kind=CONTRACT,
                    name=contract.contract,
                    version=contract.version,
                    revision=(newest["revision"] if newest is not None else 0) + 1,
                    digest=contract.digest,
                    document=contract_document(contract),
                    registered_by=principal,
                    registered_at=datetime.now(UTC),
                    changes=[] if unchanged else changes,
                ),
            )

    async def register_model(self, document: dict[str, Any], principal: str) -> Registered:
        spec = parse_model(document)
        contract = await self.registered_contract(spec.contract)
        if contract is None:
            raise InvalidDocument(
                f"{spec.model}: dataset contract {spec.contract} is not registered; register it first "
                "(tollgate contracts register FILE)"
            )
        try:
            warnings = check_model(spec, contract)
        except ValueError as exc:
            raise InvalidDocument(str(exc)) from None
        digest = model_digest(spec)
        async with self._locked(f"model/{spec.model}") as conn:
            rows = await self._newest(conn, MODEL, spec.model)
            newest = rows.get(registration_key(MODEL, spec.model))
            if newest is not None and newest["digest"] == digest:
                return self._existing(newest, MODEL, spec.model, warnings)
            return await self._insert(
                conn,
                RegistrationPayload(
                    kind=MODEL,
                    name=spec.model,
                    revision=(newest["revision"] if newest is not None else 0) + 1,
                    digest=digest,
                    document=model_document(spec),
                    registered_by=principal,
                    registered_at=datetime.now(UTC),
                    warnings=warnings,
                ),
            )

    def _existing(self, row: Any, kind: Kind, name: str, warnings: list[str] | None = None) -> Registered:
        payload = RegistrationPayload(
            kind=kind,
            name=name,
            version=row["version"],
            revision=row["revision"],
            digest=row["digest"],
            document=orjson.loads(row["document"]),
            registered_by=row["registered_by"],
            registered_at=row["registered_at"],
            warnings=warnings or [],
        )
        return Registered(payload, row["event_id"], created=False)

    async def _insert(self, conn: Any, payload: RegistrationPayload) -> Registered:
        event = RegistrationEvent(
            event_id=uuid.uuid4(),
            event_type=f"{payload.kind}.registered",
            schema_=self._schema_id,
            occurred_at=payload.registered_at,
            producer="registry",
            payload=payload,
        )
        await conn.execute(
            """INSERT INTO registry_registrations (key, revision, kind, name, version, digest, document,
                   registered_by, registered_at, event_id)
               VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10)""",
            payload.key,
            payload.revision,
            payload.kind,
            payload.name,
            payload.version,
            payload.digest,
            orjson.dumps(payload.document).decode(),
            payload.registered_by,
            payload.registered_at,
            event.event_id,
        )
        await self._outbox.add(conn, self._topic, dumps(event), key=payload.key.encode())
        return Registered(payload, event.event_id, created=True)

    def notify(self) -> None:
        """After a commit: wake the outbox relay."""
        self._outbox.notify()
