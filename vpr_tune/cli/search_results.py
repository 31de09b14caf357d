"""Reading a search's results: ``vpr-tune best`` (its top trials or Pareto front, with
``--retest``, ``--repeat``, ``--export``, ``--save-preds``), ``compare``, ``report`` and
``bench``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vpr_tune.bench import BENCHMARKS
from vpr_tune.cli.app import METRIC_HELP, app, console, err_console
from vpr_tune.cli.output import print_wide, records, rich_table
from vpr_tune.errors import UserError
from vpr_tune.statuses import UNRANKED


@app.command("best")
def best(
    name: Annotated[str | None, typer.Argument(help="Experiment (default: newest).")] = None,
    top: Annotated[
        str | None, typer.Option(callback=lambda v: _check_top(v),
                                 help="How many trials: a number or 'all' (default 5; 3 "
                                 "with --repeat).")
    ] = None,
    metric: Annotated[str | None, typer.Option(help=METRIC_HELP)] = None,
    retest: Annotated[bool, typer.Option(help="Evaluate on SF-XS test and Tokyo-XS.")] = False,
    data: Annotated[str | None, typer.Option(help="Data root for --retest.")] = None,
    test_set: Annotated[
        list[str] | None, typer.Option(help="Another test set, NAME=PATH (a folder in the "
                                       "SF-XS layout); repeatable; implies --retest.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Recompute retest results.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    storage: Annotated[str | None, typer.Option(help="Where experiments live.")] = None,
    export: Annotated[
        Path | None, typer.Option(help="Write the trial's config as a train YAML.")
    ] = None,
    trial: Annotated[
        str | None, typer.Option(help="Trial id for --export/--save-preds (default: best).")
    ] = None,
    repeat: Annotated[
        int, typer.Option(min=0, help="Retrain the top configs (--top, default 3) with N new "
                          "seeds.")
    ] = 0,
    save_preds: Annotated[
        int, typer.Option(min=0, help="Prediction pictures (top N) of the trial on val and "
                          "tests.")
    ] = 0,
) -> None:
    """The top trials of a search (a multi-objective search: its Pareto front); --retest
    re-evaluates them on the test sets, --repeat retrains them with new seeds, --export
    writes one as a train YAML."""
    from vpr_tune import analysis
    from vpr_tune.protocol import parse_test_sets

    test_sets = parse_test_sets(test_set)  # a bad NAME=PATH is refused before any work
    retest = retest or bool(test_sets)
    exp = _load_experiment(name, storage)
    front = exp.multi_objective and metric is None  # --metric ranks by one objective
    metric = metric or exp.metric
    log_console = err_console if json_out else console  # keep --json stdout pure JSON
    if export is not None or save_preds:
        _best_trial_outputs(exp, export, trial, save_preds, data, metric, log_console,
                            metric_given=not front)
        return
    top_n = _parse_top(top, exp, 3 if repeat else 5)
    if repeat:
        _best_repeat(exp, repeat, top_n, metric, data, json_out, log_console)
        return
    from vpr_tune.noise import add_val_intervals

    table = analysis.front_table(exp) if front else analysis.top_table(exp, top_n, metric)
    table = add_val_intervals(table, exp, metric, compare=not front)
    retested = None
    if retest:
        from vpr_tune.retest import retest as run_retest

        retested = run_retest(exp, top_n, metric, data, force, log=log_console.print,
                              front=front, test_sets=test_sets)
        # ranks/ holds ranks/retest too
        _push(exp, storage, ("retest.csv", "retest.md", "retest_sets.json", "ranks"))
    from vpr_tune.tune.lineage import lineage, read_perturbations

    schedule = None  # PBT/PB2: the hyperparameters the winner trained with, per epoch
    if read_perturbations(exp.path) is not None and len(table):
        schedule = lineage(exp.path, str(table["trial_id"].iloc[0]))
    if json_out:
        _best_json(exp, metric, front, table, retested, schedule)
    else:
        _print_best(exp, metric, front, table, retested, schedule)


def _best_json(exp, metric: str, front: bool, table, retested, schedule) -> None:
    """``best --json``: the table (and the retest, its transfer, the PBT schedule) as JSON."""
    import json

    from vpr_tune import analysis
    from vpr_tune.noise import noise_json

    out = {"experiment": exp.name, "path": str(exp.path), "synthetic": exp.synthetic,
           "metric": metric, "varying": exp.varying, "trials": records(table),
           "noise": noise_json(table)}
    if front:
        out["objectives"] = [{"metric": m, "mode": mode} for m, mode in exp.objectives]
        out["pareto_front"] = True
    if retested is not None:
        out["retest"] = records(retested)
        out["retest_noise"] = noise_json(retested)
        out["test_sets"] = retested.attrs.get("test_sets", {})
        out["transfer"] = records(analysis.rank_transfer(retested))
    if schedule is not None:
        out["schedule"] = records(schedule)
    print(json.dumps(out, indent=1))


def _print_best(exp, metric: str, front: bool, table, retested, schedule) -> None:
    """``best``'s tables: the top trials or the front (or their retest), the PBT schedule."""
    from vpr_tune import analysis
    from vpr_tune.noise import INTERVAL_NOTE, display, noise_lines

    if front:
        unfinished = int(exp.trials["status"].isin(UNRANKED).sum())
        objectives = ", ".join(f"{m} ({mode})" for m, mode in exp.objectives)
        caption = (f"{len(table)} of {len(exp.trials)} trials on the front ({unfinished} "
                   f"failed, diverged or unstarted); --metric M ranks by one objective")
        title = f"Pareto front of {exp.label}: {objectives}"
    else:
        failed = len(exp.trials) - len(analysis.ranked(exp, metric))
        caption = f"{len(exp.trials)} trials, {failed} not ranked (failed, diverged or unfinished)"
        title = f"Best trials of {exp.label} by {metric}"
    # a conditional hyperparameter none of the shown trials has (momentum of Adam trials)
    # is an empty column: left out of the printed tables, kept in --json and the CSVs
    unset = [c for c in exp.varying if c in table and table[c].isna().all()]
    table = table.drop(columns=unset)
    if retested is not None:
        retested = retested.drop(columns=[c for c in unset if c in retested])
    if retested is None:
        print_wide(rich_table(display(table), title, f"{caption}; {INTERVAL_NOTE}"))
        lines = noise_lines(table)
    else:  # the retest table holds every column of the best table but epochs
        from vpr_tune.retest import transfer_lines

        print_wide(rich_table(display(retested), f"Retest of {exp.label} (R@N %, 25 m rule)",
                              f"{caption}; {INTERVAL_NOTE}; written to "
                              f"{exp.path / 'retest.csv'} and .md"))
        lines = [*noise_lines(retested), *transfer_lines(retested)]
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
    if schedule is not None:
        print_wide(rich_table(schedule, f"Schedule of {table['trial_id'].iloc[0]} (PBT "
                              "lineage: ran_in = the trial that trained that epoch)",
                              f"exploits: {exp.path / 'perturbations.csv'}"))


def _check_top(top: str | None) -> str | None:
    """``--top`` is checked like every numeric option, before any experiment is read."""
    if top is None or top.strip().lower() == "all":
        return top
    try:
        n = int(top)
    except ValueError:
        raise typer.BadParameter(f"a number or 'all', got {top!r}") from None
    if n < 1:
        raise typer.BadParameter(f"{n} is not in the range x>=1")
    return top


def _parse_top(top: str | None, exp, default: int) -> int:
    """``--top``: a number >= 1, or ``all`` (every trial); ``default`` when not given."""
    if top is None:
        return default
    if top.strip().lower() == "all":
        return max(1, len(exp.trials))
    return int(top)


def _best_trial_outputs(exp, export, trial, save_preds, data, metric, log_console,
                        metric_given: bool = True) -> None:
    """``best --export FILE`` and ``best --save-preds N`` for one trial (default: the best)."""
    if export is not None:
        from vpr_tune.export import export_trial

        path, cfg = export_trial(exp, export, trial, metric)
        picked = cfg["name"].rpartition("-")[2]
        log_console.print(f"wrote {path}: trial {picked} of "
                          f"{exp.name} as a train config; reproduce it with\n"
                          f"  vpr-tune train {path}", highlight=False, soft_wrap=True)
        if trial is None and exp.multi_objective:
            log_console.print(_front_pick_line(exp, picked, metric, metric_given),
                              highlight=False, soft_wrap=True)
    if save_preds:
        from vpr_tune.preds import save_trial_predictions

        written = save_trial_predictions(
            exp, save_preds, trial, data, metric,
            log=lambda m: log_console.print(m, highlight=False, soft_wrap=True))
        log_console.print(f"wrote predictions.csv and pictures for {', '.join(written)} under "
                          f"{next(iter(written.values())).parent.parent}", highlight=False,
                          soft_wrap=True)


def _front_pick_line(exp, picked: str, metric: str, metric_given: bool) -> str:
    """Which trial of a multi-objective search ``--export`` took without ``--trial``, why,
    and how to take another."""
    from vpr_tune import analysis

    try:
        front = [str(t) for t in analysis.front_rows(exp)["trial_id"]]
    except UserError:
        front = []
    why = (f"the best {metric} (--metric)" if metric_given else
           f"the best {metric}, the search's ranking metric; the front trades it against "
           + ", ".join(m for m, _ in exp.objectives if m != metric))
    where = (f"one of the {len(front)} trials on the Pareto front" if picked in front
             else "not on the Pareto front")
    return (f"note: a multi-objective search has no single best trial: exported {picked}, "
            f"{where}, by {why}; pick another with --trial ID (the front: vpr-tune best "
            f"{exp.name})")


def _best_repeat(exp, seeds, top, metric, data, json_out, log_console) -> None:
    """``best --repeat N``: the top configs retrained with N new seeds, mean ± std."""
    import json

    from vpr_tune.repeats import (
        METHOD,
        display_table,
        noise_line,
        repeat,
        verdict,
        winner_held,
    )

    runs, summary, changed = repeat(exp, seeds, top, metric, data, log=log_console.print)
    if json_out:
        print(json.dumps({"experiment": exp.name, "runs": records(runs),
                          "summary": records(summary), "winner_changed": changed,
                          "winner_held": winner_held(summary, changed),
                          "comparison": summary.attrs.get("comparison"),
                          "verdict": verdict(summary, changed), "method": METHOD},
                         indent=1))
        return
    print_wide(rich_table(display_table(summary),
                          f"Repeats of {exp.label}: {seeds} new seed(s) per config",
                          f"mean ± std over seeds (± sd over val queries); written to "
                          f"{exp.path / 'repeats.csv'} and repeats.md"))
    for line in (noise_line(summary), f"method: {METHOD}", verdict(summary, changed)):
        console.print(line, highlight=False, soft_wrap=True)


def _load_experiment(name: str | None, storage: str | None):
    """An experiment by name (default: newest); from a bucket when storage is a URI."""
    from vpr_tune import analysis
    from vpr_tune.tune import storage as remote

    if remote.is_remote(storage):
        from vpr_tune.tune.results import experiment_dir

        name = name or remote.newest(storage)
        # a local copy in results/<name>, where a search run on this machine keeps it too
        exp = analysis.load_experiment(remote.pull(remote.join(storage, name),
                                                   experiment_dir(name, None)))
        # retest downloads checkpoints through the URI given now (its endpoint, if any)
        exp.space.setdefault("resolved", {})["storage"] = remote.join(storage, exp.name)
        return exp
    return analysis.load_experiment(name, storage)


def _push(exp, storage: str | None, names: tuple[str, ...]) -> None:
    """Copy what best/report wrote back next to a bucket experiment."""
    from vpr_tune.tune import storage as remote

    if remote.is_remote(storage):
        remote.push(exp.path, remote.join(storage, exp.name), names)



@app.command("compare")
def compare(
    names: Annotated[list[str], typer.Argument(help="Two or more experiments.")],
    metric: Annotated[str | None, typer.Option(help=METRIC_HELP)] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Write their best-so-far curves on one axis (PNG).")
    ] = None,
    storage: Annotated[str | None, typer.Option(help="Where experiments live.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Experiments side by side: cost, best val and retest recalls, differing settings."""
    import json

    from vpr_tune.atomic import check_output_file
    from vpr_tune.compare import (
        compare_table,
        compare_winners,
        comparison_lines,
        differing_hyperparameters,
        mismatch_lines,
        plot_best_so_far_overlay,
        protocol_mismatches,
    )
    from vpr_tune.noise import INTERVAL_NOTE, METHOD, display

    if len(names) < 2:
        raise UserError("compare needs at least two experiments")
    if plot is not None:  # before the tables: a typo in the path shows at once
        check_output_file(plot, "--plot", "compare.png")
    exps = [_load_experiment(n, storage) for n in names]
    table, diff = compare_table(exps, metric), differing_hyperparameters(exps, metric)
    pairs, mismatches = compare_winners(exps, metric), protocol_mismatches(exps)
    if json_out:
        print(json.dumps({"experiments": records(table), "differing": records(diff),
                          "separated": pairs[0]["separated"], "comparisons": pairs,
                          "protocol_mismatches": mismatches, "method": METHOD}, indent=1))
    else:
        print_wide(rich_table(display(table), "Experiments (best trial of each; R@N %)",
                              "trial_time_h: trial-seconds summed; wall_time_h: start to "
                              f"last table update; {INTERVAL_NOTE}"))
        for line in [*comparison_lines(pairs), *mismatch_lines(mismatches)]:
            console.print(line, highlight=False, soft_wrap=True)
        if diff.empty:
            console.print("Their best configs do not differ in any hyperparameter.",
                          highlight=False, soft_wrap=True)
        else:
            print_wide(rich_table(diff, "Where their best configs differ", ""))
    if plot is not None:
        path = plot_best_so_far_overlay(exps, plot, metric)
        (err_console if json_out else console).print(f"wrote {path}", highlight=False)


@app.command("report")
def report(
    name: Annotated[str | None, typer.Argument(help="Experiment (default: newest).")] = None,
    storage: Annotated[str | None, typer.Option(help="Where experiments live.")] = None,
    top: Annotated[int, typer.Option(min=1, help="Trials in the top table.")] = 5,
    metric: Annotated[str | None, typer.Option(help=METRIC_HELP)] = None,
) -> None:
    """Write report.md and PNG figures into results/<name>/report/."""
    from vpr_tune.report import write_report

    exp = _load_experiment(name, storage)
    path = write_report(exp, top=top, metric=metric)
    _push(exp, storage, (path.parent.name,))
    pngs = sorted(p.name for p in path.parent.glob("*.png"))
    console.print(f"wrote {path} and {len(pngs)} figures: {', '.join(pngs)}")


@app.command("bench")
def bench(
    name: Annotated[
        str, typer.Argument(help=" | ".join([*BENCHMARKS, "all"]))
    ],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    quick: Annotated[bool, typer.Option(help="Small sizes (for the test suite).")] = False,
    out: Annotated[Path, typer.Option(help="Folder for NAME.json.")] = Path("results/bench"),
    precision: Annotated[str, typer.Option(
        help="resources.precision of the benchmarks' searches: auto, fp32, bf16, fp16.")
    ] = "auto",
) -> None:
    """Benchmarks that print ratios against their bars; writes results/bench/NAME.json."""
    import json

    from vpr_tune.bench import resolve_names, results_table, run_benchmarks

    names = resolve_names(name)
    log = err_console.print if json_out else console.print  # keep --json stdout pure JSON
    results = run_benchmarks(names, quick=quick, out_dir=out, log=log, precision=precision)
    if json_out:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=1))
        return
    print_wide(results_table(results))
    console.print(f"wrote {', '.join(str(out / (r['name'] + '.json')) for r in results)}",
                  highlight=False, soft_wrap=True)

