"""The dashboard's sign-in form (``POST /login``) with bad forms: a clear 400, never a 500."""

from __future__ import annotations

from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from tests.auth_support import memory_keys
from tollgate_core.sessions import KeySessions
from tollgate_monitor.login import login_router

VERIFIER, KEYS = memory_keys(vera=("viewer",))


def client() -> AsyncClient:
    app = FastAPI()
    app.include_router(login_router(VERIFIER, KeySessions(b"k" * 32)))
    return AsyncClient(transport=ASGITransport(app=app), base_url="http://monitor")


async def test_a_form_with_more_fields_than_the_sign_in_form_is_a_400() -> None:
    """Regression (found by the OpenAPI fuzz test): five form fields made the form parser raise → 500."""
    async with client() as http:
        form = "&".join(f"f{i}=x" for i in range(5)) + f"&key={KEYS['vera']}"
        answer = await http.post(
            "/login", content=form, headers={"content-type": "application/x-www-form-urlencoded"}
        )
    assert answer.status_code == 400
    assert "more fields" in answer.text


async def test_a_good_key_signs_in_and_a_missing_one_is_a_400() -> None:
    async with client() as http:
        ok = await http.post("/login", data={"key": KEYS["vera"]})
        assert ok.status_code == 303 and ok.headers["location"] == "/dashboard"
        empty = await http.post("/login", data={"other": "x"})
        assert empty.status_code == 400 and "Enter an API key" in empty.text
