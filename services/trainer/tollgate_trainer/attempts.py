"""Every attempt at the submission endpoint is recorded on ``models.submissions`` before it is answered.

An ASGI middleware, outside the request limits (``tollgate_core.limits``), so it sees every answer the
endpoint gives: the handler's (accepted 201; refused 404, 409, 413, 422), FastAPI's own validation
errors (422: a form field missing or malformed) and the limits' 413 for a body over the size limit, which
is answered before the body is parsed and before any handler runs. For each it records the authenticated
principal and roles (those the handler authenticated; when no handler ran, the key the request presented,
checked here), the reasons the answer gives, the files the handler read (sha256 and size, never the bytes),
the body's size and the time, as one event in the trainer's outbox, then sends the answer. A refusal that
cannot be recorded is answered 503 instead: the client may try again, the audit trail misses nothing.

Not recorded: an attempt without a valid key (401, no principal to name; the request is logged) and an
answer of the trainer's own failure, which is recorded as refused with status 500 and its error type.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tollgate_core.apikeys import KeyVerifier, Principal
from tollgate_core.events import utcnow
from tollgate_core.submissions import (
    MAX_PROBLEM_CHARS,
    MAX_PROBLEMS,
    SubmissionAttemptEvent,
    SubmissionAttemptPayload,
    SubmissionProblem,
    SubmittedFile,
)
from tollgate_core.topics import current_schema_id

log = logging.getLogger(__name__)

FILES_STATE = "submission_files"  # request.state: the SubmittedFile list the handler read
PRINCIPAL_STATE = "principal"  # request.state: set by tollgate_core.auth.require
Record = Callable[[SubmissionAttemptEvent], Awaitable[None]]


class SubmissionAttempts:
    """The middleware; ``record`` writes an event to the outbox (raises when it cannot)."""

    def __init__(
        self, app: ASGIApp, *, route: str, keys: KeyVerifier | None, record: Record, producer: str
    ) -> None:
        self.app = app
        self.route = re.compile(route)
        self.keys = keys
        self.record = record
        self.producer = producer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not self.route.fullmatch(scope["path"]):
            await self.app(scope, receive, send)
            return
        received_at = utcnow()
        state: dict[str, Any] = scope.setdefault("state", {})
        received = 0

        async def counting() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        start: Message | None = None
        body: list[bytes] = []

        async def holding(message: Message) -> None:
            # The endpoint's answers are small JSON documents: held until the attempt is recorded.
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))
            else:
                await send(message)

        try:
            await self.app(scope, counting, holding)
        except Exception as exc:
            if start is None:  # the trainer failed before answering: recorded, then the usual 500
                await self._record(scope, state, received_at, received, 500, _failure(exc), refuse=False)
            raise
        if start is None:
            return
        answer = b"".join(body)
        status = int(start["status"])
        if await self._record(scope, state, received_at, received, status, answer, refuse=status >= 400):
            await send(start)
            await send({"type": "http.response.body", "body": answer})
        else:
            detail = (
                b'{"detail":"the refused submission could not be recorded in the audit trail; try again"}'
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"retry-after", b"5")],
                }
            )
            await send({"type": "http.response.body", "body": detail})

    async def _record(
        self,
        scope: Scope,
        state: dict[str, Any],
        received_at: datetime,
        received: int,
        status: int,
        answer: bytes,
        *,
        refuse: bool,
    ) -> bool:
        """Record the attempt; False when a refusal could not be recorded (the answer becomes 503)."""
        who = state.get(PRINCIPAL_STATE)
        if not isinstance(who, Principal):
            who = await self._presented(scope)
        model = scope["path"].rstrip("/").split("/")[-2]
        if who is None:
            log.info("submission attempt for %.64s without a valid key: %s, not recorded", model, status)
            return True
        accepted = 200 <= status < 300
        document = _json(answer)
        payload = SubmissionAttemptPayload(
            model=model[:256],
            outcome="accepted" if accepted else "refused",
            status=status,
            principal=who.name,
            roles=sorted(who.roles),
            reasons=[] if accepted else _reasons(document),
            files=list(state.get(FILES_STATE, [])),
            body_bytes=_declared(scope) or received,
            received_at=received_at,
            submission_id=_text(document.get("submission_id")) if accepted else None,
            version=_text(document.get("version")) if accepted else None,
        )
        event = SubmissionAttemptEvent(
            event_id=uuid.uuid4(),
            event_type=f"submission_{payload.outcome}",
            schema_=current_schema_id("models.submissions"),
            occurred_at=utcnow(),
            producer=self.producer,
            payload=payload,
        )
        try:
            await self.record(event)
        except Exception:
            log.exception("submission attempt by %s for %s (%s) not recorded", who.name, model, status)
            return not refuse
        return True

    async def _presented(self, scope: Scope) -> Principal | None:
        """The principal of the key the request presents (X-API-Key or a bearer token), if valid."""
        if self.keys is None:
            return None
        presented: str | None = None
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                presented = value.decode("latin-1")
            elif name == b"authorization" and presented is None:
                scheme, _, credentials = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and credentials:
                    presented = credentials.strip()
        return await self.keys.verify_or_reload(presented) if presented else None


def submitted_file(field: str, data: bytes, *, whole: bool, sha256: str) -> SubmittedFile:
    """What is recorded of an uploaded file: its digest (when read whole) and size."""
    return SubmittedFile.model_validate(
        {"field": field, "sha256": sha256 if whole else None, "size_bytes": len(data)}
    )


def _json(answer: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return {"detail": answer[:MAX_PROBLEM_CHARS].decode("utf-8", "replace")}
    return document if isinstance(document, dict) else {}


def _reasons(document: dict[str, Any]) -> list[SubmissionProblem]:
    """The problems an answer names: FastAPI's ``detail``, a string or one entry per problem."""
    detail = document.get("detail")
    if isinstance(detail, str):
        return [SubmissionProblem(message=detail[:MAX_PROBLEM_CHARS])]
    problems = []
    for item in detail if isinstance(detail, list) else []:
        if not isinstance(item, dict):
            continue
        loc = item.get("loc")
        field = loc[-1] if isinstance(loc, list) and loc and isinstance(loc[-1], str) else None
        message = str(item.get("msg", ""))[:MAX_PROBLEM_CHARS]
        problems.append(SubmissionProblem(field=field[:64] if field else None, message=message))
    return problems[:MAX_PROBLEMS]


def _failure(exc: Exception) -> bytes:
    return orjson.dumps({"detail": f"the trainer failed: {type(exc).__name__}"})


def _declared(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
