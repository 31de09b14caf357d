"""The ``vpr-tune`` Typer app, its consoles and the root options; every command module of
:mod:`vpr_tune.cli` adds its commands to :data:`app` (or :data:`data_app`)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from vpr_tune import __version__
from vpr_tune.metrics import SEARCHABLE

# markup=False: messages, paths and names are printed literally ("[low, high]", "x[/bold]")
console = Console(markup=False)
err_console = Console(stderr=True, markup=False)

app = typer.Typer(
    help="Hyperparameter search for visual place recognition (VPR) on Ray Tune.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
METRIC_HELP = f"Ranking metric (default: the search's): {', '.join(SEARCHABLE)}."
data_app = typer.Typer(help="Make, check and preview datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _version(value: bool) -> None:
    if value:
        console.print(f"vpr-tune {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
) -> None:
    """vpr-tune: search spaces in YAML -> Ray Tune trials -> best configs, retested."""

