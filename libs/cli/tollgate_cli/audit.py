"""``tollgate audit ...``: verify the trail offline, straight from PostgreSQL; set up the restricted
database role. (API keys: ``tollgate keys``.)

Mounted on the platform's ``tollgate`` command as ``app.add_typer(audit_app, name="audit")``; it also runs
on its own as ``python -m tollgate_cli.audit``.

``verify`` needs no running service: it reads the chains with a read-only snapshot and checks every row,
link and checkpoint itself. It needs the checkpoint signer's public key pinned by the operator
(``--public-key`` or ``TOLLGATE_AUDIT_TRUSTED_KEYS``) and refuses to run without one: keys recorded in the
database are only as trustworthy as the database.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import asyncpg
import orjson
import typer

from tollgate_audit_log import roles
from tollgate_audit_log.publish import PublishedHead, WitnessDir
from tollgate_audit_log.publish import kafka_heads as kafka_heads_of
from tollgate_audit_log.receipts import verify_receipt
from tollgate_audit_log.settings import DEVELOPMENT_WRITER_PASSWORD, WRITER_ROLE
from tollgate_audit_log.signing import (
    TRUSTED_KEYS_ENV,
    KeyRotation,
    load_or_create_private_key,
    load_public_key,
    pinned_keys,
    sign_rotation,
)
from tollgate_audit_log.verify import verify_database
from tollgate_core.settings import DEFAULT_DATABASE_URL, ServiceSettings
from tollgate_core.topics import Topics

audit_app = typer.Typer(
    name="audit",
    help="The audit trail: verify it, set up its database role.",
    no_args_is_help=True,
    add_completion=False,
)

Dsn = Annotated[
    str, typer.Option("--dsn", envvar="TOLLGATE_DATABASE_URL", help="PostgreSQL DSN of the audit database.")
]


def _dsn(value: str | None) -> str:
    return value or os.environ.get("TOLLGATE_DATABASE_URL") or DEFAULT_DATABASE_URL


@audit_app.command("verify")
def verify(
    dsn: Dsn = DEFAULT_DATABASE_URL,
    public_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--public-key",
            help="File of Ed25519 public keys (PEM) pinned as trusted: the checkpoint signer's; repeat "
            "or concatenate for several. Default: the file named by TOLLGATE_AUDIT_TRUSTED_KEYS. Without "
            "either, verify refuses to run (keys recorded in the database are never trusted); later keys "
            "count when a trusted key signed their rotation.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    stream: Annotated[
        list[str] | None, typer.Option("--stream", help="Only these streams (repeatable).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
    witness: Annotated[
        Path | None,
        typer.Option(
            "--witness",
            envvar="TOLLGATE_AUDIT_WITNESS_DIR",
            help="Witness directory the service appends its signed heads to (<stream>.jsonl): compared with "
            "the database, so deleted rows and checkpoints and a truncated tail show.",
            file_okay=False,
        ),
    ] = None,
    kafka_heads: Annotated[
        bool,
        typer.Option(
            "--kafka-heads",
            help="Also read the signed heads from the audit.checkpoints topic (TOLLGATE_KAFKA_BOOTSTRAP, "
            "TOLLGATE_TOPIC_NAMESPACE).",
        ),
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Processes that hash in parallel, each over a checkpoint-aligned range of one snapshot "
            "(worth it with spare cores and streams of 10^5+ rows).",
        ),
    ] = 1,
) -> None:
    """Verify every row's content hash, every link and every signed checkpoint. Exit 0 when intact, 1 with
    the first bad seq otherwise."""
    try:
        trusted = pinned_keys(public_key)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: trusted keys: {exc}", err=True)
        raise typer.Exit(2) from None
    if not trusted:
        typer.echo(
            f"error: no trusted public keys: pass --public-key or set {TRUSTED_KEYS_ENV}; keys recorded in "
            "the database are never trusted, so without a pinned key there is nothing to verify against",
            err=True,
        )
        raise typer.Exit(2)

    def progress(name: str, rows: int) -> None:
        if not as_json and sys.stderr.isatty():
            typer.echo(f"\r{name}: {rows} rows", err=True, nl=False)

    rotations: list[tuple[KeyRotation, bytes]] = []
    known_heads = WitnessDir(witness).known_heads if witness is not None else None

    async def published_heads() -> tuple[dict[str, list[PublishedHead]] | None, str]:
        heads: dict[str, list[PublishedHead]] = {}
        sources = []
        if witness is not None:
            directory = WitnessDir(witness)
            rotations.extend(directory.rotations())  # followed only when a trusted key signed them
            for name in directory.streams():
                heads.setdefault(name, []).extend(directory.heads(name))
            sources.append(f"witness {witness}")
        if kafka_heads:
            settings = ServiceSettings()
            topic = Topics(settings.topic_namespace).name("audit.checkpoints")
            for name, found in (await kafka_heads_of(settings.kafka_bootstrap, topic)).items():
                heads.setdefault(name, []).extend(found)
            sources.append(f"kafka {topic}")
        return (heads, ", ".join(sources)) if sources else (None, "none")

    async def run() -> int:
        try:
            published, published_from = await published_heads()
        except (OSError, ValueError, TimeoutError) as exc:
            typer.echo(f"error: published heads: {exc}", err=True)
            return 2
        conn = await asyncpg.connect(_dsn(dsn))
        try:
            report = await verify_database(
                conn,
                streams=stream or None,
                trusted=trusted,
                progress=progress,
                workers=workers,
                dsn=_dsn(dsn),
                published=published,
                published_from=published_from,
                rotations=rotations,
                known_heads=known_heads,
            )
        finally:
            await conn.close()
        if sys.stderr.isatty() and not as_json:
            typer.echo("\r", err=True, nl=False)
        if as_json:
            typer.echo(
                orjson.dumps(
                    {**report.to_dict(), "summary": report.summary()}, option=orjson.OPT_INDENT_2
                ).decode()
            )
        else:
            for s in report.streams:
                state = "ok" if s.ok else f"BROKEN at seq {s.first_bad_seq}: {s.problem}: {s.detail}"
                typer.echo(
                    f"  {s.stream:12} {s.rows:>10} rows  {s.checkpoints_verified}/{s.checkpoints} checkpoints  {state}"
                )
            if published is None:
                typer.echo(
                    "  note: no published heads compared (--witness, --kafka-heads): rows removed together "
                    "with the checkpoints that cover them cannot be told from a shorter trail",
                    err=True,
                )
            typer.echo(report.summary())
        return 0 if report.ok else 1

    raise typer.Exit(asyncio.run(run()))


@audit_app.command("verify-proof")
def verify_proof(
    file: Annotated[
        Path,
        typer.Argument(
            help="A receipt (or the JSON answer of GET /v1/audit/proof, with several)",
            exists=True,
            dir_okay=False,
        ),
    ],
    public_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--public-key",
            help="File of pinned Ed25519 public keys (PEM); default: TOLLGATE_AUDIT_TRUSTED_KEYS.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Check receipts offline (no database, no service): the row's hashes, its audit path to the signed
    checkpoint, and the checkpoint's signature by a pinned key. Exit 0 when every receipt holds, 1 otherwise."""
    try:
        trusted = pinned_keys(public_key)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: trusted keys: {exc}", err=True)
        raise typer.Exit(2) from None
    if not trusted:
        typer.echo(f"error: no trusted public keys: pass --public-key or set {TRUSTED_KEYS_ENV}", err=True)
        raise typer.Exit(2)
    try:
        doc = orjson.loads(file.read_bytes())
    except orjson.JSONDecodeError as exc:
        typer.echo(f"error: {file} is not JSON: {exc}", err=True)
        raise typer.Exit(1) from None
    found = doc.get("receipts") if isinstance(doc, dict) and "receipts" in doc else [doc]
    if not isinstance(found, list) or not found:
        typer.echo(f"error: {file} holds no receipt", err=True)
        raise typer.Exit(1)
    results = [verify_receipt(r, trusted) for r in found]
    for result in results:
        typer.echo(f"{'OK' if result.ok else 'REFUSED'}: {result.detail}")
    raise typer.Exit(0 if all(r.ok for r in results) else 1)


@audit_app.command("rotate-key")
def rotate_key(
    previous: Annotated[
        Path,
        typer.Option(
            "--previous",
            help="The current signing key (PEM private key): it signs the hand-over.",
            exists=True,
            dir_okay=False,
        ),
    ],
    new: Annotated[
        Path,
        typer.Option(
            "--new",
            help="The next signing key: its PEM public key (or private key).",
            exists=True,
            dir_okay=False,
        ),
    ],
    dsn: Dsn = DEFAULT_DATABASE_URL,
    witness: Annotated[
        Path | None,
        typer.Option(
            "--witness",
            envvar="TOLLGATE_AUDIT_WITNESS_DIR",
            help="Also append the signed rotation to <dir>/key-rotations.log.",
            file_okay=False,
        ),
    ] = None,
) -> None:
    """Record a key rotation: the previous key signs the new one. Verifiers that pin the previous key then
    trust checkpoints signed by the new one; nobody else can make such a statement. Then point
    TOLLGATE_AUDIT_LOG_SIGNING_KEY_PATH at the new private key and restart the service."""
    old_key = load_or_create_private_key(previous, create=False)
    new_key = load_public_key(new)
    rotation, signature = sign_rotation(old_key, new_key, datetime.now(UTC))

    async def run() -> None:
        conn = await asyncpg.connect(_dsn(dsn))
        try:
            await conn.execute(
                "INSERT INTO audit_key_rotations (new_key_id, previous_key_id, new_public_key, created_at, signature) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (new_key_id) DO NOTHING",
                rotation.new_key_id,
                rotation.previous_key_id,
                rotation.new_public_key,
                rotation.created_at,
                signature,
            )
        finally:
            await conn.close()

    asyncio.run(run())
    if witness is not None:
        WitnessDir(witness).append_rotation(rotation, signature)
    typer.echo(f"key {rotation.previous_key_id} hands over to {rotation.new_key_id}")


@audit_app.command("db-setup")
def db_setup(
    dsn: Annotated[str, typer.Option("--dsn", help="DSN of a role with CREATEROLE (e.g. the superuser).")],
    role: Annotated[str, typer.Option("--role")] = WRITER_ROLE,
    password: Annotated[
        str, typer.Option("--password", envvar="TOLLGATE_AUDIT_LOG_WRITER_PASSWORD")
    ] = DEVELOPMENT_WRITER_PASSWORD,
) -> None:
    """Create (or reset) the restricted writer role. Run once per cluster as a role with CREATEROLE; the
    service grants it INSERT and SELECT on the audit tables when it starts."""

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(roles.setup_sql(role, password))
        finally:
            await conn.close()

    asyncio.run(run())
    typer.echo(f"role {role} ready (LOGIN, no other attributes)")


if __name__ == "__main__":
    audit_app()
