"""``tollgate scorer tune`` (:mod:`tollgate_scorer.tune`) and ``tollgate demo`` (:mod:`tollgate_demo.demo`):
commands that run a program of another package, imported only when the command runs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from tollgate_cli.common import group

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
    """Measure onnxruntime session options (threads, graph optimisation, memory arena) for artifacts."""
    from tollgate_scorer.tune import tune as measure

    measure(models, rounds, contracts_dir)


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
