"""``tollgate keys``: the one key command, against the real PostgreSQL (create, list, rotate, revoke)."""

from __future__ import annotations

import asyncio
import pathlib
import sys
import uuid

import asyncpg

from tollgate_core.apikeys import KeyVerifier, active_keys, generate_key, key_hash


async def tollgate(*args: str, module: str = "tollgate_cli.main") -> tuple[int, str, str]:
    """``tollgate ARGS``; module="tollgate_cli.keys" runs ``tollgate keys`` as the chart's hook Job does."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
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


async def test_import_makes_a_key_from_a_file_the_active_key_of_a_name(
    database_url: str, tmp_path: pathlib.Path
) -> None:
    """What the chart's hook Job runs on every install and upgrade: the key in the mounted Secret becomes
    the named principal's key; again changes nothing; a new key in the file replaces the old one."""
    name = f"prometheus-{uuid.uuid4().hex[:6]}"
    key, new = generate_key(), generate_key()
    path = tmp_path / "api-key"
    path.write_text(key + "\n")
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        verifier = KeyVerifier(lambda: active_keys(pool))
        code, out, err = await tollgate(
            "keys", "import", name, "operator", "--key-file", str(path), "--dsn", database_url
        )
        assert code == 0 and out == "" and err.strip().endswith(": created"), err
        await verifier.refresh()
        who = verifier.verify(key)
        assert who is not None and who.name == name and who.roles == {"operator"}

        # The chart's hook Job runs the same command as `python -m tollgate_cli.keys import ...`.
        code, _, err = await tollgate(
            "import",
            name,
            "operator",
            "--key-file",
            str(path),
            "--dsn",
            database_url,
            module="tollgate_cli.keys",
        )
        assert code == 0 and err.strip().endswith(": unchanged"), err

        path.write_text(new)
        code, _, err = await tollgate(
            "keys", "import", name, "operator", "--key-file", str(path), "--dsn", database_url
        )
        assert code == 0 and err.strip().endswith(": updated"), err
        await verifier.refresh()
        assert verifier.verify(key) is None
        assert (again := verifier.verify(new)) is not None and again.name == name
        row = await pool.fetchrow("SELECT key_hash, rotated_at FROM api_keys WHERE name = $1", name)
        assert row["key_hash"] == key_hash(new) and row["rotated_at"] is not None

        # A weak or malformed key is refused with the reason, never echoed; the stored key is untouched.
        path.write_text("tgk_short")
        code, out, err = await tollgate(
            "keys", "import", name, "operator", "--key-file", str(path), "--dsn", database_url
        )
        assert code == 2 and "43 to 256 URL-safe" in err and "tgk_short" not in out + err
        code, _, err = await tollgate(
            "keys", "import", name, "operator", "--key-file", str(tmp_path / "missing"), "--dsn", database_url
        )
        assert code == 2 and "cannot read the key file" in err
        # The same key under a second name would make one key two principals.
        path.write_text(new)
        code, _, err = await tollgate(
            "keys", "import", f"x-{name}", "viewer", "--key-file", str(path), "--dsn", database_url
        )
        assert code == 2 and "another name" in err
        await verifier.refresh()
        assert (still := verifier.verify(new)) is not None and still.name == name
    finally:
        await pool.close()
