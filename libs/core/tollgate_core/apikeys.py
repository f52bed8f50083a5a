"""API keys for the platform's HTTP services: shown once, stored hashed, checked in microseconds.

A key is 256 random bits (``tgk_`` + URL-safe base64). Only its sha256 is stored, with a name (the
principal every recorded action is attributed to) and one or more roles, so a copy of the table does not
let anyone in. Because keys are random and long, an unsalted sha256 is enough: there is no dictionary to try.

:class:`KeyVerifier` keeps every active hash in memory (refreshed periodically, so a revoked or rotated key
stops working within ``refresh_s``) and checks a presented key with one sha256 and one dict lookup; the
results for the last few thousand presented keys are cached, so a client that repeats its key costs one
dict lookup per request.

Roles (what each may do is decided by each service, see ``tollgate_core.auth``): ``producer``,
``scorer-client``, ``data-scientist``, ``approver``, ``operator``, ``auditor``, ``compliance-reader``,
``viewer``.

Keys are managed with ``tollgate keys create NAME ROLE [ROLE...] | list | revoke NAME | rotate NAME``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from tollgate_core.db import migrate

log = logging.getLogger(__name__)

PRODUCER = "producer"
SCORER_CLIENT = "scorer-client"
DATA_SCIENTIST = "data-scientist"
APPROVER = "approver"
OPERATOR = "operator"
AUDITOR = "auditor"
COMPLIANCE_READER = "compliance-reader"
VIEWER = "viewer"
ROLES = (
    PRODUCER,
    SCORER_CLIENT,
    DATA_SCIENTIST,
    APPROVER,
    OPERATOR,
    AUDITOR,
    COMPLIANCE_READER,
    VIEWER,
)
MIGRATIONS = Path(__file__).parent / "migrations" / "apikeys"
MIGRATION_SERVICE = "apikeys"
KEY_PREFIX = "tgk_"
# A key made elsewhere (e.g. kept in a Kubernetes Secret) and imported: at least 256 random bits, as
# generate_key makes them (43 URL-safe base64 characters carry 258 bits).
IMPORTED_KEY_PATTERN = re.compile(r"^tgk_[A-Za-z0-9_-]{43,256}$")
# A key's name is the principal recorded as the actor of what it does: printable, no spaces or controls.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a valid key belongs to: its name and its roles."""

    name: str
    roles: frozenset[str]

    def has_any(self, roles: Iterable[str]) -> bool:
        return not self.roles.isdisjoint(roles)

    @property
    def role_list(self) -> str:
        return ", ".join(sorted(self.roles))


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as ``list`` shows it: never the key itself."""

    name: str
    roles: tuple[str, ...]
    created_at: datetime
    rotated_at: datetime | None
    revoked_at: datetime | None


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str | bytes) -> str:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).hexdigest()


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ValueError(
            f"invalid key name {name!r}: 1-128 characters, letters, digits and . _ @ + - "
            "(it is recorded as the actor of what the key does)"
        )
    return name


def check_roles(roles: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(roles))
    if not chosen:
        raise ValueError(f"a key needs at least one role; roles are {', '.join(ROLES)}")
    unknown = [r for r in chosen if r not in ROLES]
    if unknown:
        raise ValueError(f"unknown role {unknown[0]!r}; roles are {', '.join(ROLES)}")
    return chosen


async def ensure_schema(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await migrate(conn, MIGRATION_SERVICE, MIGRATIONS)


async def create_key(pool: asyncpg.Pool, name: str, *roles: str) -> str:
    """Store a new key for ``name`` with ``roles`` and return its plaintext, which is never stored."""
    check_name(name)
    chosen = check_roles(roles)
    await ensure_schema(pool)
    key = generate_key()
    try:
        await pool.execute(
            "INSERT INTO api_keys (name, roles, key_hash) VALUES ($1, $2, $3)",
            name,
            list(chosen),
            key_hash(key),
        )
    except asyncpg.UniqueViolationError:
        raise ValueError(
            f"an active API key named {name!r} exists already; revoke or rotate it, or pick another name"
        ) from None
    return key


def check_imported_key(key: str) -> str:
    if not IMPORTED_KEY_PATTERN.match(key):
        raise ValueError(
            "an imported key must be 'tgk_' followed by 43 to 256 URL-safe base64 characters (256 random "
            "bits or more), e.g. \"tgk_$(openssl rand -base64 32 | tr '+/' '-_' | tr -d '=')\""
        )
    return key


async def import_key(pool: asyncpg.Pool, name: str, key: str, *roles: str) -> str:
    """Make ``key`` (generated elsewhere, e.g. held in a Kubernetes Secret) the active key of ``name`` with
    ``roles``. Idempotent: ``created`` when ``name`` had no active key, ``unchanged`` when it already has this
    key and these roles, ``updated`` when its key or roles are replaced (the old key stops working like a
    rotated one)."""
    check_name(name)
    chosen = check_roles(roles)
    check_imported_key(key)
    await ensure_schema(pool)
    digest = key_hash(key)
    try:
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT key_hash, roles FROM api_keys WHERE name = $1 AND revoked_at IS NULL FOR UPDATE", name
            )
            if row is None:
                await conn.execute(
                    "INSERT INTO api_keys (name, roles, key_hash) VALUES ($1, $2, $3)",
                    name,
                    list(chosen),
                    digest,
                )
                return "created"
            if row["key_hash"] == digest and list(row["roles"]) == list(chosen):
                return "unchanged"
            await conn.execute(
                "UPDATE api_keys SET key_hash = $2, roles = $3,"
                " rotated_at = CASE WHEN key_hash = $2 THEN rotated_at ELSE now() END"
                " WHERE name = $1 AND revoked_at IS NULL",
                name,
                digest,
                list(chosen),
            )
            return "updated"
    except asyncpg.UniqueViolationError:
        raise ValueError(
            "this key is (or was) stored under another name or was revoked; generate a new one"
        ) from None


async def revoke_key(pool: asyncpg.Pool, name: str) -> bool:
    """Revoke the active key called ``name``; False when there is none."""
    await ensure_schema(pool)
    status = await pool.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL", name
    )
    return bool(status.endswith(" 1"))


async def rotate_key(pool: asyncpg.Pool, name: str) -> str | None:
    """A new key for the active key ``name`` (same principal and roles); the old one stops working.
    None when there is no active key by that name."""
    await ensure_schema(pool)
    key = generate_key()
    status = await pool.execute(
        "UPDATE api_keys SET key_hash = $2, rotated_at = now() WHERE name = $1 AND revoked_at IS NULL",
        name,
        key_hash(key),
    )
    return key if status.endswith(" 1") else None


async def list_keys(pool: asyncpg.Pool) -> list[KeyInfo]:
    await ensure_schema(pool)
    rows = await pool.fetch(
        "SELECT name, roles, created_at, rotated_at, revoked_at FROM api_keys ORDER BY id"
    )
    return [
        KeyInfo(r["name"], tuple(r["roles"]), r["created_at"], r["rotated_at"], r["revoked_at"]) for r in rows
    ]


async def active_keys(pool: asyncpg.Pool) -> dict[str, Principal]:
    """sha256 hex → principal, for every key not revoked."""
    rows = await pool.fetch("SELECT key_hash, name, roles FROM api_keys WHERE revoked_at IS NULL")
    return {r["key_hash"]: Principal(r["name"], frozenset(r["roles"])) for r in rows}


_INVALID = Principal("", frozenset())  # cached answer for a key that is not active


class KeyVerifier:
    """Checks presented keys against the active hashes held in memory."""

    def __init__(
        self,
        load: Callable[[], Awaitable[Mapping[str, Principal]]],
        *,
        refresh_s: float = 30.0,
        cache_size: int = 4096,
        miss_reload_s: float = 2.0,
    ) -> None:
        self._load = load
        self.refresh_s = refresh_s
        self._cache_size = cache_size
        self._active: Mapping[str, Principal] = {}
        self._cache: dict[str, Principal] = {}
        self.loaded = False
        self.miss_reload_s = miss_reload_s
        self._loaded_at = -math.inf
        self._miss_reload_at = -math.inf  # last reload a miss caused; scheduled loads do not count
        self._reloading = asyncio.Lock()

    @classmethod
    def from_pool(cls, pool: asyncpg.Pool, **kwargs: Any) -> KeyVerifier:
        return cls(lambda: active_keys(pool), **kwargs)

    async def refresh(self) -> None:
        self._active = dict(await self._load())
        self._cache = {}  # a revoked key must not stay valid through the cache
        self.loaded = True
        self._loaded_at = time.monotonic()

    async def verify_or_reload(self, presented: str) -> Principal | None:
        """:meth:`verify`; on a miss, reload the keys first unless another miss did so within
        ``miss_reload_s`` (scheduled loads do not count), so a key created a moment ago works at once.
        Unknown keys cost at most one query per ``miss_reload_s``, however many are tried."""
        found = self.verify(presented)
        if found is not None or time.monotonic() - self._miss_reload_at < self.miss_reload_s:
            return found
        async with self._reloading:
            if time.monotonic() - self._miss_reload_at >= self.miss_reload_s:
                self._miss_reload_at = time.monotonic()
                try:
                    await self.refresh()
                except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                    log.warning("API keys not reloaded on a miss: %s", exc)
        return self.verify(presented)

    async def run(self) -> None:
        """Refresh forever; when the database is unreachable, keep the last known keys and retry."""
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("API keys not refreshed, keeping the last %d: %s", len(self._active), exc)

    def by_hash(self, digest: str) -> Principal | None:
        """The principal of the active key whose sha256 is ``digest`` (for sessions bound to a key)."""
        return self._active.get(digest)

    def verify(self, presented: str) -> Principal | None:
        """The principal of an active key, else None."""
        cached = self._cache.get(presented)
        if cached is None:
            cached = self._active.get(key_hash(presented), _INVALID)
            if len(self._cache) >= self._cache_size:
                del self._cache[next(iter(self._cache))]  # oldest first
            self._cache[presented] = cached
        return None if cached is _INVALID else cached
