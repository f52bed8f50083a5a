"""API keys for tests against running services: one key per role, plus one holding every role."""

from __future__ import annotations

import uuid

import asyncpg

from tollgate_core import apikeys

ALL = "all-roles"


class RoleKeys(dict[str, str]):
    """role → key; ``names[role]`` is the key's name, the principal recorded for what it does."""

    def __init__(self) -> None:
        super().__init__()
        self.names: dict[str, str] = {}


async def make_keys(dsn: str, prefix: str = "test") -> RoleKeys:
    """role → a new key with only that role, and :data:`ALL` → a key with every role. Key names are
    ``<prefix>-<role>-<random>``."""
    tag = uuid.uuid4().hex[:6]
    keys = RoleKeys()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        for role, roles in [*((r, (r,)) for r in apikeys.ROLES), (ALL, apikeys.ROLES)]:
            name = f"{prefix}-{role}-{tag}"
            keys[role] = await apikeys.create_key(pool, name, *roles)
            keys.names[role] = name
    finally:
        await pool.close()
    return keys


def header(key: str) -> dict[str, str]:
    return {"x-api-key": key}


def memory_keys(**principals: tuple[str, ...]) -> tuple[apikeys.KeyVerifier, dict[str, str]]:
    """An in-memory verifier for unit tests: ``name=(role, ...)`` → (verifier, name → key)."""

    async def load() -> dict[str, apikeys.Principal]:
        return active

    keys = {name: apikeys.generate_key() for name in principals}
    active = {
        apikeys.key_hash(keys[name]): apikeys.Principal(name, frozenset(roles))
        for name, roles in principals.items()
    }
    verifier = apikeys.KeyVerifier(load)
    verifier._active = active
    verifier.loaded = True
    return verifier, keys
