"""``tollgate keys``: the one key command, against the real PostgreSQL (create, list, rotate, revoke)."""

from __future__ import annotations

import asyncio
import sys
import uuid

import asyncpg

from tollgate_core.apikeys import KeyVerifier, active_keys, key_hash


async def tollgate(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tollgate_registry.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_create_list_rotate_revoke(database_url: str) -> None:
    name = f"risk-desk-{uuid.uuid4().hex[:6]}"
    code, out, err = await tollgate("keys", "create", name, "approver", "viewer", "--dsn", database_url)
    assert code == 0, err
    key = out.strip()
    assert key.startswith("tgk_") and "\n" not in key and "shown once" in err
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        row = await pool.fetchrow("SELECT roles, key_hash FROM api_keys WHERE name = $1", name)
        assert row["roles"] == ["approver", "viewer"] and row["key_hash"] == key_hash(key)  # only the hash
        verifier = KeyVerifier(lambda: active_keys(pool))
        await verifier.refresh()
        who = verifier.verify(key)
        assert who is not None and who.name == name and who.roles == {"approver", "viewer"}

        code, out, _ = await tollgate("keys", "list", "--dsn", database_url)
        assert code == 0 and name in out and "approver,viewer" in out and key not in out

        code, _, err = await tollgate("keys", "create", name, "viewer", "--dsn", database_url)
        assert code == 2 and "exists already" in err
        code, _, err = await tollgate("keys", "create", f"x-{name}", "admin", "--dsn", database_url)
        assert code == 2 and "unknown role 'admin'" in err
        code, _, err = await tollgate("keys", "create", "bad name\x07", "viewer", "--dsn", database_url)
        assert code == 2 and "invalid key name" in err

        code, out, err = await tollgate("keys", "rotate", name, "--dsn", database_url)
        assert code == 0, err
        rotated = out.strip()
        await verifier.refresh()
        assert verifier.verify(key) is None
        again = verifier.verify(rotated)
        assert again is not None and again.name == name and again.roles == who.roles

        code, _, err = await tollgate("keys", "revoke", name, "--dsn", database_url)
        assert code == 0, err
        await verifier.refresh()
        assert verifier.verify(rotated) is None
        code, _, err = await tollgate("keys", "revoke", name, "--dsn", database_url)
        assert code == 1 and "no active key" in err
        # A revoked key's name may be given to a new key.
        code, _, err = await tollgate("keys", "create", name, "viewer", "--dsn", database_url)
        assert code == 0, err
    finally:
        await pool.close()
