"""``tollgate scorer tune`` (:mod:`tollgate_scorer.tune`) and ``tollgate demo`` (:mod:`tollgate_demo.demo`):
commands that run a program of another package, imported only when the command runs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from tollgate_cli.common import console, fail, group, table

scorer_app = group("scorer", "The scorer's tools: onnxruntime session options measured for artifacts.")


@scorer_app.command("tune")
def tune(
    models: Annotated[list[Path], typer.Argument(help="ONNX artifacts made by the trainer.")],
    rounds: Annotated[
        int, typer.Option("--rounds", min=1, help="Rounds per option; the best is printed.")
    ] = 15,
    contracts_dir: Annotated[
        str | None, typer.Option("--contracts-dir", help="Dataset contracts (default: the project's).")
    ] = None,
) -> None:
    """Measure onnxruntime session options (threads, graph optimisation, memory arena) for artifacts: one
    row and 1,000 rows per call, rounds interleaved so that drift on a shared machine hits every option
    alike; the best round of each is printed."""
    from tollgate_core.contracts import ContractRegistry
    from tollgate_scorer.tune import measure

    contracts = ContractRegistry.from_directory(contracts_dir)
    for path in models:
        try:
            contract, timings = measure(path, contracts, rounds)
        except LookupError as exc:
            fail(str(exc.args[0]))
        columns = ("threads", "graph optimisation", "memory arena", "1 row, us", "1,000 rows, us")
        out = table(f"{path.name} ({contract}, best of {rounds} rounds)", columns, right=columns[3:])
        for t in timings:
            out.add_row(
                "1" if t.threads == 1 else "default pool",
                t.level,
                "on" if t.arena else "off",
                f"{t.one_row_us:.1f}",
                f"{t.thousand_rows_us:.1f}",
            )
        console.print(out)


def demo(
    initial_rows: Annotated[int, typer.Option(min=1, help="Records replayed before scoring starts.")] = 4000,
    shifted_rows: Annotated[int, typer.Option(min=1, help="Records of the shifted population.")] = 3000,
    rate: Annotated[float, typer.Option(min=0.1, help="Scoring requests per second.")] = 150.0,
    calm_seconds: Annotated[float, typer.Option(min=0.0, help="Scoring before the shift, seconds.")] = 40.0,
    timeout: Annotated[float, typer.Option(min=1.0, help="Longest wait for each step, seconds.")] = 300.0,
) -> None:
    """The closed loop on the running stack, watched live (make demo)."""
    from tollgate_demo.demo import DemoOptions, run

    options = DemoOptions(initial_rows, shifted_rows, rate, calm_seconds, timeout)
    raise typer.Exit(asyncio.run(run(options)))
