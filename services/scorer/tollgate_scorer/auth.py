"""API-key checks for the scoring routes: a header lookup and a dict lookup (see ``tollgate_core.apikeys``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tollgate_core.apikeys import KeyVerifier

SCORING_ROLES = frozenset({"scorer-client", "operator"})
CHALLENGE = (b"www-authenticate", b'Bearer realm="tollgate", charset="UTF-8"')


@dataclass(frozen=True, slots=True)
class Denied:
    status: int  # 401 or 403
    code: str
    message: str


MISSING = Denied(
    401, "unauthenticated", "missing API key: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
)
INVALID = Denied(401, "unauthenticated", "invalid or revoked API key")
MALFORMED = Denied(401, "unauthenticated", "the Authorization header must be 'Bearer <key>'")


class Authenticator:
    def __init__(self, verifier: KeyVerifier, roles: Iterable[str] = SCORING_ROLES) -> None:
        self._verifier = verifier
        self._roles = frozenset(roles)
        self._shown = ", ".join(sorted(self._roles))

    def check(self, authorization: bytes | None, api_key: bytes | None) -> Denied | None:
        """None when the request may proceed, else why not."""
        if api_key is not None:
            key = api_key
        elif authorization is not None:
            if authorization[:7].lower() != b"bearer ":
                return MALFORMED
            key = authorization[7:].strip()
        else:
            return MISSING
        principal = self._verifier.verify(key.decode("latin-1"))
        if principal is None:
            return INVALID
        if principal.role not in self._roles:
            return Denied(
                403,
                "forbidden",
                f"API key {principal.name!r} has role {principal.role!r}; this needs one of: {self._shown}",
            )
        return None
