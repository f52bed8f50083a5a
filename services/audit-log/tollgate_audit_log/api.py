"""The compliance HTTP API (FastAPI, OpenAPI at ``/openapi.json``): translate requests, call the core.

Every route needs an API key (``X-API-Key: tgk_...`` or ``Authorization: Bearer tgk_...``): 401 without a
valid one, 403 when the key's role may not do that (see :mod:`tollgate_audit_log.access`).
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol

import asyncpg
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from tollgate_audit_log import queries, tamper
from tollgate_audit_log.access import ALLOWED, Action, redact_item, redact_lineage
from tollgate_audit_log.lineage import lineage as build_lineage
from tollgate_audit_log.publish import PublishedHead
from tollgate_audit_log.receipts import audit_path, receipts_for
from tollgate_audit_log.sink import StreamWorker
from tollgate_audit_log.streams import stream_specs
from tollgate_audit_log.verify import verify_database
from tollgate_core import auth
from tollgate_core.apikeys import KeyVerifier, Principal
from tollgate_core.contracts import ContractRegistry
from tollgate_core.http import invalid
from tollgate_core.limits import TEXT_PATTERN


class AuditBackend(Protocol):
    """What the routes need from the running service."""

    pool: asyncpg.Pool
    keys: KeyVerifier
    contracts: ContractRegistry
    page_max: int
    verify_lock: asyncio.Lock

    def trusted_keys(self) -> dict[str, Ed25519PublicKey]: ...

    def published_heads(self) -> dict[str, list[PublishedHead]] | None: ...

    def known_heads(self, stream: str) -> list[tuple[int, bytes]] | None: ...


# ---------------------------------------------------------------------------------------------- models


class Source(BaseModel):
    topic: str
    partition: int
    offset: int


class AuditItem(BaseModel):
    """One row of the audit trail."""

    stream: str = Field(
        description="Chain the row belongs to: "
        + ", ".join(spec.name for spec in stream_specs(audit_validated=True))
        + " (validated only when recorded)."
    )
    seq: int = Field(description="Position in its chain, from 1, without gaps.")
    event_id: str
    event_type: str
    occurred_at: datetime
    recorded_at: datetime
    source: Source
    request_id: str | None
    entity_id: str | None
    model: str | None
    version: str | None
    trace_id: str | None
    row_hash: str = Field(description="sha256(prev_hash || content_hash), hex.")
    event: dict[str, Any] = Field(
        description="The envelope as recorded (PII protected; inference inputs and outputs removed for operators)."
    )


class EventPage(BaseModel):
    items: list[AuditItem]
    next: str | None = Field(description="Cursor for the next page (pass as `after`); null on the last page.")


class StreamState(BaseModel):
    stream: str
    topic: str
    state: str = Field(
        description="active (this replica writes it), standby (another one does), starting, stopped."
    )
    head_seq: int | None
    checkpointed_seq: int | None
    damaged: str | None = None


class UnsealedRow(BaseModel):
    stream: str
    seq: int
    event_id: str


class ReceiptsOut(BaseModel):
    request_id: str
    receipts: list[dict[str, Any]] = Field(
        description="One receipt per recorded row with this request id (format tollgate-audit-receipt/1): "
        "the row as hashed, its hashes, the leaf hash, the RFC 6962 audit path and the signed checkpoint. "
        "Check offline with `tollgate audit verify-proof FILE --public-key KEY`."
    )
    unsealed: list[UnsealedRow] = Field(description="Rows recorded but not sealed by a checkpoint yet.")


class AcknowledgeIn(BaseModel):
    reason: str = Field(
        min_length=1,
        max_length=2000,
        pattern=TEXT_PATTERN,
        description="Why signing may resume (recorded in the trail).",
    )


class AcknowledgementOut(BaseModel):
    id: int
    damage_id: int
    acknowledged_by: str
    reason: str
    acknowledged_at: datetime


class StreamProblem(BaseModel):
    stream: str
    seq: int
    kind: str
    detail: str


class StreamVerification(BaseModel):
    stream: str
    ok: bool
    rows: int
    head_seq: int
    checkpoints: int
    checkpoints_verified: int
    first_bad_seq: int | None
    problem: str | None
    detail: str | None


class VerifyReport(BaseModel):
    ok: bool
    rows: int
    streams: list[StreamVerification]
    elapsed_s: float
    keys: str = Field(description="Which public keys checkpoint signatures were checked against.")
    first_bad: StreamProblem | None
    summary: str


class CheckpointOut(BaseModel):
    id: int
    stream: str
    first_seq: int
    last_seq: int
    merkle_root: str
    head_hash: str
    created_at: datetime
    key_id: str
    signature: str = Field(description="Ed25519 signature (hex) over the canonical checkpoint statement.")
    public_key: str | None = Field(description="Raw Ed25519 public key (hex) recorded for key_id.")


class InclusionProof(BaseModel):
    event_id: str
    stream: str
    seq: int
    row_hash: str
    leaf_index: int
    tree_size: int
    path: list[str] = Field(description="RFC 6962 audit path, leaf to root, hex.")
    checkpoint: CheckpointOut


class AuditRef(BaseModel):
    """Where a fact sits in the trail: enough to fetch it, prove it and verify it."""

    stream: str
    seq: int
    event_id: str
    row_hash: str


class TransitionOut(BaseModel):
    transition: str | None
    from_stage: str | None
    to_stage: str | None
    actor: str | None = Field(description="Who made the change (a person, the registry, the canary).")
    reason: str | None
    occurred_at: datetime
    audit: AuditRef


class ApprovalOut(BaseModel):
    approved_by: str | None
    reason: str | None
    approved_at: datetime
    audit: AuditRef


class AlertOut(BaseModel):
    alert_id: str
    version: str | None
    kind: str | None
    severity: str | None
    summary: str | None
    raised_at: datetime
    window_start: str | None
    window_end: str | None
    audit: AuditRef


class TrainingDataOut(BaseModel):
    contract: str | None
    contract_digest: str | None
    offsets: list[dict[str, Any]] | None = Field(
        description="Exact training data: topic, partition, offset range."
    )
    row_count: int | None
    data_hash: str | None
    holdout: dict[str, Any] | None


class TrainingRunOut(BaseModel):
    run_id: str | None
    trained_at: str | None
    metrics: dict[str, float] | None
    parity: dict[str, Any] | None
    offered: bool | None
    artifact: dict[str, Any]
    data: TrainingDataOut
    family: str | None
    hyperparameters: dict[str, Any] | None
    seed: int | None
    code_version: str | None
    libraries: dict[str, str] | None
    trigger: str | None
    experiment: dict[str, Any] | None = Field(
        None,
        description="The champion selection that chose the version: every trial, the winner, the budget.",
    )
    baselines: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Holdout metrics of the simple models trained on the same rows."
    )
    evaluation: dict[str, Any] | None = Field(
        None,
        description="The platform's evaluation on its own holdout, with its digest (what approvals approve; "
        "null when the stored report no longer reads as one).",
    )
    submission: dict[str, Any] | None = Field(
        None, description="Who submitted the model when it was built outside the platform."
    )
    training_request: dict[str, Any] | None = Field(description="The request that started the run, if any.")
    audit: AuditRef


class ModelVersionOut(BaseModel):
    model: str | None
    version: str | None
    stage_at_inference: str | None
    transitions: list[TransitionOut] = Field(description="Every transition up to the inference.")
    gates: list[dict[str, Any]] = Field(description="The gates last evaluated before the inference.")
    approvals: list[ApprovalOut]
    later_transitions: int
    training: TrainingRunOut | None
    active_alerts: list[AlertOut] = Field(
        description="Alerts raised and not cleared for the model at the inference time."
    )


class InferenceOut(BaseModel):
    event_id: str
    occurred_at: datetime
    model: str | None
    version: str | None
    route: str | None
    channel: str | None
    contract: str | None
    entity_id: str | None
    inputs: dict[str, Any] | str | None = Field(
        description="As logged (PII protected); removed for operators."
    )
    outputs: dict[str, Any] | str | None = Field(description="Removed for operators.")
    explanation: dict[str, Any] | str | None = Field(
        None,
        description="The decision's reason codes when the scorer logged them (the model's catalog asks for "
        "explanations); removed for operators.",
    )
    latency_ms: float | None
    trace_id: str | None
    pii_protection: dict[str, str] | None = Field(description="Contract field to hash/mask/drop, as applied.")
    audit: AuditRef
    model_version: ModelVersionOut


class LineageOut(BaseModel):
    request_id: str
    inferences: list[InferenceOut] = Field(
        description="The answer and, when one ran, the shadow inference; every inference recorded under this "
        "request id when a client reused it."
    )
    request_id_reused: int = Field(
        0,
        description="Answers beyond the first recorded under this request id: a client reused the id for "
        "other inferences (each is recorded with its own event id, none is dropped).",
    )


# ---------------------------------------------------------------------------------------------- auth


def require(action: Action) -> Callable[..., Awaitable[Principal]]:
    return auth.require(action.value, ALLOWED[action])


# ---------------------------------------------------------------------------------------------- routes

Stream = Annotated[str | None, Query(description="Only this stream.")]
Since = Annotated[datetime | None, Query(description="occurred_at ≥ since (ISO 8601 with offset).")]
Until = Annotated[datetime | None, Query(description="occurred_at < until.")]
# A UUID, parsed here: a pattern let through ids the database could not cast (a 500).
EventId = Annotated[uuid.UUID, Path(description="The event's id, a UUID.")]


def event_filter(
    request_id: Annotated[
        str | None, Query(description="Inference request id (or a training request's event id).")
    ] = None,
    entity_id: Annotated[
        str | None, Query(description="Entity id (as logged: hashed when the contract says so).")
    ] = None,
    model: Annotated[str | None, Query()] = None,
    version: Annotated[str | None, Query(description="Model version (with model).")] = None,
    event_type: Annotated[str | None, Query()] = None,
    stream: Stream = None,
    since: Since = None,
    until: Until = None,
) -> queries.EventFilter:
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise invalid("query", name, f"{name} needs a UTC offset, e.g. 2026-01-31T12:00:00Z")
    return queries.EventFilter(
        request_id=request_id,
        entity_id=entity_id,
        model=model,
        version=version,
        event_type=event_type,
        stream=stream,
        since=since,
        until=until,
    )


Filter = Annotated[queries.EventFilter, Depends(event_filter)]
_CSV_COLUMNS = (
    "stream",
    "seq",
    "event_id",
    "event_type",
    "occurred_at",
    "recorded_at",
    "topic",
    "partition",
    "offset",
    "request_id",
    "entity_id",
    "model",
    "version",
    "trace_id",
    "row_hash",
    "event",
)


def _csv_line(item: dict[str, Any]) -> str:
    buf = io.StringIO()
    src = item["source"]
    csv.writer(buf).writerow(
        [
            item["stream"],
            item["seq"],
            item["event_id"],
            item["event_type"],
            item["occurred_at"].isoformat(),
            item["recorded_at"].isoformat(),
            src["topic"],
            src["partition"],
            src["offset"],
            item["request_id"] or "",
            item["entity_id"] or "",
            item["model"] or "",
            item["version"] or "",
            item["trace_id"] or "",
            item["row_hash"],
            orjson.dumps(item["event"]).decode(),
        ]
    )
    return buf.getvalue()


def _checkpoint_out(row: asyncpg.Record) -> CheckpointOut:
    return CheckpointOut(
        id=row["id"],
        stream=row["stream"],
        first_seq=row["first_seq"],
        last_seq=row["last_seq"],
        merkle_root=bytes(row["merkle_root"]).hex(),
        head_hash=bytes(row["head_hash"]).hex(),
        created_at=row["created_at"],
        key_id=row["key_id"],
        signature=bytes(row["signature"]).hex(),
        public_key=bytes(row["public_key"]).hex() if row["public_key"] is not None else None,
    )


RECEIPTS_MAX = 100  # rows one request id may have (the answer and a shadow; reused ids a few more)


_CHECKPOINT_SQL = (
    """SELECT c.*, k.public_key FROM audit_checkpoints c LEFT JOIN audit_signing_keys k USING (key_id)"""
)


def build_router() -> APIRouter:
    router = APIRouter(prefix="/v1/audit", tags=["audit"])

    def backend(request: Request) -> AuditBackend:
        return request.app.state.audit  # type: ignore[no-any-return]

    def workers(request: Request) -> Mapping[str, StreamWorker]:
        """The streams this replica writes."""
        return request.app.state.workers  # type: ignore[no-any-return]

    @router.get("/events", response_model=EventPage, summary="Query the audit trail (keyset pagination)")
    async def list_events(
        request: Request,
        flt: Filter,
        who: Annotated[Principal, Depends(require(Action.QUERY))],
        after: Annotated[str | None, Query(description="Cursor from the previous page's `next`.")] = None,
        limit: Annotated[int, Query(ge=1, description="Page size (at most the service's page_max).")] = 100,
    ) -> dict[str, Any]:
        b = backend(request)
        try:
            key = queries.PageKey.decode(after) if after else None
        except queries.BadCursor as exc:
            raise invalid("query", "after", str(exc)) from None
        async with b.pool.acquire() as conn:
            items, nxt = await queries.page(conn, flt, key, min(limit, b.page_max))
        return {"items": [redact_item(i, who) for i in items], "next": nxt}

    @router.get(
        "/events/{event_id}",
        response_model=AuditItem,
        summary="One audit row by event id",
        responses={404: {"description": "Not recorded"}},
    )
    async def get_event(
        request: Request,
        event_id: EventId,
        who: Annotated[Principal, Depends(require(Action.QUERY))],
    ) -> dict[str, Any]:
        async with backend(request).pool.acquire() as conn:
            item = await queries.get_event(conn, str(event_id))
        if item is None:
            raise HTTPException(404, f"event {event_id} is not in the audit trail")
        return redact_item(item, who)

    @router.get(
        "/export",
        summary="Export a query as JSON Lines or CSV (streamed)",
        responses={200: {"content": {"application/x-ndjson": {}, "text/csv": {}}}},
    )
    async def export(
        request: Request,
        flt: Filter,
        who: Annotated[Principal, Depends(require(Action.EXPORT))],
        format: Annotated[Literal["jsonl", "csv"], Query(description="jsonl or csv")] = "jsonl",
    ) -> StreamingResponse:
        b = backend(request)

        async def lines() -> AsyncIterator[bytes]:
            async with b.pool.acquire() as conn:
                if format == "csv":
                    yield (",".join(_CSV_COLUMNS) + "\r\n").encode()
                async for item in queries.stream_items(conn, flt):
                    item = redact_item(item, who)
                    if format == "csv":
                        yield _csv_line(item).encode()
                    else:
                        yield orjson.dumps(item, option=orjson.OPT_APPEND_NEWLINE)

        media = "text/csv" if format == "csv" else "application/x-ndjson"
        name = f"audit-export.{format}"
        return StreamingResponse(
            lines(), media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'}
        )

    @router.get(
        "/lineage/{request_id}",
        response_model=LineageOut,
        summary="Lineage of one inference: inputs, output, version, training run, "
        "data offsets, gates, approvals, active alerts",
        responses={404: {"description": "No inference with this request id"}},
    )
    async def lineage(
        request: Request, request_id: str, who: Annotated[Principal, Depends(require(Action.QUERY))]
    ) -> dict[str, Any]:
        b = backend(request)
        async with b.pool.acquire() as conn:
            view = await build_lineage(conn, request_id, b.contracts)
        if view is None:
            raise HTTPException(404, f"no inference with request id {request_id} in the audit trail")
        return redact_lineage(view, who)

    @router.get("/streams", response_model=list[StreamState], summary="The chains and who writes them")
    async def streams(
        request: Request, who: Annotated[Principal, Depends(require(Action.QUERY))]
    ) -> list[StreamState]:
        b = backend(request)
        out = []
        async with b.pool.acquire() as conn:
            for name, worker in workers(request).items():
                head = await conn.fetchval("SELECT max(seq) FROM audit_events WHERE stream = $1", name)
                sealed = await conn.fetchval(
                    "SELECT max(last_seq) FROM audit_checkpoints WHERE stream = $1", name
                )
                out.append(
                    StreamState(
                        stream=name,
                        topic=worker.topic,
                        state=worker.state,
                        head_seq=head,
                        checkpointed_seq=sealed,
                        damaged=worker.damaged,
                    )
                )
        return out

    @router.get(
        "/proof",
        response_model=ReceiptsOut,
        summary="Receipts for one decision: the rows with this request id, each with its Merkle audit path "
        "to a signed checkpoint",
        responses={
            404: {"description": "No row with this request id"},
            409: {"description": "Recorded, but not sealed by a checkpoint yet (retry after the next one)"},
        },
    )
    async def receipts(
        request: Request,
        request_id: Annotated[str, Query(min_length=1, max_length=256)],
        who: Annotated[Principal, Depends(require(Action.PROOF))],
    ) -> ReceiptsOut:
        b = backend(request)
        async with b.pool.acquire() as conn:
            found = await receipts_for(conn, request_id, limit=RECEIPTS_MAX)
        if found.rows == 0:
            raise HTTPException(404, f"no row with request id {request_id} in the audit trail")
        if found.broken:
            raise HTTPException(409, f"cannot prove {found.broken}")
        out = found.receipts
        unsealed = [UnsealedRow(stream=st, seq=seq, event_id=eid) for st, seq, eid in found.unsealed]
        if not out:
            raise HTTPException(
                409, f"request id {request_id} is recorded but not sealed by a checkpoint yet; retry shortly"
            )
        return ReceiptsOut(request_id=request_id, receipts=out, unsealed=unsealed)

    @router.post(
        "/streams/{stream}/acknowledge",
        response_model=list[AcknowledgementOut],
        summary="Acknowledge the damage the writer found on a stream, so checkpoints are signed again",
        responses={404: {"description": "The stream has no unacknowledged damage"}},
    )
    async def acknowledge_damage(
        request: Request,
        stream: Annotated[str, Path(min_length=1, max_length=128)],
        body: AcknowledgeIn,
        who: Annotated[Principal, Depends(require(Action.ACKNOWLEDGE))],
    ) -> list[AcknowledgementOut]:
        b = backend(request)
        async with b.pool.acquire() as conn:
            acks = await tamper.acknowledge(conn, stream, who.name, body.reason)
        if not acks:
            raise HTTPException(404, f"stream {stream} has no unacknowledged damage")
        worker = workers(request).get(stream)
        if worker is not None and worker.writer is not None:
            await worker.checkpoint()  # records the acknowledgement in the stream, then signs again
        return [AcknowledgementOut(**dataclasses.asdict(a)) for a in acks]

    @router.get(
        "/verify",
        response_model=VerifyReport,
        summary="Verify every chain and checkpoint: OK with the row count, or the first bad seq and why",
    )
    async def verify(
        request: Request, who: Annotated[Principal, Depends(require(Action.VERIFY))], stream: Stream = None
    ) -> dict[str, Any]:
        b = backend(request)
        async with b.verify_lock, b.pool.acquire() as conn:  # one verification at a time: it is CPU-bound
            published = await asyncio.to_thread(b.published_heads)
            report = await verify_database(
                conn,
                streams=[stream] if stream else None,
                trusted=b.trusted_keys(),
                offload=True,
                published=published,
                published_from="witness" if published is not None else "none",
                known_heads=b.known_heads,
            )
        report.keys = "service"
        return {**report.to_dict(), "summary": report.summary()}

    @router.get(
        "/checkpoints", response_model=list[CheckpointOut], summary="Signed checkpoints, newest first"
    )
    async def checkpoints(
        request: Request,
        who: Annotated[Principal, Depends(require(Action.CHECKPOINTS))],
        stream: Stream = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[CheckpointOut]:
        async with backend(request).pool.acquire() as conn:
            if stream:
                rows = await conn.fetch(
                    f"{_CHECKPOINT_SQL} WHERE stream = $1 ORDER BY id DESC LIMIT $2", stream, limit
                )
            else:
                rows = await conn.fetch(f"{_CHECKPOINT_SQL} ORDER BY id DESC LIMIT $1", limit)
        return [_checkpoint_out(r) for r in rows]

    @router.post(
        "/checkpoints",
        response_model=list[CheckpointOut],
        summary="Seal new rows now (streams this replica writes)",
    )
    async def seal(
        request: Request, who: Annotated[Principal, Depends(require(Action.CHECKPOINTS))]
    ) -> list[CheckpointOut]:
        b = backend(request)
        ids = []
        for worker in workers(request).values():
            ids += [cp.id for cp in await worker.checkpoint()]
        if not ids:
            return []
        async with b.pool.acquire() as conn:
            rows = await conn.fetch(f"{_CHECKPOINT_SQL} WHERE id = ANY($1::bigint[]) ORDER BY id", ids)
        return [_checkpoint_out(r) for r in rows]

    @router.get(
        "/events/{event_id}/proof",
        response_model=InclusionProof,
        summary="Merkle inclusion proof of one row in its signed checkpoint",
        responses={
            404: {"description": "Not recorded, or not sealed by a checkpoint yet"},
            409: {"description": "The row no longer matches its checkpoint (the trail was tampered with)"},
        },
    )
    async def proof(
        request: Request,
        event_id: EventId,
        who: Annotated[Principal, Depends(require(Action.CHECKPOINTS))],
    ) -> InclusionProof:
        async with backend(request).pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT stream, seq, row_hash FROM audit_events WHERE event_id = $1::uuid", str(event_id)
            )
            if row is None:
                raise HTTPException(404, f"event {event_id} is not in the audit trail")
            cp = await conn.fetchrow(
                f"{_CHECKPOINT_SQL} WHERE stream = $1 AND first_seq <= $2 AND last_seq >= $2",
                row["stream"],
                row["seq"],
            )
            if cp is None:
                raise HTTPException(
                    404, f"event {event_id} (seq {row['seq']}) is not sealed by a checkpoint yet"
                )
            try:
                path = await audit_path(conn, row["stream"], row["seq"], bytes(row["row_hash"]), cp)
            except ValueError as exc:
                raise HTTPException(
                    409, f"event {event_id} (seq {row['seq']}) no longer matches its checkpoint: {exc}"
                ) from exc
        index = row["seq"] - cp["first_seq"]
        return InclusionProof(
            event_id=str(event_id),
            stream=row["stream"],
            seq=row["seq"],
            row_hash=bytes(row["row_hash"]).hex(),
            leaf_index=index,
            tree_size=cp["last_seq"] - cp["first_seq"] + 1,
            path=[h.hex() for h in path],
            checkpoint=_checkpoint_out(cp),
        )

    return router
