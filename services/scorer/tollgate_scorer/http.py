"""The scoring routes as a plain ASGI application, in front of the FastAPI operations app.

``/v1/models/{name}/score`` and ``/v2/...`` (Open Inference Protocol) are answered here directly: one pass
over the headers, the body read with its size checked first (413 before any parsing), orjson both ways, no
routing table, no middleware, no request or response objects. Everything else (``/healthz``, ``/readyz``,
``/metrics``, ``/openapi.json``, ``/docs``) falls through to the FastAPI app, whose OpenAPI document also
describes these routes (``tollgate_scorer.openapi``).

Measured with wrk (1 thread, 8 connections, loopback, one credit-default row per request) against a bare
Starlette + onnxruntime endpoint (no validation, no logging) on the same shared 2-core machine, as server
CPU time per request (steadier than requests/s there): bare about 128 us, this app with logging off about
129 us, with logging on about 143 us; best-of-five requests/s 6,285 bare, 6,110 logging off, 5,389 logging
on. Most of the CPU is the HTTP server and the kernel's loopback TCP, not this module.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

import orjson

from tollgate_core.scoring import Channel
from tollgate_scorer import oip
from tollgate_scorer.auth import CHALLENGE, Authenticator, Denied
from tollgate_scorer.core import Scored, Scorer, ScoringFailure

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON_TYPE = (b"content-type", b"application/json")
BINARY_TYPE = (b"content-type", b"application/octet-stream")
V1_PREFIX = "/v1/models/"
V1_SUFFIX = "/score"


class _Reject(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, list(headers)


class _ClientGone(Exception):
    pass


class _Request:
    """The few headers the scoring routes look at, found in one pass."""

    __slots__ = ("api_key", "authorization", "content_length", "encoding", "header_length", "traceparent")

    def __init__(self, headers: Sequence[tuple[bytes, bytes]]) -> None:
        self.content_length: bytes | None = None
        self.authorization: bytes | None = None
        self.api_key: bytes | None = None
        self.traceparent: bytes | None = None
        self.header_length: bytes | None = None
        self.encoding: bytes | None = None
        for name, value in headers:
            if name == b"content-length":
                self.content_length = value
            elif name == b"authorization":
                self.authorization = value
            elif name == b"x-api-key":
                self.api_key = value
            elif name == b"traceparent":
                self.traceparent = value
            elif name == b"inference-header-content-length":
                self.header_length = value
            elif name == b"content-encoding":
                self.encoding = value


async def respond(
    send: Send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = (JSON_TYPE,)
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ScoringApp:
    def __init__(
        self,
        scorer: Scorer,
        fallback: ASGIApp,
        *,
        authenticator: Authenticator | None,
        max_body_bytes: int,
        max_instances: int,
        ready: Callable[[], str | None],
        model_errors: Callable[[str], str | None],
        server_version: str,
    ) -> None:
        self.scorer = scorer
        self.fallback = fallback
        self.authenticator = authenticator
        self.max_body_bytes = max_body_bytes
        self.max_instances = max_instances
        self._ready = ready
        self._model_errors = model_errors
        self._server = orjson.dumps(
            {"name": "tollgate-scorer", "version": server_version, "extensions": ["binary_tensor_data"]}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith(V1_PREFIX):
                await self._v1(scope, receive, send, path)
                return
            if path.startswith("/v2"):
                await self._v2(scope, receive, send, path)
                return
        await self.fallback(scope, receive, send)

    # ---- /v1/models/{name}/score

    async def _v1(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        if not path.endswith(V1_SUFFIX) or path.count("/") != 4:
            await self.fallback(scope, receive, send)  # FastAPI's 404
            return
        name = path[len(V1_PREFIX) : -len(V1_SUFFIX)]
        try:
            if scope["method"] != "POST":
                raise _Reject(405, "method_not_allowed", "use POST", [(b"allow", b"POST")])
            request = _Request(scope["headers"])
            self._authenticate(request)
            body = await self._body(request, receive)
            try:
                document = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise _Reject(400, "invalid_request", f"the body is not JSON: {exc}") from None
            instances, single = self._instances(document)
            scored = self.scorer.score(name, instances, Channel.HTTP, traceparent=request.traceparent)
        except _Reject as reject:
            await respond(
                send, reject.status, _error(reject.code, reject.message), [JSON_TYPE, *reject.headers]
            )
            return
        except ScoringFailure as failure:
            await respond(send, failure.status, _error(failure.code, failure.message, failure.violations))
            return
        except _ClientGone:
            return
        rows = result_rows(name, scored, instances)
        await respond(send, 200, orjson.dumps(rows[0] if single else {"model": name, "results": rows}))

    def _instances(self, document: Any) -> tuple[list[Any], bool]:
        if type(document) is dict and len(document) == 1:
            if "instance" in document:
                return [document["instance"]], True
            instances = document.get("instances")
            if type(instances) is list:
                if len(instances) > self.max_instances:
                    raise _Reject(
                        413,
                        "too_large",
                        f"{len(instances)} instances in one request; at most {self.max_instances}",
                    )
                return instances, False
        raise _Reject(
            400,
            "invalid_request",
            'the body is {"instance": {feature: value, ...}} or {"instances": [{...}, ...]}',
        )

    # ---- /v2 (Open Inference Protocol)

    async def _v2(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        parts = path.strip("/").split("/")
        method = scope["method"]
        try:
            if parts == ["v2"]:
                self._get_only(method)
                await respond(send, 200, self._server)
            elif parts[:2] == ["v2", "health"] and len(parts) == 3 and parts[2] in ("live", "ready"):
                self._get_only(method)
                if parts[2] == "live":
                    await respond(send, 200, b'{"live":true}')
                else:
                    problem = self._ready()
                    await respond(
                        send,
                        200 if problem is None else 400,
                        orjson.dumps({"ready": problem is None} | ({"error": problem} if problem else {})),
                    )
            elif parts[:2] == ["v2", "models"] and len(parts) >= 3:
                await self._model_route(scope, receive, send, parts[2], parts[3:], method)
            else:
                raise _Reject(404, "not_found", f"no OIP endpoint {path}")
        except _Reject as reject:
            await respond(send, reject.status, _oip_error(reject.message), [JSON_TYPE, *reject.headers])
        except ScoringFailure as failure:
            await respond(send, failure.status, _oip_error(failure.message, failure.violations))
        except oip.OipError as exc:
            await respond(send, 400, _oip_error(str(exc)))
        except _ClientGone:
            return

    async def _model_route(
        self, scope: Scope, receive: Receive, send: Send, name: str, rest: list[str], method: str
    ) -> None:
        version: str | None = None
        if rest[:1] == ["versions"]:
            if len(rest) < 2:
                raise _Reject(404, "not_found", "a version id follows /versions/")
            version, rest = rest[1], rest[2:]
        action = rest[0] if rest else ""
        if len(rest) > 1 or action not in ("", "ready", "infer"):
            raise _Reject(404, "not_found", f"no OIP endpoint {scope['path']}")
        if action == "ready":
            self._get_only(method)
            await self._model_ready(send, name, version)
            return
        request = _Request(scope["headers"])
        self._authenticate(request)
        if action == "":
            self._get_only(method)
            await respond(send, 200, orjson.dumps(self._metadata(name, version)))
            return
        if method != "POST":
            raise _Reject(405, "method_not_allowed", "use POST", [(b"allow", b"POST")])
        body = await self._body(request, receive)
        header_length = _int_header(request.header_length, "Inference-Header-Content-Length")
        document, instances = oip.parse_request(body, header_length)
        if len(instances) > self.max_instances:
            raise _Reject(
                413, "too_large", f"{len(instances)} instances in one request; at most {self.max_instances}"
            )
        scored = self.scorer.score(
            name, instances, Channel.OIP, traceparent=request.traceparent, version=version, one_route=True
        )
        payload, json_length = oip.build_response(name, document, scored, binary_default=False)
        if json_length is None:
            await respond(send, 200, payload)
        else:
            await respond(
                send,
                200,
                payload,
                [BINARY_TYPE, (b"inference-header-content-length", str(json_length).encode())],
            )

    async def _model_ready(self, send: Send, name: str, version: str | None) -> None:
        route = self.scorer.table.get(name)
        if route is None:
            raise _Reject(404, "not_found", f"no model named {name!r} is served here")
        model = route.version(version) if version is not None else (route.production or route.staging)
        error = self._model_errors(name)
        ready = model is not None
        body: dict[str, Any] = {"name": name, "ready": ready}
        if model is not None:
            body["version"] = model.version
        if error:
            body["error"] = error
        await respond(send, 200 if ready else 400, orjson.dumps(body))

    def _metadata(self, name: str, version: str | None) -> dict[str, Any]:
        route = self.scorer.route(name)
        shown = route.version(version) if version is not None else (route.production or route.staging)
        if shown is None:
            raise ScoringFailure(
                404 if version else 503,
                "no_version",
                f"version {version} of {name} is not served"
                if version
                else f"no version of {name} is in production yet",
            )
        return oip.model_metadata(name, route.models(), shown)

    # ---- shared

    @staticmethod
    def _get_only(method: str) -> None:
        if method not in ("GET", "HEAD"):
            raise _Reject(405, "method_not_allowed", "use GET", [(b"allow", b"GET")])

    def _authenticate(self, request: _Request) -> None:
        if self.authenticator is None:
            return
        denied: Denied | None = self.authenticator.check(request.authorization, request.api_key)
        if denied is not None:
            raise _Reject(
                denied.status, denied.code, denied.message, [CHALLENGE] if denied.status == 401 else []
            )

    async def _body(self, request: _Request, receive: Receive) -> bytes:
        limit = self.max_body_bytes
        if request.encoding is not None and request.encoding not in (b"identity",):
            raise _Reject(415, "unsupported_encoding", "compressed request bodies are not accepted")
        declared = _int_header(request.content_length, "Content-Length")
        if declared is not None and declared > limit:
            raise _Reject(413, "too_large", f"the body has {declared} bytes; at most {limit} are accepted")
        message = await receive()
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if message["type"] == "http.disconnect":
                raise _ClientGone
            if len(body) > limit:
                raise _Reject(413, "too_large", f"the body has more than {limit} bytes")
            return body
        chunks, size = [body], len(body)
        while message.get("more_body", False):
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _Reject(413, "too_large", f"the body has more than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


def result_rows(name: str, scored: Scored, instances: Sequence[Any]) -> list[dict[str, Any]]:
    """One JSON-ready result per instance, in request order."""
    request_ids = scored.request_ids
    rows: list[dict[str, Any]] = [None] * len(instances)  # type: ignore[list-item]
    for part in scored.parts:
        model, route, out = part.model, part.route, part.outputs
        version, keys, entity_field = model.version, model.class_keys, model.reader.entity_field
        predictions, scores, probabilities = out.predictions, out.scores, out.probabilities
        indices = part.rows if part.rows is not None else range(len(instances))
        for position, index in enumerate(indices):
            row: dict[str, Any] = {
                "request_id": request_ids[index],
                "model": name,
                "version": version,
                "route": route,
                "prediction": predictions[position],
            }
            if scores is not None:
                row["score"] = scores[position]
            if probabilities is not None:
                row["probabilities"] = dict(zip(keys, probabilities[position], strict=True))
            entity = instances[index].get(entity_field)
            if entity is not None:
                row["entity_id"] = entity
            rows[index] = row
    return rows


def _int_header(value: bytes | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise _Reject(400, "invalid_request", f"{name} is not a number: {value[:40]!r}") from None


def _error(code: str, message: str, violations: Sequence[dict[str, Any]] = ()) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if violations:
        error["violations"] = violations
    return orjson.dumps({"error": error})


def _oip_error(message: str, violations: Sequence[dict[str, Any]] = ()) -> bytes:
    body: dict[str, Any] = {"error": message}
    if violations:
        body["violations"] = violations
    return orjson.dumps(body)
