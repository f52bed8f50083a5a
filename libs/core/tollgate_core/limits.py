"""Request limits for every FastAPI service, as one ASGI middleware (``create_http_app`` installs it).

* A body larger than ``max_body_bytes`` is refused with 413. A declared ``Content-Length`` over the limit
  is answered at once, before a byte of the body is read (a client waiting on ``Expect: 100-continue``
  never sends it); a body without a declared length (chunked) is counted as it is received and refused as
  soon as it passes the limit, with nothing more read.
* A JSON body (a ``Content-Type`` naming json) nested deeper than ``max_json_depth`` arrays and objects is
  refused with 400 naming the depth, before any parser sees it: Python's JSON parser and pydantic recurse
  once per level, so a body of a few thousand ``[`` reaches the interpreter's recursion limit (FastAPI
  reports that only as "There was an error parsing the body"), and each level costs a stack frame.

* A NUL byte in the path or the query string (``%00``) is refused with 400: no parameter of any service
  means one, and PostgreSQL text cannot hold one (the database driver's error was a 500).

Answers are JSON ``{"detail": "..."}``, like FastAPI's own errors. A 413 keeps the connection open: the
server (uvicorn) reads what the client still sends of the refused body and drops it (memory stays bounded)
rather than closing on unread bytes, which resets the connection and can destroy the answer before the
client has read it. A client that waits for ``100 Continue`` sends nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# A JSON string with its escapes: what it contains is never structure.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
# Everything but the four structural brackets, deleted by bytes.translate (C speed).
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


# The pattern of every free-text field a request body carries into the database (reasons and the like):
# anything but NUL, which PostgreSQL text cannot hold (the driver's error was a 500). A NUL in a JSON body
# is the escape \u0000, so the middleware, which sees only bytes, cannot tell it from a harmless one.
TEXT_PATTERN = r"^[^\x00]*$"


@dataclass(frozen=True)
class BodyLimits:
    """Limits on request bodies (``ServiceSettings.http_max_body_bytes`` / ``http_max_json_depth``)."""

    max_body_bytes: int = 1024 * 1024
    """Largest request body; 413 above, answered before the body is read when its length is declared."""
    max_json_depth: int = 32
    """Deepest nesting of arrays and objects in a JSON body; 400 above."""
    routes: tuple[tuple[str, int], ...] = ()
    """Larger limits for named routes: (regular expression matched against the whole path, limit), e.g. a
    model upload; the first match wins, every other path has ``max_body_bytes``."""

    def limit_for(self, path: str) -> int:
        for pattern, limit in self.routes:
            if re.fullmatch(pattern, path):
                return limit
        return self.max_body_bytes


def json_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in ``body`` (0 for a scalar). Brackets inside strings do not
    count; the body need not be valid JSON (the parser that reads it later says what is wrong)."""
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    return max(accumulate(1 if b in (91, 123) else -1 for b in brackets))


class TooLarge(HTTPException):
    """Raised from ``receive`` when a body without a declared length passes the limit; FastAPI renders it
    as any HTTPException, and the middleware answers it if it escapes the app."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the body exceeds {limit} bytes")


class RequestLimitMiddleware:
    def __init__(self, app: ASGIApp, limits: BodyLimits = BodyLimits()) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope["query_string"] or b"\x00" in scope["query_string"]:
            where = "path" if "\x00" in scope["path"] else "query string"
            await _answer(send, 400, f"the {where} contains a NUL byte (%00), which no parameter accepts")
            return
        limit = self.limits.limit_for(scope["path"])
        declared: int | None = None
        is_json = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None  # the server refuses a malformed length before we are called
            elif name == b"content-type":
                is_json = b"json" in value.lower()
        if declared is not None and declared > limit:
            await _answer(send, 413, f"the body has {declared} bytes; at most {limit} are accepted")
            return
        if is_json:
            body = await _read(receive, limit)
            if body is None:
                await _answer(send, 413, f"the body exceeds {limit} bytes")
                return
            depth = json_depth(body)
            if depth > self.limits.max_json_depth:
                await _answer(
                    send,
                    400,
                    f"the JSON body nests {depth} levels deep; at most {self.limits.max_json_depth} "
                    "are accepted",
                )
                return
            receive = _replay(body, receive)
        else:
            receive = _counting(receive, limit)
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except TooLarge:
            if started:
                raise
            await _answer(send, 413, f"the body exceeds {limit} bytes")


async def _read(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it passes ``limit`` (nothing more is read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # a disconnect: what was read is all there is
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the disconnect, when it comes

    return replay


def _counting(receive: Receive, limit: int) -> Receive:
    size = 0

    async def counted() -> Message:
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                raise TooLarge(limit)
        return message

    return counted


async def _answer(send: Send, status: int, detail: str) -> None:
    body = orjson.dumps({"detail": detail})
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
