"""The scorer's HTTP/1.1 server: httptools' parser on an asyncio protocol, scoring in the parser's callback.

A scoring request is CPU work of a few tens of microseconds with nothing to wait for, so it needs no task,
no ASGI scope and no ``receive``/``send`` round trips: the protocol feeds bytes to the parser (httptools,
the parser uvicorn uses), calls :meth:`ScoringApp.begin` once the headers are in and the returned step
once the body is complete, and writes the answer to the transport in the same callback. Any other route
(``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json``, ``/docs``) runs the FastAPI operations app in
a task, through a small ASGI bridge. Answers on a connection keep the order of its requests (HTTP/1.1
pipelining), whichever way they were made: an answer made later (a request scored with the others of its
event-loop turn, see ``tollgate_scorer.coalesce``) holds its place in the connection's queue until it is
ready, and answers behind it wait for it.

Measured with wrk (1 thread, 8 connections, one row per request, server and wrk pinned to one core each,
same machine and run): a bare Starlette + onnxruntime endpoint on uvicorn ~6,000 requests/s, the same
work on this server ~8,100: uvicorn's per-request task, scope and message passing cost about 40 us per
request, a third of the total. ``tests/bench/bench_scorer.py`` has the figures for the whole scorer.

HTTP handled: keep-alive (HTTP/1.1 default, ``Connection: close``, HTTP/1.0), pipelining, chunked request
bodies (decoded by the parser), ``Expect: 100-continue``, ``HEAD`` (headers only), the body limit (413 as
soon as the declared or received size exceeds it; the connection is then closed rather than read to the
end), malformed requests (400, connection closed), protocol upgrades (not offered: 400), and back-pressure
(a client that does not read its answers stops being read). Shutdown stops accepting, lets requests in
progress finish (bounded), then closes every connection.

Edges (:class:`HttpLimits`, every one a scorer setting with its default documented there):

* Byte caps on the request line (414) and on the header block (431), counted as data arrives: the URL as
  the parser streams it, each header as it completes, and every byte read while a request's head is still
  incomplete. httptools keeps a header value in memory until it ends, so that last count is what bounds a
  single endless header: reads in the head are fed to the parser in slices of at most ``_SLICE`` bytes and
  the connection is answered 431 and closed once the head passes both caps plus one slice. Memory per
  connection stays within the caps plus a slice, whatever the client sends.
* A deadline for the request line and headers (``header_timeout_s``, from the request's first byte): a
  client that has not finished them by then gets 408 and is closed (one byte and silence is a request that
  has begun).
* An idle timeout for partial bodies (``body_timeout_s``: no byte of a body for that long, 408 and closed)
  and for kept-alive connections between requests (``idle_timeout_s``, closed silently).
* A connection limit (``max_connections``): a connection beyond it is answered 503 at once and closed
  after its request is read (or after a second), without being parsed; connections already served keep
  being served.

Deadlines are checked by a tick every ``_TICK_S`` against a clock the tick reads, so the per-request path
reads no clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from email.utils import formatdate
from functools import partial
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import httptools

from tollgate_scorer.http import Message, PendingScore, Reply, ScoringApp

log = logging.getLogger(__name__)

_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_PLAIN = [(b"content-type", b"text/plain; charset=utf-8")]
_MAX_PENDING = 64  # answers held for a pipelining client before its connection stops being read
_SLICE = 8 * 1024  # a read in a request's head is fed in slices this large, so its size is known per slice
_TICK_S = 0.1  # deadlines are checked this often
_LINGER_S = 1.0  # a refused connection is half-closed and its reads dropped this long before it is closed
_IDLE, _HEAD, _BODY = 0, 1, 2  # where a connection is in its current request


@dataclass(frozen=True)
class HttpLimits:
    """The limits of the scorer's HTTP server (settings ``TOLLGATE_SCORER_HTTP_*``)."""

    max_connections: int = 1024
    """Connections served at once; one more is answered 503 and closed."""
    max_request_line_bytes: int = 8 * 1024
    """Longest request target (path and query); 414 above."""
    max_header_bytes: int = 64 * 1024
    """Most bytes in the header block (names and values); 431 above."""
    header_timeout_s: float = 10.0
    """Time from a request's first byte until its headers must be complete; 408 and closed after."""
    body_timeout_s: float = 10.0
    """Longest pause in the middle of a request body; 408 and closed after."""
    idle_timeout_s: float = 5.0
    """A kept-alive connection with no request this long is closed."""


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d Unknown\r\n" % status


class _Waiting:
    """A connection's place for an answer that is being made elsewhere (a request waiting for its batch)."""

    __slots__ = ("data", "head", "keep_alive")

    def __init__(self, keep_alive: bool, head: bool) -> None:
        self.keep_alive = keep_alive
        self.head = head
        self.data: bytes | None = None


class _Abort(Exception):
    """Raised inside a parser callback after the connection has been answered and closed."""


class HttpServer:
    """Serves a :class:`ScoringApp` until ``should_exit`` is set (the signal handlers set it)."""

    def __init__(
        self,
        app: ScoringApp,
        host: str,
        port: int,
        *,
        limits: HttpLimits | None = None,
        shutdown_timeout_s: float = 10.0,
        backlog: int = 2048,
        reuse_port: bool = False,
        **overrides: Any,
    ) -> None:
        self.app = app
        # SO_REUSEPORT: several worker processes listen on one port and the kernel spreads connections
        # over them. Off for a lone process, so a second scorer started on a taken port fails loudly.
        self.reuse_port = reuse_port
        self.host, self.port = host, port
        limits = limits or HttpLimits()
        if overrides:  # e.g. HttpServer(app, host, port, idle_timeout_s=0.3) in tests
            limits = HttpLimits(**{**limits.__dict__, **overrides})
        self.limits = limits
        self.max_header_bytes = limits.max_header_bytes
        self.max_line_bytes = limits.max_request_line_bytes
        # Bytes read while one request's head is incomplete, at most: both caps, and the slice that may
        # hold the end of the previous request.
        self.max_head_read = limits.max_request_line_bytes + limits.max_header_bytes + 2 * _SLICE
        self.shutdown_timeout_s = shutdown_timeout_s
        self.backlog = backlog
        self.should_exit = False
        self.started = False
        self.connections: set[_Connection] = set()
        self.lingering: set[_Connection] = set()
        self.refused_total = 0
        self.timed_out_total = 0
        self.now = time.monotonic()
        self.date = b""
        self._date_second = -1
        self.tick()

    def tick(self) -> None:
        """Refresh the clock and the Date header, and close connections past a deadline."""
        now = time.time()
        second = int(now)
        if second != self._date_second:
            self._date_second = second
            self.date = b"date: " + formatdate(second, usegmt=True).encode() + b"\r\n"
        self.now = clock = time.monotonic()
        limits = self.limits
        idle = clock - limits.idle_timeout_s
        head = clock - limits.header_timeout_s
        body = clock - limits.body_timeout_s
        for connection in list(self.connections):
            phase = connection.phase
            if phase == _IDLE:
                if connection.idle_since is not None and connection.idle_since < idle:
                    connection.close()
            elif phase == _HEAD:
                if connection.head_started < head:
                    self.timed_out_total += 1
                    connection.time_out(
                        b"the request line and headers took longer than %g s\n" % limits.header_timeout_s
                    )
            elif connection.last_read < body and not connection.read_paused:
                self.timed_out_total += 1
                connection.time_out(b"no byte of the request body for %g s\n" % limits.body_timeout_s)
        linger = clock - _LINGER_S
        for connection in list(self.lingering):
            if connection.linger_since < linger:
                connection.close()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Connection(self),
            self.host,
            self.port,
            backlog=self.backlog,
            reuse_address=True,
            reuse_port=self.reuse_port or None,
        )
        self.started = True
        log.info("scorer: serving HTTP on %s:%d", self.host, self.port)
        try:
            while not self.should_exit:
                await asyncio.sleep(_TICK_S)
                self.tick()
        finally:
            server.close()
            await self._drain()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    async def _drain(self) -> None:
        for connection in list(self.connections):
            connection.finish_and_close()
        deadline = time.monotonic() + self.shutdown_timeout_s
        while self.connections and time.monotonic() < deadline:  # noqa: ASYNC110 (bounded poll)
            await asyncio.sleep(0.05)
        for connection in [*self.connections, *self.lingering]:
            connection.close()


class _Connection(asyncio.Protocol):
    """One client connection: parser state for the request being read, answers in request order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.app = server.app
        self.limit = server.app.max_body_bytes
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] | None = None
        self.local: tuple[str, int] | None = None
        # The request being read.
        self.url = b""
        self.raw_path = b""
        self.query = b""
        self.path = ""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.phase = _IDLE
        self.head_read = 0  # bytes read while this request's head is incomplete (see _SLICE)
        self.head_started = server.now
        self.last_read = server.now
        self.linger_since = 0.0
        self.method = ""
        self.step: Any = None  # a Reply, a Finish, or None for the operations app
        self.body: list[bytes] = []
        self.body_size = 0
        # Answers: written at once, or queued behind an operations request still running.
        self.pending: deque[tuple[bytes, bool] | tuple[dict[str, Any], bytes, bool] | _Waiting] = deque()
        self.task: asyncio.Task[None] | None = None
        self.gone: asyncio.Event | None = None
        self.idle_since: float | None = time.monotonic()
        self.write_paused = False
        self.read_paused = False
        self.closing = False
        self.stopping = False

    # ---- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        server = self.server
        if len(server.connections) >= server.limits.max_connections:
            server.refused_total += 1
            self._refuse(
                503,
                b"the server has %d connections, its limit; retry later\n" % server.limits.max_connections,
                [*_PLAIN, (b"retry-after", b"1")],
            )
            return
        self.peer = transport.get_extra_info("peername")
        self.local = transport.get_extra_info("sockname")
        server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)
        self.server.lingering.discard(self)
        if self.gone is not None:
            self.gone.set()
        if self.task is not None:
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        if self.closing:  # answered for the last time (or lingering): what else comes is dropped
            return
        self.last_read = self.server.now
        try:
            if self.phase == _BODY:
                self.parser.feed_data(data)
                # A request that began in this read after a body has its head bytes in it: not counted
                # here (at most one read), counted from the next read on.
            elif len(data) <= _SLICE:
                self.parser.feed_data(data)
                if self.phase == _HEAD:
                    self._count_head(len(data))
            else:
                self._feed_slices(data)
        except _Abort:
            pass
        except httptools.HttpParserUpgrade:
            self._refuse(400, b"protocol upgrades are not supported\n")
        except httptools.HttpParserError as exc:
            self._refuse(400, b"malformed HTTP request: %s\n" % str(exc).encode())

    def _feed_slices(self, data: bytes) -> None:
        """A large read while no body is being read: fed a slice at a time, so that a head that never ends
        is refused within a slice of its cap, never buffered whole."""
        for start in range(0, len(data), _SLICE):
            if self.closing:
                return
            if self.phase == _BODY:
                self.parser.feed_data(data[start:])
                return
            piece = data[start : start + _SLICE]
            self.parser.feed_data(piece)
            if self.phase == _HEAD:
                self._count_head(len(piece))

    def _count_head(self, size: int) -> None:
        self.head_read += size
        if self.head_read > self.server.max_head_read:
            self._refuse(
                431,
                b"the request line and headers exceed %d bytes\n"
                % (self.server.max_line_bytes + self.server.max_header_bytes),
            )
            raise _Abort

    def time_out(self, message: bytes) -> None:
        """A deadline passed: 408 if nothing is being answered on this connection, then closed."""
        if self.task is None and not self.pending:
            self._refuse(408, message)
        else:
            self.close()

    def pause_writing(self) -> None:
        self.write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if len(self.pending) < _MAX_PENDING:
            self._resume_reading()

    # ---- parser callbacks

    def on_message_begin(self) -> None:
        self.idle_since = None
        self.phase = _HEAD
        self.head_read = 0
        self.head_started = self.server.now
        self.url = b""
        self.headers = []
        self.header_bytes = 0
        self.body = []
        self.body_size = 0
        self.step = None

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.server.max_line_bytes:
            self._refuse(414, b"the request target exceeds %d bytes\n" % self.server.max_line_bytes)
            raise _Abort

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > self.server.max_header_bytes:
            self._refuse(431, b"the request headers exceed %d bytes\n" % self.server.max_header_bytes)
            raise _Abort
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.phase = _BODY
        self.method = method = self.parser.get_method().decode("ascii")
        raw_path, _, self.query = self.url.partition(b"?")
        self.raw_path = raw_path
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        self.path = path
        step = self.app.begin(method, path, self.headers)
        self.step = step
        if type(step) is tuple:
            if step[0] == 413:  # refused on its declared size: answer now, never read it
                self._answer(step, keep_alive=False)
                self._close_after_write()
                raise _Abort
            return  # answered without the body: what follows is read and dropped
        if step is None and self._declared() > self.limit:
            self._answer((413, b"the body exceeds %d bytes\n" % self.limit, _PLAIN), keep_alive=False)
            self._close_after_write()
            raise _Abort
        for name, value in self.headers:
            if name == b"expect" and value.lower() == b"100-continue" and self.transport is not None:
                self.transport.write(_CONTINUE)

    def on_body(self, chunk: bytes) -> None:
        step = self.step
        if type(step) is tuple:
            return
        self.body_size += len(chunk)
        self.body.append(chunk)
        if self.body_size > self.limit:
            if step is None:
                reply: Reply | PendingScore = (413, b"the body exceeds %d bytes\n" % self.limit, _PLAIN)
            else:
                reply = self._run(step, b"".join(self.body))
            self._answer_step(reply, keep_alive=False)
            self._close_after_write()
            raise _Abort

    def on_message_complete(self) -> None:
        self.phase = _IDLE
        keep_alive = self.parser.should_keep_alive() and not self.stopping
        step = self.step
        if type(step) is tuple:
            self._answer(step, keep_alive)
        elif step is not None:
            body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
            self._answer_step(self._run(step, body), keep_alive)
        else:
            self._queue_operations(keep_alive)
        self.body = []
        if not keep_alive:
            self.parser = httptools.HttpRequestParser(self)  # nothing more is read from this client
            self.closing = True

    # ---- answers

    def _run(self, step: Any, body: bytes) -> Reply | PendingScore:
        try:
            reply: Reply | PendingScore = step(body)
            return reply
        except Exception:  # a bug, not the client's fault: a 500 for this request, the server lives on
            log.exception("scorer: %s %s failed", self.method, self.url[:200])
            return 500, b'{"error":"internal error"}', [(b"content-type", b"application/json")]

    def _answer_step(self, outcome: Reply | PendingScore, keep_alive: bool) -> None:
        """Answer now, or hold this request's place until its batch answers it."""
        if type(outcome) is tuple:
            self._answer(outcome, keep_alive)
            return
        assert type(outcome) is PendingScore
        waiting = _Waiting(keep_alive, self.method == "HEAD")
        self.idle_since = None
        self.pending.append(waiting)
        if len(self.pending) >= _MAX_PENDING:
            self._pause_reading()
        outcome.then(partial(self._delivered, waiting))

    def _delivered(self, waiting: _Waiting, reply: Reply) -> None:
        status, body, headers = reply
        waiting.data = self._encode(status, body, headers, waiting.keep_alive, waiting.head)
        if self.task is None:
            self._flush_pending()

    def _answer(self, reply: Reply, keep_alive: bool) -> None:
        status, body, headers = reply
        data = self._encode(status, body, headers, keep_alive, self.method == "HEAD")
        if self.task is not None or self.pending:
            self.pending.append((data, keep_alive))
            if len(self.pending) >= _MAX_PENDING:
                self._pause_reading()
            return
        self._write(data, keep_alive)

    def _encode(
        self, status: int, body: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool, head: bool
    ) -> bytes:
        parts = [_status_line(status)]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        parts.append(self.server.date)
        if not keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"content-length: %d\r\n\r\n" % len(body))
        if not head:
            parts.append(body)
        return b"".join(parts)

    def _write(self, data: bytes, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        if not keep_alive:
            transport.close()
        elif self.task is None and not self.pending:
            self.idle_since = time.monotonic()

    def _queue_operations(self, keep_alive: bool) -> None:
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": self.parser.get_http_version(),
            "method": self.method,
            "scheme": "http",
            "path": self.path,
            "raw_path": self.raw_path,
            "query_string": self.query,
            "root_path": "",
            "headers": self.headers,
            "client": self.peer,
            "server": self.local,
        }
        body = b"".join(self.body)
        if self.task is not None or self.pending:
            self.pending.append((scope, body, keep_alive))
        else:
            self._start(scope, body, keep_alive)

    def _start(self, scope: dict[str, Any], body: bytes, keep_alive: bool) -> None:
        self.idle_since = None
        self.task = asyncio.get_running_loop().create_task(self._operations(scope, body, keep_alive))

    async def _operations(self, scope: dict[str, Any], body: bytes, keep_alive: bool) -> None:
        """Run the FastAPI app for one request, then write what is queued behind it."""
        delivered = False
        status = 500
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            if self.gone is None:
                self.gone = asyncio.Event()
            await self.gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    (bytes(n).lower(), bytes(v))
                    for n, v in message.get("headers", ())
                    if bytes(n).lower()
                    not in (b"content-length", b"transfer-encoding", b"connection", b"date")
                ]
            elif message["type"] == "http.response.body":
                chunks.append(bytes(message.get("body", b"")))

        try:
            await self.app.fallback(scope, receive, send)
            reply: Reply = (status, b"".join(chunks), headers)
        except asyncio.CancelledError:
            return  # the connection is gone
        except Exception:
            log.exception("scorer: %s %s failed", scope["method"], scope["path"])
            reply = (500, b"Internal Server Error\n", _PLAIN)
        data = self._encode(*reply, keep_alive, scope["method"] == "HEAD")
        self.task = None
        self._write(data, keep_alive)
        self._flush_pending()

    def _flush_pending(self) -> None:
        while self.pending and self.task is None:
            item = self.pending[0]
            if isinstance(item, _Waiting):
                if item.data is None:
                    break  # its batch answers it, and calls this again
                self.pending.popleft()
                self._write(item.data, item.keep_alive)
                continue
            self.pending.popleft()
            if len(item) == 2:
                self._write(item[0], item[1])
            else:
                self._start(*item)
        if len(self.pending) < _MAX_PENDING and not self.write_paused:
            self._resume_reading()

    # ---- connection state

    def _declared(self) -> int:
        for name, value in self.headers:
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return 0
        return 0

    def _refuse(self, status: int, message: bytes, headers: list[tuple[bytes, bytes]] = _PLAIN) -> None:
        """Answer and stop reading requests. The connection is half-closed and lingers: what the client
        still sends is read and dropped for up to ``_LINGER_S``, because closing a socket with unread
        bytes resets it, and a reset can reach the client before it has read the answer."""
        self.closing = True
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(self._encode(status, message, headers, False, False))
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        server = self.server
        server.connections.discard(self)
        server.lingering.add(self)
        self.linger_since = server.now

    def _close_after_write(self) -> None:
        self.closing = True
        if self.transport is not None and not self.transport.is_closing() and not self.pending:
            self.transport.close()

    def _pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None and not self.transport.is_closing():
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.read_paused and self.transport is not None and not self.transport.is_closing():
            self.read_paused = False
            self.transport.resume_reading()

    def finish_and_close(self) -> None:
        """Shutdown: close now if idle, else after the answers in progress."""
        self.stopping = True
        if self.task is None and not self.pending and self.idle_since is not None:
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
