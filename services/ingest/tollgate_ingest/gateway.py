"""HTTP gateway for producers that do not speak Kafka: JSON batches and JSONL/CSV uploads → ``events.raw``.

A request is accepted whole or not at all: every event is checked first, and the response is 202 only after
Kafka acknowledged every event (``acks=all``). Errors name the event index or file line and the reason.

``?dry_run=true`` publishes nothing: the events are checked against their envelope and their dataset
contract (the validator's rules, ``tollgate_core.contract_rules``) and the reply (200) lists every violation
by event index or file line, so a person uploading a file sees what is wrong without a Kafka client.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Query, Request, Response
from opentelemetry import trace
from pydantic import BaseModel, Field

from tollgate_core.contract_rules import CompiledContract, jsonl_records, read_text
from tollgate_core.contracts import ContractRegistry
from tollgate_core.events import now_iso
from tollgate_core.telemetry import TRACEPARENT, server_span
from tollgate_ingest.core import Malformed, Normaliser

# Deterministic ids for uploaded rows without an event_id: uploading the same file twice dedups.
UPLOAD_NAMESPACE = uuid.UUID("6f1d2c55-8d3e-4c1e-9b7a-2f4e8a0c9d11")

# (key, value) pairs and the headers every one of them carries (the request's ``traceparent``).
Publish = Callable[[Sequence[tuple[bytes | None, bytes]], list[tuple[str, bytes]]], Awaitable[None]]


class Accepted(BaseModel):
    accepted: int = Field(description="Events written to the raw topic.")
    event_ids: list[str]


class Problem(BaseModel):
    line: int | None = Field(None, description="File line (uploads; the header is line 1).")
    index: int | None = Field(None, description="Event index (JSON batches).")
    field: str = Field(description="The field, or 'envelope' / 'schema' / 'row'.")
    rule: str
    message: str


class DryRun(BaseModel):
    dry_run: bool = True
    events: int = Field(description="Events (rows) checked; nothing was published.")
    valid: int = Field(description="Events that would pass the validator.")
    invalid: int
    violations: list[Problem] = Field(description=f"Every broken rule, at most {1000} listed.")
    violations_omitted: int = Field(0, description="Violations beyond the listed ones.")


MAX_LISTED_VIOLATIONS = 1000

DryRunParam = Annotated[
    bool,
    Query(
        alias="dry_run",
        description="Check the events against their envelope and contract, list every violation (by event "
        "index, or by line for uploads) and publish nothing: 200 with the list instead of 202.",
    ),
]


def _responses(what: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {"model": DryRun, "description": "dry_run=true: every violation; nothing published"},
        400: {
            "model": GatewayError,
            "description": "Not JSON or not UTF-8, or CSV records that cannot be read",
        },
        413: {"model": GatewayError, "description": f"{what} too large"},
        422: {"model": GatewayError, "description": "Invalid events"},
        503: {"model": GatewayError, "description": "Kafka unavailable"},
    }


class EventBatch(BaseModel):
    events: list[dict[str, Any]] = Field(
        description="Envelopes: event_id, event_type, schema, occurred_at, "
        "producer, payload. event_id/occurred_at/producer may be left out."
    )


class GatewayErrorDetail(BaseModel):
    error: str
    problems: list[dict[str, Any]] | None = Field(
        None, description="At most 100, each naming its line or index."
    )
    more_problems: int | None = Field(None, description="How many problems were left out of the list.")


class GatewayError(BaseModel):
    """The gateway's refusals carry an object; the shared request limits' (NUL byte, size) a string;
    FastAPI's parameter validation (a 422) a list of errors."""

    detail: GatewayErrorDetail | str | list[dict[str, Any]]


def _error(status: int, message: str, problems: list[dict[str, Any]] | None = None) -> HTTPException:
    detail: dict[str, Any] = {"error": message}
    if problems:
        detail["problems"] = problems[:100]
        if len(problems) > 100:
            detail["more_problems"] = len(problems) - 100
    return HTTPException(status, detail)


def _csv_rows(text: str) -> list[tuple[int, dict[str, str]]]:
    """The records of a CSV file with a header line, numbered as lines (the header is line 1; a quoted
    field may span lines, so a record's number is its position). A file the parser cannot read (a field
    over its limit, a stray quote) or a record with more values than the header names is refused with 400
    naming the line; missing trailing values are empty."""
    reader = csv.reader(io.StringIO(text))
    rows: list[tuple[int, dict[str, str]]] = []
    problems: list[dict[str, Any]] = []
    header: list[str] | None = None
    line = 0
    while True:
        line += 1
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append({"line": line, "error": f"unreadable CSV: {exc}"})
            break  # the parser's position is lost: nothing after this can be trusted
        if header is None:
            header = values
            continue
        if not values:
            continue  # a blank line
        if len(values) > len(header):
            problems.append(
                {"line": line, "error": f"{len(values)} values, the header names {len(header)} fields"}
            )
            continue
        rows.append((line, dict(zip(header, [*values, *[""] * (len(header) - len(values))], strict=True))))
    if problems:
        raise _error(400, f"{len(problems)} CSV records could not be read; none was accepted", problems)
    return rows


async def read_limited(request: Request, limit: int) -> bytes:
    """Read the body, refusing with 413 before buffering more than ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _error(413, f"body of {declared} bytes is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _error(413, f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def gateway_router(
    *,
    contracts: ContractRegistry,
    normaliser: Normaliser,
    publish: Publish,
    max_body_bytes: int,
    max_events: int,
    on_accepted: Callable[[str, int], None] = lambda source, n: None,
    tracer: trace.Tracer | None = None,
) -> APIRouter:
    """The gateway's routes. Each request is one span (``gateway <route>``), child of the caller's W3C
    ``traceparent`` header when present; every event it writes carries that span's ``traceparent``."""
    tracer_ = tracer or trace.get_tracer("tollgate.ingest")
    router = APIRouter(prefix="/v1/events", tags=["events"])

    compiled: dict[str, CompiledContract] = {}

    def dry_run(docs: list[dict[str, Any]], places: list[int], where: str, unread: list[Problem]) -> DryRun:
        """Every violation of ``docs`` (at ``places``: their lines or indexes) and the rows that could not be
        read, as the validator would find them."""
        problems = list(unread)
        valid = 0
        stamp = now_iso()
        for at, doc in zip(places, docs, strict=True):
            place = {where: at}
            found: list[Problem] = []
            try:
                normaliser.normalise_document(doc, None, stamp)
            except Malformed as exc:
                found.append(Problem(**place, field="envelope", rule="envelope", message=str(exc)))
            schema = doc.get("schema")
            contract = contracts.get(schema) if isinstance(schema, str) else None
            payload = doc.get("payload")
            if contract is None:
                if not found:
                    found.append(
                        Problem(**place, field="schema", rule="schema", message=f"unknown schema {schema!r}")
                    )
            elif isinstance(payload, dict):
                rules = compiled.setdefault(contract.schema_id, CompiledContract(contract))
                found.extend(
                    Problem(**place, field=v.field, rule=v.rule, message=v.message)
                    for v in rules.violations(payload)
                )
            problems.extend(found)
            valid += not found
        listed = problems[:MAX_LISTED_VIOLATIONS]
        total = len(docs) + len(unread)
        return DryRun(
            events=total,
            valid=valid,
            invalid=total - valid,
            violations=listed,
            violations_omitted=len(problems) - len(listed),
        )

    def complete(doc: dict[str, Any], producer: str | None) -> dict[str, Any]:
        doc.setdefault("event_id", str(uuid.uuid4()))
        doc.setdefault("event_type", "observation")
        doc.setdefault("occurred_at", now_iso())
        if producer is not None:
            doc.setdefault("producer", producer)
        return doc

    async def check_and_publish(
        docs: list[dict[str, Any]], where: str, source: str, request: Request
    ) -> Accepted:
        with server_span(
            tracer_, f"gateway {source}", request.headers.get(TRACEPARENT), {"tollgate.source": source}
        ) as (span, traceparent):
            accepted = await _check_and_publish(docs, where, source, traceparent)
            span.set_attribute("tollgate.events", accepted.accepted)
            return accepted

    async def _check_and_publish(
        docs: list[dict[str, Any]], where: str, source: str, traceparent: bytes
    ) -> Accepted:
        if not docs:
            raise _error(422, "no events in the request")
        if len(docs) > max_events:
            raise _error(413, f"{len(docs)} events is over the limit of {max_events} per request")
        problems = []
        ready: list[tuple[bytes | None, bytes]] = []
        stamp = now_iso()
        for index, doc in enumerate(docs):
            try:
                event = normaliser.normalise_document(doc, None, stamp)
            except Malformed as exc:
                problems.append({where: index + (1 if where == "line" else 0), "error": str(exc)})
                continue
            ready.append((event.key, orjson.dumps(doc)))
        if problems:
            raise _error(
                422, f"{len(problems)} of {len(docs)} events are invalid; none was accepted", problems
            )
        try:
            await publish(ready, [(TRACEPARENT, traceparent)])
        except Exception as exc:  # Kafka unreachable or refused: nothing acknowledged, the client retries
            raise _error(503, f"events could not be written to Kafka: {type(exc).__name__}: {exc}") from exc
        on_accepted(source, len(ready))
        return Accepted(accepted=len(ready), event_ids=[str(d["event_id"]) for d in docs])

    @router.post(
        "",
        status_code=202,
        response_model=Accepted | DryRun,
        summary="Send a batch of events (JSON)",
        responses=_responses("Body or batch"),
    )
    async def post_events(
        request: Request, response: Response, dry_run_: DryRunParam = False
    ) -> Accepted | DryRun:
        body = await read_limited(request, max_body_bytes)
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _error(400, f"body is not JSON: {exc}") from None
        if isinstance(parsed, dict) and isinstance(parsed.get("events"), list):
            items = parsed["events"]
        elif isinstance(parsed, list):
            items = parsed
        else:
            raise _error(422, 'body must be {"events": [...]} or a JSON array of events')
        bad = [i for i, item in enumerate(items) if not isinstance(item, dict)]
        if bad:
            raise _error(
                422,
                "every event must be a JSON object",
                [{"index": i, "error": "not an object"} for i in bad],
            )
        producer = request.headers.get("x-tollgate-producer")
        docs = [complete(dict(d), producer) for d in items]
        if dry_run_:
            if len(docs) > max_events:
                raise _error(413, f"{len(docs)} events is over the limit of {max_events} per request")
            response.status_code = 200
            return dry_run(docs, list(range(len(docs))), "index", [])
        return await check_and_publish(docs, "index", "json", request)

    @router.post(
        "/upload",
        status_code=202,
        response_model=Accepted | DryRun,
        summary="Upload a JSONL or CSV file of records for one dataset contract",
        responses=_responses("File"),
    )
    async def upload(
        request: Request,
        response: Response,
        schema: str = Query(description="Dataset contract of the rows, e.g. credit-default.v1"),
        producer: str = Query(description="Who produced the rows"),
        format: str | None = Query(None, pattern="^(jsonl|csv)$", description="Defaults from Content-Type"),
        event_type: str = Query("observation"),
        dry_run_: DryRunParam = False,
    ) -> Accepted | DryRun:
        contract = contracts.get(schema)
        if contract is None:
            raise _error(422, f"unknown schema {schema!r}: no dataset contract has that name and version")
        kind = format or ("csv" if "csv" in request.headers.get("content-type", "") else "jsonl")
        body = await read_limited(request, max_body_bytes)
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise _error(400, f"file is not UTF-8: {exc}") from None
        rows: list[dict[str, Any]] = []
        lines: list[int] = []
        problems: list[dict[str, Any]] = []
        if kind == "csv":
            for line, row in _csv_rows(text):
                try:
                    rows.append({k: read_text(contract, k, v) for k, v in row.items()})
                    lines.append(line)
                except ValueError as exc:
                    problems.append({"line": line, "error": f"cannot convert: {exc}"})
        else:
            records, unreadable = jsonl_records(text)
            problems.extend({"line": line, "error": error} for line, error in unreadable)
            rows.extend(record for _, record in records)
            lines.extend(line for line, _ in records)
        if problems and not dry_run_:
            raise _error(422, f"{len(problems)} rows could not be read; none was accepted", problems)
        docs = []
        for row in rows:
            if "payload" in row:  # a full envelope per line
                docs.append(complete(row, producer))
                continue
            event_id = row.pop("event_id", None) or uuid.uuid5(
                UPLOAD_NAMESPACE, schema + orjson.dumps(row, option=orjson.OPT_SORT_KEYS).decode()
            )
            occurred = (
                row.pop("occurred_at", None)
                or (row.get(contract.event_time) if contract.event_time else None)
                or now_iso()
            )
            docs.append(
                {
                    "event_id": str(event_id),
                    "event_type": event_type,
                    "schema": schema,
                    "occurred_at": occurred,
                    "producer": producer,
                    "payload": row,
                }
            )
        if dry_run_:
            if len(docs) + len(problems) > max_events:
                raise _error(
                    413, f"{len(docs) + len(problems)} rows is over the limit of {max_events} per request"
                )
            unread = [
                Problem(line=p["line"], field="row", rule="unreadable", message=p["error"]) for p in problems
            ]
            response.status_code = 200
            return dry_run(docs, lines, "line", unread)
        return await check_and_publish(docs, "line", kind, request)

    return router
