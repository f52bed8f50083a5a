"""The HTTP surface every service shares: ``/healthz``, ``/readyz``, ``/metrics`` (and FastAPI's OpenAPI).

``/healthz`` and ``/readyz`` are open (probes carry no key); ``/metrics`` needs an API key with the
``operator`` role, like every other route needs one of its own roles (:mod:`tollgate_core.auth`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from tollgate_core.apikeys import KeyVerifier, Principal
from tollgate_core.auth import METRICS_ROLES, install_keys, require
from tollgate_core.limits import BodyLimits, RequestLimitMiddleware

# A check raises when its dependency is not usable; it may return a short text to report instead of "ok"
# (e.g. a degraded but working state).
ReadinessCheck = Callable[[], Awaitable[object]]


def _readiness_gauge(registry: CollectorRegistry) -> Gauge:
    """The registry's readiness gauge, made on first use (an app may build its HTTP surface twice)."""
    existing = registry._names_to_collectors.get("tollgate_readiness_check")
    if isinstance(existing, Gauge):
        return existing
    return Gauge(
        "tollgate_readiness_check",
        "1 if the readiness check passed at the last /readyz, 0 if it failed",
        ["check"],
        registry=registry,
    )


def ops_router(registry: CollectorRegistry, checks: Mapping[str, ReadinessCheck]) -> APIRouter:
    router = APIRouter(tags=["operations"])
    # The outcome of each readiness check at the last /readyz (Kubernetes probes it every few seconds), so
    # an alert sees a dependency that stays unreachable.
    check_ok = _readiness_gauge(registry)

    @router.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Every dependency (Kafka, PostgreSQL, ...) is reachable",
        responses={503: {"description": "A dependency is not reachable"}},
    )
    async def readyz() -> JSONResponse:
        results: dict[str, str] = {}
        ready = True
        for name, check in checks.items():
            try:
                detail = await asyncio.wait_for(check(), timeout=3)
                results[name] = detail if isinstance(detail, str) else "ok"
                check_ok.labels(name).set(1)
            except Exception as exc:  # any failure means not ready; the reason is reported
                ready = False
                results[name] = f"error: {type(exc).__name__}: {exc}"[:300]
                check_ok.labels(name).set(0)
        body: dict[str, Any] = {"status": "ready" if ready else "not ready", "checks": results}
        return JSONResponse(body, status_code=200 if ready else 503)

    @router.get("/metrics", summary="Prometheus metrics (role operator)", response_class=Response)
    async def metrics(
        _: Annotated[Principal, Depends(require("read metrics", METRICS_ROLES))],
    ) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


ERROR_SCHEMA: dict[str, Any] = {
    "title": "ErrorDetail",
    "type": "object",
    "properties": {"detail": {"type": "string", "title": "Detail"}},
    "required": ["detail"],
}
# What every route can answer, whatever it does: the request limits (``tollgate_core.limits``) see every
# request before any route, and the auth dependency (``tollgate_core.auth``) guards every route that has a
# security requirement.
LIMIT_RESPONSES = {
    "400": "A NUL byte in the path or the query string, or a JSON body nested too deeply",
    "413": "The request body is larger than the service accepts",
}
AUTH_RESPONSES = {
    "401": "No API key (or session), or an unknown, revoked or rotated key",
    "403": "The key's roles do not allow this operation; the message names the roles that do",
}


def error_response(description: str) -> dict[str, Any]:
    """An entry of a route's ``responses``: an answer whose body is ``{"detail": "..."}``."""
    return {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA}}}


def declare_error_responses(document: dict[str, Any]) -> dict[str, Any]:
    """Add the answers of the shared layers to every operation of ``document`` that does not declare them
    itself, so a response is checked against what the document says (the fuzz test's conformance)."""
    for item in document.get("paths", {}).values():
        for method, operation in item.items():
            if method not in ("get", "put", "post", "delete", "patch", "head", "options"):
                continue
            responses = operation.setdefault("responses", {})
            shared = dict(LIMIT_RESPONSES)
            if operation.get("security"):
                shared.update(AUTH_RESPONSES)
            for status, description in shared.items():
                responses.setdefault(status, error_response(description))
    return document


def _with_error_responses(app: FastAPI) -> Callable[[], dict[str, Any]]:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = declare_error_responses(generate())
        return app.openapi_schema

    return openapi


def invalid(location: str, name: str, message: str) -> HTTPException:
    """A 422 for a parameter that parsed but is not acceptable, shaped like FastAPI's own validation
    errors: that is the shape the OpenAPI documents declare for every 422 (``HTTPValidationError``)."""
    return HTTPException(422, [{"loc": [location, name], "msg": message, "type": "value_error"}])


def create_http_app(
    *,
    title: str,
    version: str,
    description: str,
    registry: CollectorRegistry,
    checks: Mapping[str, ReadinessCheck],
    keys: KeyVerifier | None,
    auth_required: bool = True,
    lifespan: Any = None,
    limits: BodyLimits | None = None,
) -> FastAPI:
    """A service's FastAPI app with the shared routes. ``keys`` checks every API key; while the app runs,
    they are reloaded every ``keys.refresh_s`` (so revocations take effect). ``auth_required=False`` is a
    development switch that lets requests through without a key. Request bodies are limited by ``limits``
    (a service passes its settings' ``body_limits()``; without it, the defaults of :class:`BodyLimits`)."""

    @contextlib.asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        refresher = asyncio.create_task(keys.run(), name="api-key-refresh") if keys is not None else None
        try:
            if lifespan is not None:
                async with lifespan(app):
                    yield
            else:
                yield
        finally:
            if refresher is not None:
                refresher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await refresher

    app = FastAPI(title=title, version=version, description=description, lifespan=run)
    app.add_middleware(RequestLimitMiddleware, limits=limits or BodyLimits())
    install_keys(app, keys, required=auth_required)
    app.include_router(ops_router(registry, checks))
    app.openapi = _with_error_responses(app)  # type: ignore[method-assign]
    return app
