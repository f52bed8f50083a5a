"""The scorer's HTTP server as it was before its edges were hardened (header deadline, caps counted as
bytes arrive, connection limit, lingering refusals): kept verbatim as the peer of
``tests/bench/bench_scorer_edges.py``, which measures what the hardening costs. Not used by the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import httptools

from tollgate_scorer.http import Message, Reply, ScoringApp

log = logging.getLogger(__name__)

_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_PLAIN = [(b"content-type", b"text/plain; charset=utf-8")]
_MAX_PENDING = 64  # answers held for a pipelining client before its connection stops being read


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d Unknown\r\n" % status


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
        idle_timeout_s: float = 5.0,
        max_header_bytes: int = 64 * 1024,
        shutdown_timeout_s: float = 10.0,
        backlog: int = 2048,
        reuse_port: bool = False,
    ) -> None:
        self.app = app
        # SO_REUSEPORT: several worker processes listen on one port and the kernel spreads connections
        # over them. Off for a lone process, so a second scorer started on a taken port fails loudly.
        self.reuse_port = reuse_port
        self.host, self.port = host, port
        self.idle_timeout_s = idle_timeout_s
        self.max_header_bytes = max_header_bytes
        self.shutdown_timeout_s = shutdown_timeout_s
        self.backlog = backlog
        self.should_exit = False
        self.started = False
        self.connections: set[_Connection] = set()
        self.date = b""
        self._date_second = -1
        self.tick()

    def tick(self) -> None:
        """Refresh the Date header (once a second) and close connections idle for too long."""
        now = time.time()
        second = int(now)
        if second != self._date_second:
            self._date_second = second
            self.date = b"date: " + formatdate(second, usegmt=True).encode() + b"\r\n"
        deadline = time.monotonic() - self.idle_timeout_s
        for connection in list(self.connections):
            if connection.idle_since is not None and connection.idle_since < deadline:
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
                await asyncio.sleep(0.1)
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
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
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
        self.method = ""
        self.step: Any = None  # a Reply, a Finish, or None for the operations app
        self.body: list[bytes] = []
        self.body_size = 0
        # Answers: written at once, or queued behind an operations request still running.
        self.pending: deque[tuple[bytes, bool] | tuple[dict[str, Any], bytes, bool]] = deque()
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
        self.peer = transport.get_extra_info("peername")
        self.local = transport.get_extra_info("sockname")
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)
        if self.gone is not None:
            self.gone.set()
        if self.task is not None:
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except _Abort:
            pass
        except httptools.HttpParserUpgrade:
            self._refuse(400, b"protocol upgrades are not supported\n")
        except httptools.HttpParserError as exc:
            self._refuse(400, b"malformed HTTP request: %s\n" % str(exc).encode())

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
        self.url = b""
        self.headers = []
        self.header_bytes = 0
        self.body = []
        self.body_size = 0
        self.step = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > self.server.max_header_bytes:
            self._refuse(431, b"the request headers exceed %d bytes\n" % self.server.max_header_bytes)
            raise _Abort
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
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
                reply: Reply = (413, b"the body exceeds %d bytes\n" % self.limit, _PLAIN)
            else:
                reply = self._run(step, b"".join(self.body))
            self._answer(reply, keep_alive=False)
            self._close_after_write()
            raise _Abort

    def on_message_complete(self) -> None:
        keep_alive = self.parser.should_keep_alive() and not self.stopping
        step = self.step
        if type(step) is tuple:
            self._answer(step, keep_alive)
        elif step is not None:
            body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
            self._answer(self._run(step, body), keep_alive)
        else:
            self._queue_operations(keep_alive)
        self.body = []
        if not keep_alive:
            self.parser = httptools.HttpRequestParser(self)  # nothing more is read from this client
            self.closing = True

    # ---- answers

    def _run(self, step: Any, body: bytes) -> Reply:
        try:
            reply: Reply = step(body)
            return reply
        except Exception:  # a bug, not the client's fault: a 500 for this request, the server lives on
            log.exception("scorer: %s %s failed", self.method, self.url[:200])
            return 500, b'{"error":"internal error"}', [(b"content-type", b"application/json")]

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
            item = self.pending.popleft()
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

    def _refuse(self, status: int, message: bytes) -> None:
        self._write(self._encode(status, message, _PLAIN, False, False), keep_alive=False)
        self.closing = True

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
