"""The shared identity pieces without a database: the FastAPI dependency, reload on an unknown key, and
dashboard sessions bound to a key (signature, expiry, revocation)."""

from __future__ import annotations

from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI

from tests.auth_support import header, memory_keys
from tollgate_core.apikeys import KeyVerifier, Principal, key_hash
from tollgate_core.auth import READERS, install_keys, require
from tollgate_core.sessions import COOKIE, KeySessions


def app_with(verifier: KeyVerifier, sessions: KeySessions | None = None) -> FastAPI:
    app = FastAPI()
    install_keys(app, verifier)
    if sessions is not None:
        app.state.sessions = sessions

    @app.get("/read")
    async def read(who: Annotated[Principal, Depends(require("read", READERS))]) -> dict[str, str]:
        return {"who": who.name}

    return app


async def test_statuses_and_the_principal() -> None:
    verifier, keys = memory_keys(vera=("viewer",), pete=("producer",), multi=("producer", "auditor"))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app_with(verifier)), base_url="http://t"
    ) as c:
        assert (await c.get("/read")).status_code == 401
        assert (await c.get("/read", headers={"x-api-key": "tgk_wrong"})).status_code == 401
        denied = await c.get("/read", headers=header(keys["pete"]))
        assert denied.status_code == 403 and "principal 'pete' (roles: producer) may not read" in denied.text
        assert (await c.get("/read", headers=header(keys["vera"]))).json() == {"who": "vera"}
        bearer = await c.get("/read", headers={"authorization": f"Bearer {keys['multi']}"})
        assert bearer.json() == {"who": "multi"}  # any one of a key's roles is enough


def test_unknown_roles_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown roles"):
        require("x", "admin")


async def test_a_new_key_works_at_once_and_misses_are_rate_limited() -> None:
    active: dict[str, Principal] = {}
    loads = 0

    async def load() -> dict[str, Principal]:
        nonlocal loads
        loads += 1
        return dict(active)

    verifier = KeyVerifier(load, miss_reload_s=3600)
    await verifier.refresh()
    active[key_hash("tgk_new")] = Principal("new", frozenset({"viewer"}))
    verifier._miss_reload_at -= 7200  # no miss reloaded lately: a miss reloads once
    assert await verifier.verify_or_reload("tgk_new") == Principal("new", frozenset({"viewer"}))
    assert loads == 2
    for _ in range(5):  # unknown keys within miss_reload_s: no further loads
        assert await verifier.verify_or_reload("tgk_guess") is None
    assert loads == 2


async def test_a_key_created_just_after_a_scheduled_load_works_at_once() -> None:
    """A scheduled or start-up load a moment ago must not make a key created since then wait for the next one
    (a service that had just started refused a new key with 401 for up to ``miss_reload_s``)."""
    active: dict[str, Principal] = {}

    async def load() -> dict[str, Principal]:
        return dict(active)

    verifier = KeyVerifier(load, miss_reload_s=3600)
    await verifier.refresh()  # the start-up load, just now
    active[key_hash("tgk_fresh")] = Principal("fresh", frozenset({"viewer"}))
    assert await verifier.verify_or_reload("tgk_fresh") == Principal("fresh", frozenset({"viewer"}))


def test_sessions_signed_expiring_and_bound_to_an_active_key() -> None:
    verifier, keys = memory_keys(vera=("viewer",))
    now = [1_000_000.0]
    sessions = KeySessions(b"s" * 32, ttl_s=60, clock=lambda: now[0])
    cookie = sessions.issue(keys["vera"])
    assert keys["vera"] not in cookie

    class Req:
        def __init__(self, value: str) -> None:
            self.cookies = {COOKIE: value}

    assert sessions.principal(Req(cookie), verifier) == Principal("vera", frozenset({"viewer"}))  # type: ignore[arg-type]
    digest, expiry, signature = cookie.split(".")
    forged = f"{digest}.{int(expiry) + 3600}.{signature}"
    assert sessions.principal(Req(forged), verifier) is None  # type: ignore[arg-type]
    other = KeySessions(b"o" * 32, ttl_s=60, clock=lambda: now[0])
    assert other.principal(Req(cookie), verifier) is None  # type: ignore[arg-type]
    now[0] += 61
    assert sessions.principal(Req(cookie), verifier) is None  # type: ignore[arg-type]
    now[0] -= 61
    verifier._active = {}  # the key was revoked
    assert sessions.principal(Req(cookie), verifier) is None  # type: ignore[arg-type]
