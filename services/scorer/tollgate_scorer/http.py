"""The scoring routes, answered without a web framework, in front of the FastAPI operations app.

``/v1/models/{name}/score`` and ``/v2/...`` (Open Inference Protocol) are answered here directly in two
steps: :meth:`ScoringApp.begin` looks at the method, path and headers (one pass) and either answers at once
(errors, health, metadata), or returns the step that takes the body; everything it can refuse without the
body (405, 401/403, 415, a declared size over the limit: 413) is refused before a byte of it is read. orjson
both ways, no routing table, no middleware, no request or response objects. Anything else (``/healthz``,
``/readyz``, ``/metrics``, ``/openapi.json``, ``/docs``) is not ours: ``begin`` returns None and the
request goes to the FastAPI app, whose OpenAPI document also describes these routes
(``tollgate_scorer.openapi``).

A single-row ``/v1`` request, when the app has a coalescer (``TOLLGATE_SCORER_COALESCE``, on by default),
is not scored by its step: the step returns a :class:`PendingScore` and queues it, and the coalescer
scores every such request of the same model parsed in the same event-loop turn in one go
(:meth:`~tollgate_scorer.core.Scorer.score_rows`), then hands each its answer. Whoever drives the step
waits for that answer with :meth:`PendingScore.then`.

Two servers drive the same steps: the scorer's own HTTP/1.1 server (``tollgate_scorer.server``), which
calls them straight from the parser's callbacks, and any ASGI server through :meth:`ScoringApp.__call__`
(the in-process tests use that one).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
from opentelemetry import trace

from tollgate_core.scoring import Channel
from tollgate_core.telemetry import is_sampled, server_span
from tollgate_scorer import oip
from tollgate_scorer.auth import CHALLENGE, METADATA_ROLES, Authenticator, Denied
from tollgate_scorer.coalesce import Coalescer
from tollgate_scorer.core import Scored, Scorer, ScoringFailure

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = Sequence[tuple[bytes, bytes]]

# (status, body, headers without content-length): an answer, ready to be written.
Reply = tuple[int, bytes, list[tuple[bytes, bytes]]]


@dataclass(slots=True, eq=False)
class PendingScore:
    """A parsed single-row ``/v1`` request queued for its turn's batch (see ``tollgate_scorer.coalesce``)."""

    name: str
    instance: Any
    single: bool  # sent as {"instance": ...}: answered with the result itself, not {"results": [...]}
    traceparent: bytes | None
    reply: Reply | None = None
    on_reply: Callable[[Reply], None] | None = None

    def then(self, callback: Callable[[Reply], None]) -> None:
        """Call ``callback`` with the answer: now if it is ready, else when it is."""
        if self.reply is not None:
            callback(self.reply)
        else:
            self.on_reply = callback

    def finish(self, reply: Reply) -> None:
        if self.reply is not None:
            return  # answered already: the first answer stands
        self.reply = reply
        if self.on_reply is not None:
            try:
                self.on_reply(reply)
            except Exception:  # the waiter's bug: the other requests of the batch still get their answers
                log.exception("scorer: delivering an answer for %s failed", self.name)


# The second step: takes the request body (which may exceed the limit: the step then answers 413), and
# answers, or queues the request for its batch.
Finish = Callable[[bytes], Reply | PendingScore]

JSON_TYPE = (b"content-type", b"application/json")
BINARY_TYPE = (b"content-type", b"application/octet-stream")
JSON_HEADERS = [JSON_TYPE]
V1_PREFIX = "/v1/models/"
V1_SUFFIX = "/score"


class _Reject(ScoringFailure):
    """A request refused by the HTTP layer itself, possibly with headers for the answer (Allow, a challenge)."""

    def __init__(
        self, status: int, code: str, message: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        super().__init__(status, code, message)
        self.headers = list(headers)


class _ClientGone(Exception):
    pass


class _Request:
    """The few headers the scoring routes look at, found in one pass."""

    __slots__ = ("api_key", "authorization", "content_length", "encoding", "header_length", "traceparent")

    def __init__(self, headers: Headers) -> None:
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
        tracer: trace.Tracer | None = None,
        coalesce: bool = False,
        coalesce_wait_us: int = 0,
        coalesce_max_rows: int = 64,
        explain_max_instances: int = 100,
    ) -> None:
        self.scorer = scorer
        self.tracer = tracer
        self.fallback = fallback
        self.authenticator = authenticator
        self.max_body_bytes = max_body_bytes
        self.max_instances = max_instances
        self.explain_max_instances = explain_max_instances
        self._ready = ready
        self._model_errors = model_errors
        self.coalescer: Coalescer[PendingScore] | None = (
            Coalescer(self._score_pending, wait_us=coalesce_wait_us, max_items=coalesce_max_rows)
            if coalesce
            else None
        )
        self._server = orjson.dumps(
            {"name": "tollgate-scorer", "version": server_version, "extensions": ["binary_tensor_data"]}
        )

    def begin(self, method: str, path: str, headers: Headers) -> Reply | Finish | None:
        """First step of a request: a :data:`Reply`, the :data:`Finish` step that needs the body, or None
        when the route is not a scoring route (the operations app answers it)."""
        if path.startswith(V1_PREFIX):
            if not path.endswith(V1_SUFFIX) or path.count("/") != 4:
                return None  # FastAPI's 404
            return self._v1(method, path[len(V1_PREFIX) : -len(V1_SUFFIX)], headers)
        if path.startswith("/v2"):
            return self._v2(method, path, headers)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The same routes for an ASGI server."""
        step = (
            self.begin(scope["method"], scope["path"], scope["headers"]) if scope["type"] == "http" else None
        )
        if step is None:
            await self.fallback(scope, receive, send)
            return
        if type(step) is tuple:
            reply: Reply = step
        else:
            try:
                body = await self._read(receive)
            except _ClientGone:
                return
            outcome: Reply | PendingScore = step(body)  # type: ignore[operator]
            if isinstance(outcome, PendingScore):
                answer: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
                outcome.then(answer.set_result)
                reply = await answer
            else:
                reply = outcome
        status, body, headers = reply
        await respond(send, status, body, headers)

    # ---- /v1/models/{name}/score

    def _v1(self, method: str, name: str, headers: Headers) -> Reply | Finish:
        try:
            if method != "POST":
                raise _Reject(405, "method_not_allowed", "use POST", [(b"allow", b"POST")])
            request = _Request(headers)
            self._authenticate(request)
            self._check_declared_body(request)
        except _Reject as reject:
            return _v1_failure(reject)
        return partial(self._v1_score, name, request)

    def _v1_score(self, name: str, request: _Request, body: bytes) -> Reply | PendingScore:
        try:
            self._check_body(body)
            try:
                document = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise _Reject(400, "invalid_request", f"the body is not JSON: {exc}") from None
            explain = False
            if type(document) is dict and "explain" in document:
                explain = document.pop("explain")
                if type(explain) is not bool:
                    raise _Reject(400, "invalid_request", '"explain" is true or false')
            instances, single = self._instances(document)
            if explain:
                self._check_explained(len(instances))
            coalescer = self.coalescer
            if (
                coalescer is not None
                and not explain
                and len(instances) == 1
                and (self.tracer is None or not is_sampled(request.traceparent))
                and self.scorer.table.get(name) is not None  # an unknown model's 404 needs no batch
            ):
                pending = PendingScore(name, instances[0], single, request.traceparent)
                coalescer.submit(name, pending)
                return pending
            scored = self._score(name, instances, Channel.HTTP, request, explain=explain)
        except ScoringFailure as failure:
            return _v1_failure(failure)
        rows = result_rows(name, scored, instances, explain=explain)
        return 200, orjson.dumps(rows[0] if single else {"model": name, "results": rows}), JSON_HEADERS

    def _score_pending(self, name: str, batch: list[PendingScore]) -> None:
        """Score a turn's single-row requests for one model together and answer each (the coalescer's
        ``run``). Every request gets an answer, a 500 of its own if scoring itself broke."""
        try:
            outcomes = self.scorer.score_rows(
                name, [p.instance for p in batch], [p.traceparent for p in batch], Channel.HTTP
            )
        except Exception:
            log.exception("scorer: scoring %d request(s) for %s together failed", len(batch), name)
            outcomes = []
        for index, pending in enumerate(batch):
            if index >= len(outcomes):
                pending.finish((500, b'{"error":"internal error"}', JSON_HEADERS))
                continue
            outcome = outcomes[index]
            if isinstance(outcome, ScoringFailure):
                pending.finish(_v1_failure(outcome))
                continue
            try:
                (row,) = result_rows(name, outcome, [pending.instance])
                body = orjson.dumps(row if pending.single else {"model": name, "results": [row]})
            except Exception:
                log.exception("scorer: answering a request for %s failed", name)
                pending.finish((500, b'{"error":"internal error"}', JSON_HEADERS))
                continue
            pending.finish((200, body, JSON_HEADERS))

    def _score(
        self,
        name: str,
        instances: Sequence[Any],
        channel: str,
        request: _Request,
        *,
        version: str | None = None,
        one_route: bool = False,
        explain: bool = False,
    ) -> Scored:
        """Score; a request whose caller's ``traceparent`` is sampled gets a span of its own (the inference
        log then points at it). Others pay nothing: their ``traceparent`` is logged as it came."""
        traceparent = request.traceparent
        if self.tracer is None or not is_sampled(traceparent):
            return self.scorer.score(
                name,
                instances,
                channel,
                traceparent=traceparent,
                version=version,
                one_route=one_route,
                explain=explain,
            )
        attributes: dict[str, str | int] = {"tollgate.model": name, "tollgate.instances": len(instances)}
        with server_span(self.tracer, f"score {channel}", traceparent, attributes) as (_, child):
            return self.scorer.score(
                name,
                instances,
                channel,
                traceparent=child,
                version=version,
                one_route=one_route,
                explain=explain,
            )

    def _check_explained(self, n: int) -> None:
        """An explanation costs up to a few hundred model rows per instance: its own, smaller limit."""
        if n > self.explain_max_instances:
            raise _Reject(
                413,
                "too_large",
                f"{n} instances to explain in one request; at most {self.explain_max_instances}",
            )

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

    def _v2(self, method: str, path: str, headers: Headers) -> Reply | Finish:
        parts = path.strip("/").split("/")
        try:
            if parts == ["v2"]:
                self._get_only(method)
                return 200, self._server, JSON_HEADERS
            if parts[:2] == ["v2", "health"] and len(parts) == 3 and parts[2] in ("live", "ready"):
                self._get_only(method)
                if parts[2] == "live":
                    return 200, b'{"live":true}', JSON_HEADERS
                problem = self._ready()
                return (
                    200 if problem is None else 400,
                    orjson.dumps({"ready": problem is None} | ({"error": problem} if problem else {})),
                    JSON_HEADERS,
                )
            if parts[:2] == ["v2", "models"] and len(parts) >= 3:
                return self._model_route(method, path, headers, parts[2], parts[3:])
            raise _Reject(404, "not_found", f"no OIP endpoint {path}")
        except ScoringFailure as failure:
            return _oip_failure(failure)

    def _model_route(
        self, method: str, path: str, headers: Headers, name: str, rest: list[str]
    ) -> Reply | Finish:
        version: str | None = None
        if rest[:1] == ["versions"]:
            if len(rest) < 2:
                raise _Reject(404, "not_found", "a version id follows /versions/")
            version, rest = rest[1], rest[2:]
        action = rest[0] if rest else ""
        if len(rest) > 1 or action not in ("", "ready", "infer"):
            raise _Reject(404, "not_found", f"no OIP endpoint {path}")
        if action == "ready":
            self._get_only(method)
            return self._model_ready(name, version)
        request = _Request(headers)
        if action == "":
            self._authenticate(request, METADATA_ROLES)
            self._get_only(method)
            return 200, orjson.dumps(self._metadata(name, version)), JSON_HEADERS
        self._authenticate(request)
        if method != "POST":
            raise _Reject(405, "method_not_allowed", "use POST", [(b"allow", b"POST")])
        self._check_declared_body(request)
        header_length = _int_header(request.header_length, "Inference-Header-Content-Length")
        return partial(self._infer, name, version, request, header_length)

    def _infer(
        self, name: str, version: str | None, request: _Request, header_length: int | None, body: bytes
    ) -> Reply:
        try:
            self._check_body(body)
            document, instances = oip.parse_request(body, header_length)
            if len(instances) > self.max_instances:
                raise _Reject(
                    413,
                    "too_large",
                    f"{len(instances)} instances in one request; at most {self.max_instances}",
                )
            explain = oip.explain_requested(document)
            if explain:
                self._check_explained(len(instances))
            scored = self._score(
                name, instances, Channel.OIP, request, version=version, one_route=True, explain=explain
            )
            payload, json_length = oip.build_response(name, document, scored, binary_default=False)
        except ScoringFailure as failure:
            return _oip_failure(failure)
        except oip.OipError as exc:
            return 400, _oip_error(str(exc)), JSON_HEADERS
        if json_length is None:
            return 200, payload, JSON_HEADERS
        return 200, payload, [BINARY_TYPE, (b"inference-header-content-length", str(json_length).encode())]

    def _model_ready(self, name: str, version: str | None) -> Reply:
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
        return 200 if ready else 400, orjson.dumps(body), JSON_HEADERS

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

    def _authenticate(self, request: _Request, roles: frozenset[str] | None = None) -> None:
        if self.authenticator is None:
            return
        denied: Denied | None = self.authenticator.check(request.authorization, request.api_key, roles)
        if denied is not None:
            raise _Reject(
                denied.status, denied.code, denied.message, [CHALLENGE] if denied.status == 401 else []
            )

    def _check_declared_body(self, request: _Request) -> None:
        """What can be refused about the body before reading it: its encoding and its declared size."""
        if request.encoding is not None and request.encoding not in (b"identity",):
            raise _Reject(415, "unsupported_encoding", "compressed request bodies are not accepted")
        declared = _int_header(request.content_length, "Content-Length")
        if declared is not None and declared > self.max_body_bytes:
            raise _Reject(
                413, "too_large", f"the body has {declared} bytes; at most {self.max_body_bytes} are accepted"
            )

    def _check_body(self, body: bytes) -> None:
        if len(body) > self.max_body_bytes:
            raise _Reject(413, "too_large", f"the body has more than {self.max_body_bytes} bytes")

    async def _read(self, receive: Receive) -> bytes:
        """The body from an ASGI server; reading stops once it exceeds the limit (the step answers 413)."""
        limit = self.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
            if size > limit or not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _v1_failure(failure: ScoringFailure) -> Reply:
    return failure.status, _error(failure.code, failure.message, failure.violations), _headers(failure)


def _oip_failure(failure: ScoringFailure) -> Reply:
    return failure.status, _oip_error(failure.message, failure.violations), _headers(failure)


def _headers(failure: ScoringFailure) -> list[tuple[bytes, bytes]]:
    return [JSON_TYPE, *failure.headers] if isinstance(failure, _Reject) else JSON_HEADERS


def result_rows(
    name: str, scored: Scored, instances: Sequence[Any], *, explain: bool = False
) -> list[dict[str, Any]]:
    """One JSON-ready result per instance, in request order; with ``explain``, each has its
    ``explanation`` (every feature's attribution) or the ``explanation_error`` saying why there is none."""
    request_ids = scored.request_ids
    rows: list[dict[str, Any]] = [None] * len(instances)  # type: ignore[list-item]
    for part in scored.parts:
        model, route, out = part.model, part.route, part.outputs
        version, keys, entity_field = model.version, model.class_keys, model.reader.entity_field
        predictions, scores, probabilities = out.predictions, out.scores, out.probabilities
        threshold = model.threshold
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
            if threshold is not None:
                row["threshold"] = threshold
            entity = instances[index].get(entity_field)
            if entity is not None:
                row["entity_id"] = entity
            if explain:
                explanations = part.explanations
                if explanations is not None:
                    row["explanation"] = explanations[position].as_dict()
                else:
                    row["explanation_error"] = part.explain_error or model.explain_error
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
