"""API keys for the platform's HTTP services: shown once, stored hashed, checked in microseconds.

A key is 256 random bits (``tgk_`` + URL-safe base64). Only its sha256 is stored, with a name and a role,
so a copy of the table does not let anyone in. Because keys are random and long, an unsalted sha256 is
enough: there is no dictionary to try.

:class:`KeyVerifier` keeps every active hash in memory (refreshed periodically, so a revoked key stops
working within ``refresh_s``) and checks a presented key with one sha256 and one dict lookup; the results
for the last few thousand presented keys are cached, so a client that repeats its key costs one dict
lookup per request.

Roles used platform-wide: ``scorer-client`` (scoring), ``compliance-reader`` and ``auditor`` (the audit
trail), ``operator`` (everything).

``python -m tollgate_core.apikeys create NAME ROLE`` prints a new key; ``revoke NAME``; ``list``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from tollgate_core.db import migrate

log = logging.getLogger(__name__)

ROLES = ("scorer-client", "compliance-reader", "auditor", "operator")
MIGRATIONS = Path(__file__).parent / "migrations" / "apikeys"
MIGRATION_SERVICE = "apikeys"
KEY_PREFIX = "tgk_"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a valid key belongs to."""

    name: str
    role: str


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str | bytes) -> str:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).hexdigest()


async def ensure_schema(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await migrate(conn, MIGRATION_SERVICE, MIGRATIONS)


async def create_key(pool: asyncpg.Pool, name: str, role: str) -> str:
    """Store a new key for ``name`` with ``role`` and return its plaintext, which is never stored."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    await ensure_schema(pool)
    key = generate_key()
    try:
        await pool.execute(
            "INSERT INTO api_keys (name, role, key_hash) VALUES ($1, $2, $3)", name, role, key_hash(key)
        )
    except asyncpg.UniqueViolationError:
        raise ValueError(
            f"an API key named {name!r} exists already; revoke it or pick another name"
        ) from None
    return key


async def revoke_key(pool: asyncpg.Pool, name: str) -> bool:
    """Revoke the active key called ``name``; False when there is none."""
    await ensure_schema(pool)
    status = await pool.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL", name
    )
    return bool(status.endswith(" 1"))


async def active_keys(pool: asyncpg.Pool) -> dict[str, Principal]:
    """sha256 hex → principal, for every key not revoked."""
    rows = await pool.fetch("SELECT key_hash, name, role FROM api_keys WHERE revoked_at IS NULL")
    return {r["key_hash"]: Principal(r["name"], r["role"]) for r in rows}


_INVALID = Principal("", "")  # cached answer for a key that is not active


class KeyVerifier:
    """Checks presented keys against the active hashes held in memory."""

    def __init__(
        self,
        load: Callable[[], Awaitable[Mapping[str, Principal]]],
        *,
        refresh_s: float = 30.0,
        cache_size: int = 4096,
    ) -> None:
        self._load = load
        self.refresh_s = refresh_s
        self._cache_size = cache_size
        self._active: Mapping[str, Principal] = {}
        self._cache: dict[str, Principal] = {}
        self.loaded = False

    @classmethod
    def from_pool(cls, pool: asyncpg.Pool, **kwargs: Any) -> KeyVerifier:
        return cls(lambda: active_keys(pool), **kwargs)

    async def refresh(self) -> None:
        self._active = dict(await self._load())
        self._cache = {}  # a revoked key must not stay valid through the cache
        self.loaded = True

    async def run(self) -> None:
        """Refresh forever; when the database is unreachable, keep the last known keys and retry."""
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("API keys not refreshed, keeping the last %d: %s", len(self._active), exc)

    def verify(self, presented: str) -> Principal | None:
        """The principal of an active key, else None."""
        cached = self._cache.get(presented)
        if cached is None:
            cached = self._active.get(key_hash(presented), _INVALID)
            if len(self._cache) >= self._cache_size:
                del self._cache[next(iter(self._cache))]  # oldest first
            self._cache[presented] = cached
        return None if cached is _INVALID else cached


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tollgate_core.apikeys", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--database-url", default=os.environ.get("TOLLGATE_DATABASE_URL"))
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create a key and print it (shown only this once)")
    create.add_argument("name")
    create.add_argument("role", choices=ROLES)
    revoke = sub.add_parser("revoke", help="revoke the active key with this name")
    revoke.add_argument("name")
    sub.add_parser("list", help="names, roles and dates of all keys (never the keys)")
    args = parser.parse_args()

    async def run() -> None:
        from tollgate_core.settings import DEFAULT_DATABASE_URL

        pool = await asyncpg.create_pool(args.database_url or DEFAULT_DATABASE_URL, min_size=1, max_size=2)
        try:
            if args.command == "create":
                print(await create_key(pool, args.name, args.role))
            elif args.command == "revoke":
                if not await revoke_key(pool, args.name):
                    raise SystemExit(f"no active key named {args.name!r}")
            else:
                await ensure_schema(pool)
                for row in await pool.fetch(
                    "SELECT name, role, created_at, revoked_at FROM api_keys ORDER BY id"
                ):
                    state = f"revoked {row['revoked_at']:%Y-%m-%d %H:%M}" if row["revoked_at"] else "active"
                    print(
                        f"{row['name']:30} {row['role']:18} created {row['created_at']:%Y-%m-%d %H:%M}  {state}"
                    )
        finally:
            await pool.close()

    asyncio.run(run())


if __name__ == "__main__":
    main()
