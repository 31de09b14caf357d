"""``vpr-tune replay``: choose ASHA / MO-ASHA settings from a FIFO pilot, in seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vpr_tune.cli.app import app, console
from vpr_tune.cli.output import print_wide, records, rich_table
from vpr_tune.errors import UserError


def _numbers(text: str, option: str, kind: type) -> list:
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{option} {text}: a comma-separated list of numbers, "
                        f"e.g. 1,2,3") from None


@app.command("replay")
def replay(
    name: Annotated[str | None, typer.Argument(help="A FIFO pilot experiment (newest).")] = None,
    scheduler: Annotated[str, typer.Option(help="asha or moasha.")] = "asha",
    grace_period: Annotated[str, typer.Option(help="Grace periods to try, e.g. 1,2,3.")] = "1,2,3",
    reduction_factor: Annotated[
        str, typer.Option(help="Reduction factors to try, e.g. 2,3,4.")] = "2,3,4",
    metric: Annotated[
        str | None, typer.Option(help="What the scheduler judges rungs on (asha.metric); "
                                      "default: the pilot's asha.metric.")] = None,
    orders: Annotated[int, typer.Option(help="Random arrival orders per setting.")] = 200,
    signals: Annotated[
        bool, typer.Option(help="Also: each early signal's rank correlation with the final "
                                "val R@1 at epochs 1 and 2.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Write cost vs P(best kept) (PNG).")] = None,
    storage: Annotated[str | None, typer.Option(help="Where experiments live.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Simulate early stopping on a pilot whose trials all ran to the end: trial-epochs vs
    FIFO and the chance of keeping the best, over random arrival orders. No training."""
    import json

    from vpr_tune.cli.search_results import _load_experiment
    from vpr_tune.replay import plot_sweep, rung_signals, sweep

    if orders < 1:
        raise UserError(f"--orders {orders}: at least 1")
    exp = _load_experiment(name, storage)
    table = sweep(exp, scheduler, _numbers(grace_period, "--grace-period", int),
                  _numbers(reduction_factor, "--reduction-factor", float), metric, orders)
    spearman = rung_signals(exp) if signals else None
    if json_out:
        out = {"experiment": exp.name, "settings": records(table)}
        if spearman is not None:
            out["signals"] = records(spearman)
        print(json.dumps(out, indent=1))
    else:
        print_wide(rich_table(table, f"Replay of {exp.name} ({orders} arrival orders a "
                                     "setting)",
                              "ratio: trial-epochs / FIFO's; p_best_kept: share of orders "
                              "whose best is within 1 point of FIFO's"))
        if spearman is not None:
            print_wide(rich_table(spearman, "Early signals: Spearman with the final best "
                                            "val R@1", ""))
        if exp.synthetic:
            console.print("note: street-world curves: synthetic numbers.")
    if plot is not None:
        console.print(f"figure: {plot_sweep(table, plot)}")
