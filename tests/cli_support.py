"""Commands of the ``tollgate`` command line run inside the test's process."""

from __future__ import annotations

import typer
import typer.main


def folded_columns(output: str) -> dict[int, str]:
    """A printed table's columns, each cell's fragments read top to bottom and joined: on a narrow terminal a
    table that folds (never cuts) still holds each full value here."""
    columns: dict[int, str] = {}
    for line in output.splitlines():
        if "│" in line:
            for i, fragment in enumerate(line.split("│")[1:-1]):
                columns[i] = columns.get(i, "") + fragment.strip()
    return columns


def exit_status(app: typer.Typer, *args: str) -> int:
    """``app ARGS`` as its shell command runs it, in this process: the exit status (its output goes to this
    process's stdout and stderr, where ``capsys`` reads it)."""
    command = typer.main.get_command(app)
    outcome = command.main(list(args), prog_name=app.info.name, standalone_mode=False)
    return outcome if isinstance(outcome, int) else 0
