"""``tollgate audit``: offline verification straight from PostgreSQL (no service running)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.audit_support import fill, fresh_database
from tollgate_audit_log.app import prepare_database
from tollgate_audit_log.settings import AuditLogSettings
from tollgate_audit_log.signing import TRUSTED_KEYS_ENV, Signer, public_pem


@pytest.fixture(scope="module")
async def database_url() -> AsyncIterator[str]:
    """This module's own database (it counts and verifies whole tables)."""
    async with fresh_database("cli") as dsn:
        yield dsn


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    base = {k: v for k, v in os.environ.items() if k != TRUSTED_KEYS_ENV}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tollgate_cli.audit",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**base, **(env or {})},
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture(scope="module")
async def signed(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Signer, Path]:
    await prepare_database(AuditLogSettings(database_url=database_url))
    signer = Signer(Ed25519PrivateKey.generate())
    pub = tmp_path_factory.mktemp("cli") / "audit.pub"
    pub.write_text(public_pem(signer.public_key))
    return signer, pub


async def make_stream(dsn: str, stream: str, signer: Signer, rows: int = 600) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        writer = await fill(conn, stream, rows)
        await writer.register_key(signer)
        while await writer.checkpoint(signer, max_rows=250) is not None:
            pass
    finally:
        await conn.close()


async def test_verify_offline_ok_then_broken(database_url: str, signed: tuple[Signer, Path]) -> None:
    signer, pub = signed
    await make_stream(database_url, "cli-ok", signer)
    code, out, _ = await cli("verify", "--dsn", database_url, "--public-key", str(pub), "--stream", "cli-ok")
    assert code == 0, out
    assert "OK: 600 rows in 1 streams, 3 signed checkpoints verified" in out

    code, out, _ = await cli(
        "verify", "--dsn", database_url, "--public-key", str(pub), "--stream", "cli-ok", "--json"
    )
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["rows"] == 600 and report["keys"] == "pinned"

    # No pinned key: no verdict (the keys in audit_signing_keys are the database's word, not a trust anchor).
    code, out, err = await cli("verify", "--dsn", database_url, "--stream", "cli-ok")
    assert code == 2 and "OK" not in out and "no trusted public keys" in err
    code, out, _ = await cli(
        "verify", "--dsn", database_url, "--stream", "cli-ok", env={TRUSTED_KEYS_ENV: str(pub)}
    )
    assert code == 0 and "OK: 600 rows" in out

    await make_stream(database_url, "cli-broken", signer)
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute("ALTER TABLE audit_events DISABLE TRIGGER USER")
            await conn.execute("DELETE FROM audit_events WHERE stream = 'cli-broken' AND seq = 321")
            await conn.execute("ALTER TABLE audit_events ENABLE TRIGGER USER")
    finally:
        await conn.close()
    code, out, _ = await cli(
        "verify",
        "--dsn",
        database_url,
        "--public-key",
        str(pub),
        "--stream",
        "cli-ok",
        "--stream",
        "cli-broken",
    )
    assert code == 1
    assert "BROKEN: stream cli-broken, first bad seq 321: missing" in out


async def test_a_key_rotation_signed_by_the_pinned_key_is_followed_and_no_other(
    database_url: str, signed: tuple[Signer, Path], tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization

    old, old_pub = signed
    successor = Signer(Ed25519PrivateKey.generate())
    old_pem = tmp_path / "old.pem"
    old_pem.write_bytes(
        old._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    new_pub = tmp_path / "new.pub"
    new_pub.write_text(public_pem(successor.public_key))
    code, out, err = await cli(
        "rotate-key", "--previous", str(old_pem), "--new", str(new_pub), "--dsn", database_url,
        "--witness", str(tmp_path / "witness"),
    )  # fmt: skip
    assert code == 0 and f"hands over to {successor.key_id}" in out, err
    assert (tmp_path / "witness" / "key-rotations.log").exists()
    await make_stream(database_url, "cli-rotated", successor)
    code, out, _ = await cli(
        "verify", "--dsn", database_url, "--public-key", str(old_pub), "--stream", "cli-rotated"
    )
    assert code == 0 and "OK: 600 rows" in out, out

    # A hand-over signed by a key nobody pinned (written straight into the table) is not followed.
    rogue, taken = Signer(Ed25519PrivateKey.generate()), Signer(Ed25519PrivateKey.generate())
    from datetime import UTC, datetime

    from tollgate_audit_log.signing import sign_rotation

    rotation, signature = sign_rotation(rogue._key, taken.public_key, datetime.now(UTC))
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO audit_key_rotations VALUES ($1, $2, $3, $4, $5)",
            rotation.new_key_id,
            rotation.previous_key_id,
            rotation.new_public_key,
            rotation.created_at,
            signature,
        )
    finally:
        await conn.close()
    await make_stream(database_url, "cli-rogue", taken)
    code, out, _ = await cli(
        "verify", "--dsn", database_url, "--public-key", str(old_pub), "--stream", "cli-rogue"
    )
    assert code == 1 and "first bad seq 1: checkpoint_signature" in out, out


async def test_verify_follows_the_rotation_in_the_witness_directory_when_the_table_lost_it(
    database_url: str, signed: tuple[Signer, Path], tmp_path: Path
) -> None:
    """The owner deletes the recorded hand-over from audit_key_rotations: the witness directory still has
    it (``rotate-key --witness``), and ``verify --witness`` follows it; a line there signed by a key nobody
    pinned, or altered after signing, adds no key."""
    from cryptography.hazmat.primitives import serialization

    old, old_pub = signed
    successor = Signer(Ed25519PrivateKey.generate())
    old_pem = tmp_path / "old.pem"
    old_pem.write_bytes(
        old._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    new_pub = tmp_path / "new.pub"
    new_pub.write_text(public_pem(successor.public_key))
    witness = tmp_path / "witness"
    code, out, err = await cli(
        "rotate-key", "--previous", str(old_pem), "--new", str(new_pub), "--dsn", database_url,
        "--witness", str(witness),
    )  # fmt: skip
    assert code == 0, err
    await make_stream(database_url, "cli-witnessed-rotation", successor)
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute("ALTER TABLE audit_key_rotations DISABLE TRIGGER USER")
            await conn.execute("DELETE FROM audit_key_rotations WHERE new_key_id = $1", successor.key_id)
            await conn.execute("ALTER TABLE audit_key_rotations ENABLE TRIGGER USER")
    finally:
        await conn.close()
    args = (
        "verify",
        "--dsn",
        database_url,
        "--public-key",
        str(old_pub),
        "--stream",
        "cli-witnessed-rotation",
    )
    code, out, _ = await cli(*args)
    assert code == 1 and "first bad seq 1: checkpoint_signature" in out, out  # the table alone: unknown key
    code, out, err = await cli(*args, "--witness", str(witness))
    assert code == 0 and "OK: 600 rows" in out, out + err

    # A line altered after signing (another new key), or signed by a key nobody pinned: not followed.
    from datetime import UTC, datetime

    from tollgate_audit_log.signing import sign_rotation

    rogue, taken = Signer(Ed25519PrivateKey.generate()), Signer(Ed25519PrivateKey.generate())
    rotation, signature = sign_rotation(rogue._key, taken.public_key, datetime.now(UTC))
    forged = json.loads((witness / "key-rotations.log").read_text().splitlines()[0])
    forged["rotation"]["new_public_key"] = taken.public_key.public_bytes_raw().hex()
    forged["rotation"]["new_key_id"] = taken.key_id
    with (witness / "key-rotations.log").open("a") as fh:
        fh.write(json.dumps(forged) + "\n")
        fh.write(
            json.dumps({"rotation": json.loads(rotation.message()), "signature": signature.hex()}) + "\n"
        )
    await make_stream(database_url, "cli-witness-rogue", taken)
    code, out, _ = await cli(
        "verify", "--dsn", database_url, "--public-key", str(old_pub), "--stream", "cli-witness-rogue",
        "--witness", str(witness),
    )  # fmt: skip
    assert code == 1 and "first bad seq 1: checkpoint_signature" in out, out
