"""``tollgate dev``: the generated files under ``schemas/`` (:mod:`tollgate_tools.schemagen`), the Helm chart's
Kafka data (:mod:`tollgate_tools.helmgen`) and the topic catalog's compatibility policy over git history
(:mod:`tollgate_tools.history`); ``make generate`` and ``make test`` run them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tollgate_cli.common import group

dev_app = group(
    "dev",
    "Generated schemas, the Helm chart's Kafka data and the topic catalog's compatibility over git history.",
)
helm_app = group("helm", "The Helm chart's Kafka data (topics and ACLs), generated from the topic catalog.")
dev_app.add_typer(helm_app, name="helm")

SchemasDir = Annotated[
    Path | None, typer.Option("--schemas-dir", help="The schemas/ folder (default: the project's).")
]


@dev_app.command("generate")
def generate(schemas_dir: SchemasDir = None) -> None:
    """(Re)write the JSON Schemas and AsyncAPI documents under schemas/ from the models; remove stale ones."""
    from tollgate_tools import schemagen

    changed = schemagen.write(schemas_dir)
    for line in changed:
        typer.echo(line)
    typer.echo(f"schemagen: {len(changed)} file(s) changed")


@dev_app.command("check")
def check(schemas_dir: SchemasDir = None) -> None:
    """Exit 1 when a generated file drifts from the models or an example is invalid."""
    from tollgate_tools import schemagen

    report = schemagen.check(schemas_dir)
    for problem in report.problems:
        typer.echo(problem)
    counts = f"{report.files} generated files and {report.examples} examples"
    if report.problems:
        typer.echo(f"schemagen: {len(report.problems)} problem(s) in {counts}")
        raise typer.Exit(1)
    typer.echo(f"schemagen: {counts} checked, no drift, all valid")


@dev_app.command("history")
def history(
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            metavar="REV",
            help="Also compare with this revision (default: origin/main when it exists, else HEAD).",
        ),
    ] = None,
    schemas_dir: SchemasDir = None,
    quiet: Annotated[
        bool, typer.Option("-q", "--quiet", help="Print only notes, failures and the summary.")
    ] = False,
) -> None:
    """Exit 1 when a published topic version's schema breaks its declared compatibility mode (2 when git
    history cannot be read)."""
    from tollgate_tools.history import GitError, check_repository

    try:
        report = check_repository(schemas_dir, against)
    except GitError as exc:
        typer.echo(f"compat: {exc}", err=True)
        raise typer.Exit(2) from None
    for note in report.notes:
        typer.echo(f"note: {note}")
    if not quiet:
        for line in report.results:
            typer.echo(line)
    for failure in report.failures:
        typer.echo(f"FAIL {failure}")
    typer.echo(report.summary)
    if not report.ok:
        raise typer.Exit(1)


@helm_app.command("write")
def helm_write() -> None:
    """Write infra/helm/tollgate/files/kafka.yaml (the chart's topics and ACLs) from the topic catalog."""
    from tollgate_tools import helmgen

    helmgen.write()
    typer.echo(f"helmgen: wrote {helmgen.CHART_FILE}")


@helm_app.command("check")
def helm_check() -> None:
    """Exit 1 when the committed chart data differs from the topic catalog."""
    from tollgate_tools import helmgen

    if helmgen.drifted():
        typer.echo(
            f"helmgen: {helmgen.CHART_FILE} differs from the topic catalog; run `tollgate dev helm write`"
        )
        raise typer.Exit(1)
    typer.echo(f"helmgen: {helmgen.CHART_FILE} matches the topic catalog")
