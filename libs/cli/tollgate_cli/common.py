"""What the platform's command groups share (``tollgate`` itself, ``tollgate dlq``, ``tollgate keys``): a
Typer group set up one way, the two consoles, :func:`table` (nothing cut on a narrow terminal), :func:`fail`
and :func:`call`, one keyed request to a tollgate HTTP API, so every command reports errors the same way: the
server's message with exit status 1, exit status 2 when the service cannot be reached."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.table import Table

console = Console()
errors = Console(stderr=True)


def group(name: str, help: str) -> typer.Typer:
    """A command group: its help when called without a command, no shell-completion commands."""
    return typer.Typer(name=name, help=help, no_args_is_help=True, add_completion=False)


def table(title: str, columns: Sequence[str], right: Collection[str] = ()) -> Table:
    """A table whose headers and cells fold onto more lines on a narrow terminal: no value is ever cut."""
    out = Table(title=title)
    for column in columns:
        out.add_column(column, overflow="fold", justify="right" if column in right else "left")
    return out


def fail(message: str, code: int = 1) -> NoReturn:
    """End the command: ``error: message`` on stderr, exit status ``code``."""
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def call(method: str, base_url: str, path: str, *, key: str | None, timeout: float, **kwargs: Any) -> Any:
    """``method base_url+path`` with the API key (``X-API-Key``) when there is one; the decoded JSON of a 2xx
    answer. Any other answer ends the command with the server's message; ``kwargs`` go to
    ``httpx.Client.request`` (``json=``, ``params=``)."""
    headers = {"x-api-key": key} if key else {}
    try:
        with httpx.Client(base_url=base_url, timeout=timeout, headers=headers) as client:
            response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        fail(f"cannot reach {base_url}: {exc}", code=2)
    if response.is_success:
        return response.json()
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    if isinstance(detail, list):  # FastAPI validation errors
        detail = "; ".join(f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail)
    fail(f"{response.status_code} {response.reason_phrase}: {detail}")
