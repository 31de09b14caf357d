"""The ``vpr-tune`` command line.

Each command is a thin shell: it parses options, calls the module that does the work, and
prints with rich. Heavy imports (torch, ray) happen inside the commands so ``--help`` is fast.
A :class:`~vpr_tune.errors.UserError` anywhere becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vpr_tune import __version__
from vpr_tune.errors import UserError

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    help="Hyperparameter search for visual place recognition (VPR) on Ray Tune.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
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


# ---------------------------------------------------------------------------------- data
@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Argument(help="Folder to write street-world into.")],
    size: Annotated[str, typer.Option(help="tiny | demo | full")] = "demo",
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 0,
    preview: Annotated[
        bool, typer.Option(help="Also write preview.png: queries beside their positives.")
    ] = False,
) -> None:
    """Write the street-world synthetic dataset in the real GSV-XS/SF-XS/Tokyo-XS format."""
    raise UserError("data synth is not implemented yet")


@data_app.command("check")
def data_check(
    path: Annotated[Path, typer.Argument(help="A data root or one split folder.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    skip_bad_files: Annotated[
        bool, typer.Option(help="Warn about corrupt images and skip them instead of failing.")
    ] = False,
) -> None:
    """Scan a data root or split: images/places (train), database/queries/positives (eval)."""
    raise UserError("data check is not implemented yet")


# --------------------------------------------------------------------------- train / eval
@app.command("train")
def train(
    config: Annotated[Path, typer.Argument(help="YAML with fixed values (search-space schema).")],
    data: Annotated[str | None, typer.Option(help="Data root (default: street-world).")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run folder (default results/train/<name>).")
    ] = None,
) -> None:
    """Train one model with fixed hyperparameters; writes metrics.csv, TensorBoard, checkpoints."""
    raise UserError("train is not implemented yet")


@app.command("eval")
def evaluate(
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint written by train or run.")],
    data: Annotated[str, typer.Option(help="An eval split folder or a data root.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    save_preds: Annotated[
        int, typer.Option(help="Write predictions.csv with the top N and pictures.")
    ] = 0,
    only_wrong: Annotated[bool, typer.Option(help="Pictures only for wrong queries.")] = False,
) -> None:
    """Recall@1/5/10/25 of a checkpoint on an eval split (25 m rule)."""
    raise UserError("eval is not implemented yet")


# ------------------------------------------------------------------------------ search
@app.command("run")
def run(
    space: Annotated[Path, typer.Argument(help="Search-space YAML (see search_spaces/).")],
    name: Annotated[
        str | None, typer.Option(help="Experiment name (default: <file>-<time>).")
    ] = None,
    data: Annotated[str | None, typer.Option(help="Data root (default: street-world).")] = None,
    num_samples: Annotated[int | None, typer.Option(help="Override search.num_samples.")] = None,
    max_concurrent: Annotated[
        int | None, typer.Option(help="Override search.max_concurrent.")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the experiment NAME.")] = False,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster: auto | HOST:PORT | ray://HOST:PORT.")
    ] = None,
    storage: Annotated[str | None, typer.Option(help="Shared path or URI for results.")] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Validate YAML and data, print the plan, start nothing.")
    ] = False,
) -> None:
    """Run a hyperparameter search: Ray Tune trials with ASHA early stopping."""
    raise UserError("run is not implemented yet")


@app.command("best")
def best(
    name: Annotated[str | None, typer.Argument(help="Experiment (default: newest).")] = None,
    top: Annotated[int, typer.Option(help="How many trials to show.")] = 5,
    metric: Annotated[str, typer.Option(help="Ranking metric.")] = "val/R@1",
    retest: Annotated[bool, typer.Option(help="Evaluate on SF-XS test and Tokyo-XS.")] = False,
    data: Annotated[str | None, typer.Option(help="Data root for --retest.")] = None,
    force: Annotated[bool, typer.Option(help="Recompute retest results.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    storage: Annotated[str | None, typer.Option(help="Where experiments live.")] = None,
) -> None:
    """The top trials of a search; --retest re-evaluates them on the test sets."""
    import json

    from vpr_tune import analysis

    exp = analysis.load_experiment(name, storage)
    table = analysis.top_table(exp, top, metric)
    retested = None
    if retest:
        from vpr_tune.tune.retest import retest as run_retest

        log_console = err_console if json_out else console  # keep --json stdout pure JSON
        retested = run_retest(exp, top, metric, data, force, log=log_console.print)
    if json_out:
        out = {"experiment": exp.name, "path": str(exp.path), "synthetic": exp.synthetic,
               "metric": metric, "varying": exp.varying, "trials": _records(table)}
        if retested is not None:
            out["retest"] = _records(retested)
        print(json.dumps(out, indent=1))
        return
    failed = len(exp.trials) - len(analysis.ranked(exp, metric))
    caption = f"{len(exp.trials)} trials, {failed} not ranked (failed, diverged or unfinished)"
    _print_wide(_rich_table(table, f"Best trials of {exp.label} by {metric}", caption))
    if retested is not None:
        _print_wide(_rich_table(retested, f"Retest of {exp.label} (R@N %, 25 m)",
                                f"written to {exp.path / 'retest.csv'} and retest.md"))


def _print_wide(renderable) -> None:
    """Print a table at its natural width when stdout is a file or pipe (no 80-column cut)."""
    if console.is_terminal:
        console.print(renderable)
        return
    wide = console.options.update(max_width=1000)
    width = max(console.width, console.measure(renderable, options=wide).maximum)
    Console(width=width).print(renderable)


def _records(frame) -> list[dict]:
    """DataFrame rows as JSON-ready dicts (NaN -> null)."""
    import json

    return json.loads(frame.to_json(orient="records"))


def _rich_table(frame, title: str, caption: str):
    """A rich Table of a DataFrame; floats shown with 3 significant digits (R@N: 2 decimals)."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD)
    leaves = [str(c).split(".")[-1] for c in frame.columns]
    for col, leaf in zip(frame.columns, leaves, strict=True):
        # short headers so 80 columns fit: optimizer.name -> optimizer, optimizer.lr -> lr
        head = str(col)
        if "." in head:
            head = head.split(".")[-2] if leaf == "name" or leaves.count(leaf) > 1 else leaf
        table.add_column(head.replace("_R@", " R@"), justify="left" if col == "trial_id"
                         else "right", no_wrap=col == "trial_id", min_width=len(head))
    for row in frame.itertuples(index=False):
        cells = []
        for col, v in zip(frame.columns, row, strict=True):
            if isinstance(v, float):
                cells.append("" if v != v else f"{v:.2f}" if "R@" in col else f"{v:.3g}")
            else:
                cells.append(str(v))
        table.add_row(*cells)
    return table


@app.command("report")
def report(
    name: Annotated[str | None, typer.Argument(help="Experiment (default: newest).")] = None,
    storage: Annotated[str | None, typer.Option(help="Where experiments live.")] = None,
) -> None:
    """Write report.md and PNG figures into results/<name>/report/."""
    raise UserError("report is not implemented yet")


@app.command("bench")
def bench(
    name: Annotated[
        str, typer.Argument(help="loader | cache | eval | asha | search | memory | all")
    ],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    quick: Annotated[bool, typer.Option(help="Small sizes (for the test suite).")] = False,
) -> None:
    """Benchmarks that print ratios against their bars; writes results/bench/NAME.json."""
    raise UserError("bench is not implemented yet")


# ------------------------------------------------------------------------------- entry
def _click_usage_errors() -> tuple[type[Exception], ...]:
    """Click's UsageError: typer >= 0.20 vendors click as ``typer._click``."""
    errors: list[type[Exception]] = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        with contextlib.suppress(ImportError):
            errors.append(__import__(module, fromlist=["UsageError"]).UsageError)
    return tuple(errors)


_CLICK_ERRORS = _click_usage_errors()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry: user errors -> one line and exit 2 (``--debug`` for traceback)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    command = typer.main.get_command(app)
    try:
        rc = command.main(args=args, prog_name="vpr-tune", standalone_mode=False)
    except UserError as exc:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2
    except _CLICK_ERRORS as exc:  # bad command line: unknown command/option, bad value
        if debug:
            raise
        err_console.print(
            f"[bold red]error:[/] {exc.format_message()}", highlight=False, soft_wrap=True
        )
        return 2
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("interrupted")
        return 130
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
