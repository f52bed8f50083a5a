"""Every role by every endpoint of every service, against the running services.

All seven services run as processes; for each, the operations its own OpenAPI document lists must be
exactly those written out below (a new endpoint without an entry here fails), and each is called with a
key of every role, with no key and with an unknown key:

* no key or an unknown key → 401 (the dashboard sends a browser to its sign-in form instead: 303);
* a key whose role is not allowed → 403;
* a key whose role is allowed → anything but 401/403 (the requests carry empty bodies, so an allowed
  change is refused by validation, 4xx, and nothing changes).

The table is written out, not derived from the services, so a change to either shows up here.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.auth_support import RoleKeys
from tests.conftest import wait_http_ok
from tollgate_core.apikeys import ROLES

OPEN = "open"
READ = frozenset({"viewer", "data-scientist", "approver", "operator", "auditor", "compliance-reader"})
OPS = {"GET /healthz": OPEN, "GET /readyz": OPEN, "GET /metrics": {"operator"}}
AUDIT_QUERY = {"compliance-reader", "auditor", "operator"}
AUDIT_VERIFY = {"auditor", "operator"}

EXPECTED: dict[str, dict[str, Any]] = {
    "ingest": {
        **OPS,
        "POST /v1/events": {"producer"},
        "POST /v1/events/upload": {"producer"},
    },
    "validator": {**OPS, "GET /v1/contracts": READ},
    "trainer": {
        **OPS,
        "GET /v1/runs": READ,
        "GET /v1/models": READ,
        "POST /v1/models/{model}/train": {"data-scientist"},
        "POST /v1/models/{model}/submissions": {"data-scientist"},
    },
    "registry": {
        **OPS,
        "GET /v1/models": READ,
        "GET /v1/models/{model}": READ,
        "GET /v1/models/{model}/versions": READ,
        "GET /v1/models/{model}/versions/{version}": READ,
        "GET /v1/models/{model}/compare": READ,
        "GET /v1/models/{model}/production": READ,
        "POST /v1/models/{model}/versions/{version}/promote": {"approver"},
        "POST /v1/models/{model}/versions/{version}/approve": {"approver"},
        "POST /v1/models/{model}/versions/{version}/reject": {"approver"},
        "POST /v1/models/{model}/rollback": {"approver", "operator"},
        "GET /v1/contracts": READ,
        "POST /v1/contracts": {"data-scientist"},
        "POST /v1/models": {"data-scientist"},
    },
    "monitor": {
        **OPS,
        "GET /": READ,
        "GET /dashboard": READ,
        "GET /login": OPEN,
        "POST /login": OPEN,
        "POST /logout": OPEN,
        "GET /v1/models": READ,
        "GET /v1/models/{model}/drift": READ,
        "GET /v1/models/{model}/performance": READ,
        "GET /v1/alerts": READ,
    },
    "audit-log": {
        **OPS,
        "GET /v1/audit/events": AUDIT_QUERY,
        "GET /v1/audit/events/{event_id}": AUDIT_QUERY,
        "GET /v1/audit/export": AUDIT_QUERY,
        "GET /v1/audit/lineage/{request_id}": AUDIT_QUERY,
        "GET /v1/audit/streams": AUDIT_QUERY,
        "GET /v1/audit/verify": AUDIT_VERIFY,
        "GET /v1/audit/checkpoints": AUDIT_VERIFY,
        "POST /v1/audit/checkpoints": AUDIT_VERIFY,
        "GET /v1/audit/events/{event_id}/proof": AUDIT_VERIFY,
        "POST /v1/audit/streams/{stream}/acknowledge": {"auditor"},
        "GET /v1/audit/proof": {"compliance-reader", "auditor"},
        "GET /v1/dlq": {"auditor", "operator"},
        "GET /v1/dlq/{service}": {"auditor", "operator"},
        "GET /v1/dlq/{service}/{partition}/{offset}": {"auditor", "operator"},
        "POST /v1/dlq/{service}/redrive": {"operator"},
    },
    "scorer": {
        **OPS,
        "POST /v1/models/{name}/score": {"scorer-client"},
        "GET /v2": OPEN,
        "GET /v2/health/live": OPEN,
        "GET /v2/health/ready": OPEN,
        "GET /v2/models/{name}": READ | {"scorer-client"},
        "GET /v2/models/{name}/ready": OPEN,
        "POST /v2/models/{name}/infer": {"scorer-client"},
        "GET /v2/models/{name}/versions/{version}": READ | {"scorer-client"},
        "GET /v2/models/{name}/versions/{version}/ready": OPEN,
        "POST /v2/models/{name}/versions/{version}/infer": {"scorer-client"},
    },
}
# A browser without a session asking for the dashboard is sent to the sign-in form.
UNAUTHENTICATED = {("monitor", "GET /"): 303, ("monitor", "GET /dashboard"): 303}
PATH_VALUES = {
    "model": "credit-default-risk",
    "name": "credit-default-risk",
    "version": "1",
    "event_id": str(uuid.uuid4()),
    "request_id": "no-such-request",
    "stream": "lifecycle",
    "service": "validator",
    "partition": "0",
    "offset": "0",
}
CALLERS = [*ROLES, "no key", "unknown key"]


def operations(document: dict[str, Any]) -> set[str]:
    return {
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }


async def start_all(services: Any, tmp_path: Path) -> dict[str, str]:
    shared = {"TOLLGATE_ARTIFACT_DIR": str(tmp_path / "artifacts")}
    procs = {
        "ingest": services("ingest", env_extra=shared),
        "validator": services("validator", env_extra=shared),
        "trainer": services("trainer", env_extra=shared),
        "registry": services("registry", env_extra=shared),
        "monitor": services("monitor", env_extra=shared),
        "audit-log": services(
            "audit-log",
            env_extra={**shared, "TOLLGATE_AUDIT_LOG_SIGNING_KEY_PATH": str(tmp_path / "ed25519.pem")},
        ),
        "scorer": services(
            "scorer", env_extra=shared, log_spool_dir=str(tmp_path / "spool"), auth_required="true"
        ),
    }
    bases = {name: f"http://127.0.0.1:{proc.port}" for name, proc in procs.items()}
    await asyncio.gather(
        *(wait_http_ok(f"{bases[name]}/healthz", timeout=300, proc=proc) for name, proc in procs.items())
    )
    return bases


def credentials(caller: str, keys: RoleKeys) -> dict[str, str]:
    if caller == "no key":
        return {}
    if caller == "unknown key":
        return {"X-API-Key": "tgk_" + "u" * 43}
    return {"X-API-Key": keys[caller]}


async def test_every_role_on_every_endpoint_of_every_service(
    services: Any, api_keys: RoleKeys, tmp_path: Path
) -> None:
    bases = await start_all(services, tmp_path)
    failures: list[str] = []
    calls = 0
    async with httpx.AsyncClient(timeout=60, follow_redirects=False) as client:
        for service, expected in EXPECTED.items():
            document = (await client.get(f"{bases[service]}/openapi.json")).json()
            listed = operations(document)
            assert listed == set(expected), (
                f"{service}: endpoints not in the table {sorted(listed - set(expected))}, "
                f"in the table but not served {sorted(set(expected) - listed)}"
            )
            for operation, allowed in expected.items():
                method, template = operation.split(" ", 1)
                url = bases[service] + template.format(**PATH_VALUES)
                for caller in CALLERS:
                    kwargs: dict[str, Any] = {"headers": credentials(caller, api_keys)}
                    if method == "POST":
                        kwargs["content"] = b"{}"
                        kwargs["headers"]["content-type"] = "application/json"
                    response = await client.request(method, url, **kwargs)
                    calls += 1
                    got = response.status_code
                    if allowed == OPEN:
                        ok = got not in (401, 403)
                        want = "not 401/403"
                    elif caller in ("no key", "unknown key"):
                        want_code = UNAUTHENTICATED.get((service, operation), 401)
                        ok, want = got == want_code, str(want_code)
                    elif caller in allowed:
                        ok, want = got not in (401, 403) and got < 500, "allowed (not 401/403/5xx)"
                    else:
                        ok, want = got == 403, "403"
                    if not ok:
                        failures.append(f"{service} {operation} as {caller}: {got} (want {want})")
    assert not failures, f"{len(failures)} of {calls} calls wrong:\n" + "\n".join(failures)
    assert calls == sum(len(e) for e in EXPECTED.values()) * len(CALLERS)


pytestmark = pytest.mark.timeout(900)
