"""``vpr-tune run`` (a search, or its ``--estimate``) and ``vpr-tune doctor`` (this
machine checked before one)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vpr_tune.cli.app import app, console, err_console
from vpr_tune.errors import UserError


@app.command("run")
def run(
    space: Annotated[Path, typer.Argument(help="Search-space YAML (see search_spaces/).")],
    name: Annotated[
        str | None, typer.Option(help="Experiment name (default: <file>-<time>).")
    ] = None,
    data: Annotated[str | None, typer.Option(help="Data root (default: street-world).")] = None,
    num_samples: Annotated[
        int | None, typer.Option(min=1, help="Override search.num_samples.")] = None,
    max_concurrent: Annotated[
        int | None, typer.Option(min=1, help="Override search.max_concurrent.")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the experiment NAME.")] = False,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster: auto | HOST:PORT | ray://HOST:PORT.")
    ] = None,
    storage: Annotated[str | None, typer.Option(help="Shared path or URI for results.")] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Validate YAML and data, print the plan, start nothing.")
    ] = False,
    mlflow: Annotated[
        str | None, typer.Option(help="Also log each trial to MLflow at this tracking URI.")
    ] = None,
    time_budget: Annotated[
        str | None, typer.Option(help="Override search.time_budget (e.g. 90m, 6h, 3600s).")
    ] = None,
    warm_start: Annotated[
        str | None, typer.Option(help="Give the finished trials of experiment NAME to the "
                                 "sampler first.")
    ] = None,
    reproducible: Annotated[
        bool, typer.Option(help="Decide in sampling order: the same YAML, seed, data, "
                           "machine and precision give the same trials.csv "
                           "(search.reproducible).")
    ] = False,
    estimate: Annotated[
        bool, typer.Option(help="Time the smallest and largest trials here and project the "
                           "search's wall time and GPU hours; writes nothing to results/.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="With --estimate: one JSON object.")
                        ] = False,
) -> None:
    """Run a hyperparameter search: Ray Tune trials with ASHA early stopping."""
    from vpr_tune.tune import run_experiment

    out = err_console if json_out else console  # keep --json stdout pure JSON

    def log(msg: str) -> None:
        out.print(msg, highlight=False, markup=False, soft_wrap=True)

    if json_out and not estimate:
        raise UserError("--json goes with --estimate")
    if estimate:
        import json

        from vpr_tune.tune import load_run_space
        from vpr_tune.tune.estimate import estimate_search, format_estimate

        space = load_run_space(space, num_samples, max_concurrent)
        result = estimate_search(space, _data_root(space, data, log), address=address, log=log)
        if json_out:
            print(json.dumps(result, indent=1))
        else:
            for line in format_estimate(result):
                log(line)
        return
    run_experiment(space, name=name, data=data, num_samples=num_samples,
                   max_concurrent=max_concurrent, resume=resume, address=address,
                   storage=storage, dry_run=dry_run, time_budget=time_budget,
                   warm_start=warm_start, log=log, mlflow=mlflow, reproducible=reproducible)


def _data_root(space, data: str | None, log) -> Path:
    from vpr_tune.data.splits import resolve_data_root

    return resolve_data_root(data or space.base["data"]["root"],
                             size=space.base["data"]["synth_size"], log=log)


@app.command("doctor")
def doctor(
    space: Annotated[
        Path | None, typer.Argument(help="Search-space YAML to check (model, weights, data).")
    ] = None,
    data: Annotated[str | None, typer.Option(help="Data root (default: the space's, "
                                             "else street-world).")] = None,
    decode: Annotated[bool, typer.Option(help="Decode every image (slow, thorough).")] = False,
    mlflow: Annotated[str | None, typer.Option(help="MLflow tracking URI to check (default: "
                                               "the space's tracking.mlflow).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Check this machine before a search: packages, GPUs, precision, weights, data,
    tracking, disk."""
    import json

    from vpr_tune.doctor import Context, as_json, exit_code, run_checks

    def show(check) -> None:
        if json_out:
            return
        colour = {"✔": "green", "✘": "bold red", "!": "yellow"}[check.status]
        from rich.text import Text

        console.print(Text.assemble((check.status, colour), " ", (check.name, "bold"), ": ",
                                    check.detail), highlight=False, soft_wrap=True)
        if check.fix:
            console.print(f"    {check.fix}", highlight=False, soft_wrap=True)

    checks = run_checks(Context(space_path=space, data=data, decode=decode, mlflow=mlflow),
                        on_check=show)
    if json_out:
        print(json.dumps(as_json(checks), indent=1))
    raise typer.Exit(exit_code(checks))

