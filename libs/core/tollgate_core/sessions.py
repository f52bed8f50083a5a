"""Browser sessions for a service with a page to look at (the monitor's dashboard): an API key is exchanged,
once, for an ``HttpOnly``, ``SameSite=Strict`` session cookie.

The cookie holds no key: it is ``<sha256 of the key>.<expiry>.<HMAC-SHA256 of both>``, signed with the
service's session secret. A request with the cookie is the key's principal as long as the signature holds,
the expiry has not passed and the key is still active, so revoking or rotating a key also ends its
sessions (within the services' key refresh). Replicas share sessions when they share the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

from fastapi import Request, Response

from tollgate_core.apikeys import KeyVerifier, Principal, key_hash

COOKIE = "tollgate_session"


class KeySessions:
    """Issues and checks session cookies bound to API keys (``app.state.sessions``)."""

    def __init__(
        self,
        secret: bytes | None = None,
        *,
        ttl_s: float = 8 * 3600,
        secure: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self.ttl_s = ttl_s
        self.secure = secure
        self._clock = clock

    def _sign(self, payload: str) -> str:
        return hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()

    def issue(self, key: str) -> str:
        payload = f"{key_hash(key)}.{int(self._clock() + self.ttl_s)}"
        return f"{payload}.{self._sign(payload)}"

    def set_cookie(self, response: Response, key: str) -> None:
        response.set_cookie(
            COOKIE,
            self.issue(key),
            max_age=int(self.ttl_s),
            path="/",
            httponly=True,
            samesite="strict",
            secure=self.secure,
        )

    @staticmethod
    def clear_cookie(response: Response) -> None:
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")

    def principal(self, request: Request, keys: KeyVerifier) -> Principal | None:
        cookie = request.cookies.get(COOKIE)
        if not cookie or len(cookie) > 200:
            return None
        digest, _, rest = cookie.partition(".")
        expiry, _, signature = rest.partition(".")
        if not expiry.isdigit() or not hmac.compare_digest(signature, self._sign(f"{digest}.{expiry}")):
            return None
        if int(expiry) < self._clock():
            return None
        return keys.by_hash(digest)
