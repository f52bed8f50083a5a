"""``tollgate keys``: the one way to manage API keys (stored hashed in PostgreSQL, see ``apikeys``).

    tollgate keys create NAME ROLE [ROLE...]   print a new key (shown only this once)
    tollgate keys list                         names, roles and dates (never the keys)
    tollgate keys revoke NAME                  the key stops working within the services' refresh interval
    tollgate keys rotate NAME                  a new key for the same principal and roles, printed once;
                                               the old one stops working like a revoked one
    tollgate keys import NAME ROLE [ROLE...] --key-file PATH
                                               make a key generated elsewhere (a Kubernetes Secret) the
                                               active key of NAME; idempotent (the chart's hook Job runs it)

The database comes from ``--dsn`` or ``TOLLGATE_DATABASE_URL``. The new key goes to stdout alone, so
``KEY=$(tollgate keys create ...)`` captures it; what happened goes to stderr.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import asyncpg
import typer

from tollgate_cli.common import group
from tollgate_core import apikeys
from tollgate_core.settings import DEFAULT_DATABASE_URL

T = TypeVar("T")

keys_app = group(
    "keys",
    "API keys: create NAME ROLE [ROLE...] | list | revoke NAME | rotate NAME | import NAME ROLE... --key-file"
    " PATH (keys are stored hashed).",
)

Dsn = Annotated[
    str, typer.Option("--dsn", envvar="TOLLGATE_DATABASE_URL", help="PostgreSQL DSN holding the keys.")
]
Name = Annotated[str, typer.Argument(help="The key's name: the principal its actions are recorded under.")]


def _with_pool(dsn: str, work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    async def run() -> T:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
        try:
            return await work(pool)
        finally:
            await pool.close()

    try:
        return asyncio.run(run())
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except (OSError, asyncpg.PostgresError) as exc:
        typer.echo(f"error: cannot use the key database: {exc}", err=True)
        raise typer.Exit(1) from None


@keys_app.command("create")
def create(
    name: Name,
    roles: Annotated[list[str], typer.Argument(help=f"One or more of: {', '.join(apikeys.ROLES)}.")],
    dsn: Dsn = DEFAULT_DATABASE_URL,
) -> None:
    """Create a key for NAME with ROLES and print it; it is shown only this once."""
    key = _with_pool(dsn, lambda pool: apikeys.create_key(pool, name, *roles))
    typer.echo(key)
    typer.echo(
        f"created key {name!r} with roles {', '.join(dict.fromkeys(roles))} (shown once; store it now)",
        err=True,
    )


@keys_app.command("list")
def list_keys(dsn: Dsn = DEFAULT_DATABASE_URL) -> None:
    """Every key's name, roles and dates (never the key)."""
    for k in _with_pool(dsn, apikeys.list_keys):
        state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
        rotated = f"  rotated {k.rotated_at:%Y-%m-%d %H:%M}" if k.rotated_at else ""
        typer.echo(
            f"{k.name:30} {','.join(k.roles):40} created {k.created_at:%Y-%m-%d %H:%M}{rotated}  {state}"
        )


@keys_app.command("revoke")
def revoke(name: Name, dsn: Dsn = DEFAULT_DATABASE_URL) -> None:
    """Revoke the active key NAME (services stop accepting it within their refresh interval)."""
    if not _with_pool(dsn, lambda pool: apikeys.revoke_key(pool, name)):
        typer.echo(f"error: no active key named {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {name!r}", err=True)


@keys_app.command("rotate")
def rotate(name: Name, dsn: Dsn = DEFAULT_DATABASE_URL) -> None:
    """Replace the active key NAME by a new one (same principal and roles) and print it once."""
    key = _with_pool(dsn, lambda pool: apikeys.rotate_key(pool, name))
    if key is None:
        typer.echo(f"error: no active key named {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(key)
    typer.echo(f"rotated key {name!r}: the old key stops working (shown once; store it now)", err=True)


@keys_app.command("import")
def import_(
    name: Name,
    roles: Annotated[list[str], typer.Argument(help=f"One or more of: {', '.join(apikeys.ROLES)}.")],
    key_file: Annotated[
        Path,
        typer.Option(
            "--key-file",
            help="File holding the key (tgk_ + 43 or more URL-safe characters), e.g. a mounted Secret.",
        ),
    ],
    dsn: Dsn = DEFAULT_DATABASE_URL,
) -> None:
    """Make the key in --key-file the active key of NAME with ROLES (stored hashed); running it again
    changes nothing, a new key or new roles replace the old ones."""
    try:
        key = key_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        typer.echo(f"error: cannot read the key file: {exc}", err=True)
        raise typer.Exit(2) from None
    outcome = _with_pool(dsn, lambda pool: apikeys.import_key(pool, name, key, *roles))
    typer.echo(f"key {name!r} with roles {', '.join(dict.fromkeys(roles))}: {outcome}", err=True)


if __name__ == "__main__":
    keys_app()
