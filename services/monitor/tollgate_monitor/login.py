"""The dashboard's login: ``GET /login`` shows a form, ``POST /login`` exchanges an API key with a read-only
role for a session cookie (``tollgate_core.sessions``) and sends the browser to the dashboard; ``POST
/logout`` ends the session. The key travels once, in a POST body, never in a URL."""

from __future__ import annotations

import html
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tollgate_core.apikeys import KeyVerifier
from tollgate_core.auth import READERS
from tollgate_core.sessions import KeySessions

MAX_FORM_BYTES = 4096
MAX_FORM_FIELDS = 4

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tollgate monitor: sign in</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #f6f7f9; margin: 0; }}
form {{ max-width: 26rem; margin: 12vh auto; background: #fff; padding: 2rem; border-radius: 8px;
        box-shadow: 0 1px 4px rgba(0,0,0,.12); }}
input {{ width: 100%; box-sizing: border-box; padding: .5rem; font-family: monospace; margin: .5rem 0 1rem; }}
button {{ padding: .5rem 1.2rem; }}
.error {{ color: #b00020; }}
</style></head>
<body><form method="post" action="/login">
<h1>tollgate monitor</h1>
<p>Sign in with an API key (role viewer, or any read-only role).</p>
{error}
<label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="off" required>
<button type="submit">Sign in</button>
</form></body></html>
"""


def login_page(error: str | None = None, status_code: int = 200) -> HTMLResponse:
    shown = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    return HTMLResponse(_PAGE.format(error=shown), status_code=status_code)


async def _form_key(request: Request) -> str | None:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    # More than a few fields is not the sign-in form: parse_qs raises ValueError, answered as a 400.
    values = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=MAX_FORM_FIELDS)
    found = values.get("key", [])
    return found[0].strip() if found else None


def login_router(keys: KeyVerifier | None, sessions: KeySessions) -> APIRouter:
    router = APIRouter(tags=["dashboard"])

    @router.get("/login", response_class=HTMLResponse, summary="The dashboard's sign-in form")
    async def login_form() -> HTMLResponse:
        return login_page()

    @router.post(
        "/login",
        response_class=HTMLResponse,
        status_code=303,
        summary="Exchange an API key (form field 'key') for a session cookie",
        responses={
            303: {"description": "Signed in: the session cookie is set, on to the dashboard"},
            400: {"description": "No key in the form: the form again", "content": {"text/html": {}}},
            401: {"description": "Invalid, revoked or rotated key"},
            403: {"description": "The key has no read-only role"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "properties": {"key": {"type": "string", "maxLength": 200}},
                            "required": ["key"],
                        }
                    }
                },
            }
        },
    )
    async def login(request: Request) -> Response:
        try:
            key = await _form_key(request)
        except ValueError:
            return login_page(
                f"The form has more fields than the sign-in form sends ({MAX_FORM_FIELDS}).", 400
            )
        if not key:
            return login_page("Enter an API key.", 400)
        who = await keys.verify_or_reload(key) if keys is not None else None
        if who is None:
            return login_page("Invalid, revoked or rotated API key.", 401)
        if not who.has_any(READERS):
            return login_page(
                f"The key {who.name!r} has no read-only role (needs one of: {', '.join(sorted(READERS))}).",
                403,
            )
        response = RedirectResponse("/dashboard", status_code=303)
        sessions.set_cookie(response, key)
        return response

    @router.post(
        "/logout",
        status_code=303,
        response_class=Response,
        summary="End the dashboard session",
        responses={303: {"description": "Signed out: the session cookie is cleared, on to the sign-in form"}},
    )
    async def logout() -> Response:
        response = RedirectResponse("/login", status_code=303)
        sessions.clear_cookie(response)
        return response

    return router
