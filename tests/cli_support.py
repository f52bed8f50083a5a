"""Commands of the ``tollgate`` command line run inside the test's process."""

from __future__ import annotations

import typer
import typer.main


def exit_status(app: typer.Typer, *args: str) -> int:
    """``app ARGS`` as its shell command runs it, in this process: the exit status (its output goes to this
    process's stdout and stderr, where ``capsys`` reads it)."""
    command = typer.main.get_command(app)
    outcome = command.main(list(args), prog_name=app.info.name, standalone_mode=False)
    return outcome if isinstance(outcome, int) else 0
