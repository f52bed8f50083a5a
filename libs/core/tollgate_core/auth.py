"""Identity on every HTTP API: who is calling, and may they do this?

Every route except ``/healthz`` and ``/readyz`` declares the roles allowed to call it with
``Depends(require(action, *roles))``. The dependency reads the API key from ``X-API-Key`` or
``Authorization: Bearer`` (or, on services that offer a login, a session cookie: :mod:`tollgate_core.sessions`)
and answers

* 401 when no key was sent or the key is unknown, revoked or rotated away (with ``WWW-Authenticate``);
* 403 when the key's roles are not among the allowed ones; the message names the action and the roles;
* otherwise it returns the :class:`~tollgate_core.apikeys.Principal`, whose name is the actor of anything
  the request records. No request field can set the actor.

The keys come from ``app.state.keys`` (a :class:`~tollgate_core.apikeys.KeyVerifier`, set by
``create_http_app(keys=...)``). ``/metrics`` needs the ``operator`` role (Prometheus sends the key with
``authorization: {credentials: tgk_...}`` in its scrape config).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Protocol

import asyncpg
from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from tollgate_core.apikeys import (
    APPROVER,
    AUDITOR,
    COMPLIANCE_READER,
    DATA_SCIENTIST,
    OPERATOR,
    ROLES,
    VIEWER,
    KeyVerifier,
    Principal,
    ensure_schema,
)

# Read-only APIs and dashboards: every role that looks at the platform rather than feeding it.
READERS = frozenset({VIEWER, DATA_SCIENTIST, APPROVER, OPERATOR, AUDITOR, COMPLIANCE_READER})
METRICS_ROLES = frozenset({OPERATOR})
# With authentication switched off (the scorer's explicit development switch), requests act as this.
ANONYMOUS = Principal("anonymous", frozenset(ROLES))


class SessionLookup(Protocol):
    """A service's login sessions (``app.state.sessions``): the principal of the request's session cookie."""

    def principal(self, request: Request, keys: KeyVerifier) -> Principal | None: ...


api_key_header = APIKeyHeader(
    name="X-API-Key", scheme_name="apiKey", auto_error=False, description="API key (tgk_...)."
)
bearer_header = HTTPBearer(
    scheme_name="bearer", auto_error=False, description="The API key as a bearer token."
)
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="tollgate"'}


async def key_verifier(pool: asyncpg.Pool, *, refresh_s: float = 30.0) -> KeyVerifier:
    """The API keys of ``pool``'s database, loaded once (the table is created if missing)."""
    await ensure_schema(pool)
    verifier = KeyVerifier.from_pool(pool, refresh_s=refresh_s)
    await verifier.refresh()
    return verifier


async def authenticate(request: Request, presented: str | None) -> Principal:
    """The principal behind the request's key or session, else 401."""
    keys: KeyVerifier | None = getattr(request.app.state, "keys", None)
    if keys is None:
        if getattr(request.app.state, "auth_disabled", False):
            return ANONYMOUS
        raise HTTPException(503, "API keys are not loaded yet")
    if presented:
        who = await keys.verify_or_reload(presented)
        if who is None:
            raise HTTPException(401, "invalid, revoked or rotated API key", headers=CHALLENGE)
        return who
    sessions: SessionLookup | None = getattr(request.app.state, "sessions", None)
    if sessions is not None:
        who = sessions.principal(request, keys)
        if who is not None:
            return who
    raise HTTPException(
        401,
        "an API key is required: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'",
        headers=CHALLENGE,
    )


def authorize(who: Principal, action: str, allowed: frozenset[str]) -> Principal:
    if not who.has_any(allowed):
        raise HTTPException(
            403,
            f"principal {who.name!r} (roles: {who.role_list or 'none'}) may not {action}; "
            f"this needs one of: {', '.join(sorted(allowed))}",
        )
    return who


def require(action: str, *roles: str | frozenset[str]) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency: the caller's principal if one of its roles is in ``roles``, else 401/403."""
    allowed = frozenset(r for group in roles for r in ((group,) if isinstance(group, str) else group))
    unknown = allowed - set(ROLES)
    if unknown or not allowed:
        raise ValueError(f"{action}: unknown roles {sorted(unknown)} (roles are {', '.join(ROLES)})")

    async def principal(
        request: Request,
        api_key: Annotated[str | None, Depends(api_key_header)],
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_header)],
    ) -> Principal:
        who = authorize(
            await authenticate(request, api_key or (bearer.credentials if bearer is not None else None)),
            action,
            allowed,
        )
        request.state.principal = who
        return who

    principal.allowed = allowed  # type: ignore[attr-defined]  # read by the role matrix tests
    return principal


def install_keys(app: Any, keys: KeyVerifier | None, *, required: bool = True) -> None:
    """Give ``app`` its keys; ``required=False`` (development only) lets every request through as
    :data:`ANONYMOUS`."""
    app.state.keys = keys
    app.state.auth_disabled = not required and keys is None
