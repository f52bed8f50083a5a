"""HTTP: the dashboard page and the JSON API it is drawn from (plus /healthz, /readyz, /metrics, OpenAPI).

Every route needs a key with a read-only role (``tollgate_core.auth.READERS``: viewer, data-scientist,
approver, operator, auditor, compliance-reader).
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tollgate_core.auth import READERS, require
from tollgate_core.events import utcnow
from tollgate_core.http import create_http_app, error_response
from tollgate_core.sessions import KeySessions
from tollgate_monitor.app import Monitor
from tollgate_monitor.dashboard import ModelView, render_page
from tollgate_monitor.login import login_router
from tollgate_monitor.store import MonitorStore


def shown_version(versions: list[dict[str, Any]]) -> str | None:
    """The version whose windows the dashboard draws: production, else staging, else the newest."""
    for stage in ("production", "staging"):
        found = [v["version"] for v in versions if v["stage"] == stage]
        if found:
            return str(found[-1])
    return str(versions[-1]["version"]) if versions else None


async def model_view(monitor: Monitor, model: str, versions: list[dict[str, Any]]) -> ModelView:
    store = monitor.store
    version = shown_version(versions)
    windows = await store.windows(model, version, monitor.settings.history_windows)
    return ModelView(
        model=model,
        versions=versions,
        windows=windows,
        shown_version=version,
        alerts=await store.alerts(model, 20),
        active=await store.active_alerts(model),
        labels=await store.label_counts(model),
    )


def create_app(monitor: Monitor) -> FastAPI:
    app = create_http_app(
        title="tollgate monitor",
        version="1.0.0",
        description="Drift, performance, staleness and latency of served models; alerts; dashboard.",
        registry=monitor.metrics_registry,
        checks={"kafka": monitor.kafka_ready, "postgres": monitor.db_ready},
        keys=monitor.keys,
        limits=monitor.settings.body_limits(),
    )
    s = monitor.settings
    sessions = KeySessions(
        s.session_secret.get_secret_value().encode() if s.session_secret else None,
        ttl_s=s.session_ttl_seconds,
        secure=s.session_cookie_secure,
    )
    app.state.sessions = sessions
    app.include_router(login_router(monitor.keys, sessions))
    reader = [Depends(require("read the monitor", READERS))]
    read_dashboard = require("read the monitor", READERS)

    def store() -> MonitorStore:
        return monitor.store

    async def known(model: str) -> list[dict[str, Any]]:
        versions: list[dict[str, Any]] = await store().versions(model)
        if not versions:
            raise HTTPException(404, f"unknown model {model!r}")
        return versions

    @app.get(
        "/",
        response_class=HTMLResponse,
        tags=["dashboard"],
        summary="The dashboard (without a session: a redirect to /login)",
        responses={
            303: {"description": "Not signed in: to the sign-in form"},
            403: error_response("The key or session has no read-only role"),
        },
    )
    @app.get(
        "/dashboard",
        response_class=HTMLResponse,
        tags=["dashboard"],
        summary="The dashboard (without a session: a redirect to /login)",
        responses={
            303: {"description": "Not signed in: to the sign-in form"},
            403: error_response("The key or session has no read-only role"),
        },
    )
    async def dashboard(
        request: Request,
        feature: str = Query(
            "", max_length=64, description="Show only features whose name contains this text (heat map)."
        ),
    ) -> Response:
        try:
            await read_dashboard(request, request.headers.get("x-api-key"), None)
        except HTTPException as exc:
            if exc.status_code != 401:
                raise
            return RedirectResponse("/login", status_code=303)
        everything = await store().versions()
        by_model: dict[str, list[dict[str, Any]]] = {}
        for v in everything:
            by_model.setdefault(v["model"], []).append(v)
        views = [await model_view(monitor, m, vs) for m, vs in sorted(by_model.items())]
        return HTMLResponse(render_page(views, utcnow(), feature_filter=feature))

    @app.get(
        "/v1/models",
        tags=["monitoring"],
        summary="Models, their versions and stages, active alerts",
        dependencies=reader,
    )
    async def models() -> list[dict[str, Any]]:
        everything = await store().versions()
        active = await store().active_alerts()
        out: dict[str, dict[str, Any]] = {}
        for v in everything:
            entry = out.setdefault(v["model"], {"model": v["model"], "versions": [], "active_alerts": []})
            entry["versions"].append(v)
        for a in active:
            if a["model"] in out:
                out[a["model"]]["active_alerts"].append(a)
        return list(out.values())

    async def shown_windows(
        model: str, version: str | None, limit: int
    ) -> tuple[str | None, list[dict[str, Any]]]:
        """The asked version (default: the one in service) and its newest ``limit`` windows; 404 for an
        unknown model, whether or not a version is asked for."""
        versions = await known(model)
        chosen = version or shown_version(versions)
        return chosen, await store().windows(model, chosen, limit)

    @app.get(
        "/v1/models/{model}/drift",
        tags=["monitoring"],
        responses={404: error_response("Unknown model")},
        summary="Window reports: drift per feature over time",
        dependencies=reader,
    )
    async def drift(
        model: str, version: str | None = None, limit: int = Query(96, ge=1, le=2000)
    ) -> dict[str, Any]:
        chosen, windows = await shown_windows(model, version, limit)
        return {
            "model": model,
            "version": chosen,
            "windows": [
                {
                    k: w[k]
                    for k in (
                        "start",
                        "end",
                        "rows",
                        "buckets",
                        "features",
                        "prediction",
                        "verdicts",
                        "changes",
                    )
                }
                for w in windows
            ],
        }

    @app.get(
        "/v1/models/{model}/performance",
        tags=["monitoring"],
        responses={404: error_response("Unknown model")},
        summary="Live performance and latency per window, with the joined label counts",
        dependencies=reader,
    )
    async def performance(
        model: str, version: str | None = None, limit: int = Query(96, ge=1, le=2000)
    ) -> dict[str, Any]:
        chosen, windows = await shown_windows(model, version, limit)
        return {
            "model": model,
            "version": chosen,
            "labels": await store().label_counts(model),
            "windows": [
                {
                    "start": w["start"],
                    "end": w["end"],
                    "rows": w["rows"],
                    "performance": w["performance"],
                    "latency": w["latency"],
                }
                for w in windows
            ],
        }

    @app.get("/v1/alerts", tags=["monitoring"], summary="Alert events, newest first", dependencies=reader)
    async def alerts(
        model: str | None = None, active: bool = False, limit: int = Query(100, ge=1, le=1000)
    ) -> list[dict[str, Any]]:
        if active:
            found: list[dict[str, Any]] = await store().active_alerts(model)
            return found
        found = await store().alerts(model, limit)
        return found

    return app
