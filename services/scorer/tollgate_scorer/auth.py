"""API-key checks for the scoring routes: a header lookup and a dict lookup (see ``tollgate_core.apikeys``).

Scoring (``/v1/models/{m}/score``, OIP ``infer``) needs the ``scorer-client`` role; a model's OIP metadata
may also be read by the read-only roles (``tollgate_core.auth.READERS``). The operations routes (``/metrics``,
OpenAPI) are the shared FastAPI app's, checked by ``tollgate_core.auth``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tollgate_core.apikeys import SCORER_CLIENT, KeyVerifier
from tollgate_core.auth import READERS

SCORING_ROLES = frozenset({SCORER_CLIENT})
METADATA_ROLES = SCORING_ROLES | READERS
CHALLENGE = (b"www-authenticate", b'Bearer realm="tollgate", charset="UTF-8"')


@dataclass(frozen=True, slots=True)
class Denied:
    status: int  # 401 or 403
    code: str
    message: str


MISSING = Denied(
    401, "unauthenticated", "missing API key: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
)
INVALID = Denied(401, "unauthenticated", "invalid, revoked or rotated API key")
MALFORMED = Denied(401, "unauthenticated", "the Authorization header must be 'Bearer <key>'")


class Authenticator:
    def __init__(self, verifier: KeyVerifier, roles: Iterable[str] = SCORING_ROLES) -> None:
        self._verifier = verifier
        self._roles = frozenset(roles)

    def check(
        self, authorization: bytes | None, api_key: bytes | None, roles: frozenset[str] | None = None
    ) -> Denied | None:
        """None when the request may proceed (the key has one of ``roles``, default the scoring roles),
        else why not."""
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
        allowed = self._roles if roles is None else roles
        if principal.roles.isdisjoint(allowed):
            return Denied(
                403,
                "forbidden",
                f"API key {principal.name!r} has roles {principal.role_list}; "
                f"this needs one of: {', '.join(sorted(allowed))}",
            )
        return None
