"""The ``vpr-tune`` command line.

Each command is a thin shell: it parses options, calls the module that does the work, and
prints with rich. Heavy imports (torch, ray) happen inside the commands so ``--help`` is fast.
A :class:`~vpr_tune.errors.UserError` anywhere becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from vpr_tune import __version__
from vpr_tune.bench import BENCHMARKS
from vpr_tune.errors import UserError
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


# ---------------------------------------------------------------------------------- data
class _Bar:
    """A rich progress bar (done/total, rate, time left) behind a ``progress(done, total)``
    callback of the library."""

    def __init__(self, what: str) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(),
                            TaskProgressColumn(), TextColumn("{task.fields[rate]}"),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=console)
        self.console = self.bar.console
        self.task: Any = None
        self.start = 0.0

    def callback(self, done: int, total: int) -> None:
        import time

        if self.task is None:
            self.start = time.perf_counter()
            self.task = self.bar.add_task("", total=total, rate="")
        elapsed = time.perf_counter() - self.start
        rate = f"{done / elapsed:,.0f} img/s" if elapsed > 0 and done else ""
        self.bar.update(self.task, completed=done, total=total, rate=rate)


@contextlib.contextmanager
def _progress_bar(what: str) -> Iterator[_Bar]:
    bar = _Bar(what)
    with bar.bar:
        yield bar


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Argument(help="Folder to write street-world into.")],
    size: Annotated[str, typer.Option(help="tiny | demo | bench | full")] = "demo",
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 0,
    preview: Annotated[
        bool, typer.Option(help="Also write preview.png: queries beside their positives.")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(min=1,
                     help="Processes (default: all cores for full, 1 otherwise); same bytes."),
    ] = None,
) -> None:
    """Write the street-world synthetic dataset in the real GSV-XS/SF-XS/Tokyo-XS format."""
    from vpr_tune.data.preview import make_preview
    from vpr_tune.data.street_world import synthesize

    with _progress_bar("street-world images") as progress:
        root = synthesize(out, size=size, seed=seed, log=progress.console.print,
                          workers=workers, progress=progress.callback)
    console.print(f"street-world ({size}, seed {seed}) is SYNTHETIC data, written to {root}")
    if preview:
        png = make_preview(root, root / "preview.png")
        console.print(f"preview (queries beside their nearest database positives): {png}")


@data_app.command("check")
def data_check(
    path: Annotated[Path, typer.Argument(help="A data root or one split folder.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    skip_bad_files: Annotated[
        bool, typer.Option(help="Warn about corrupt images and skip them instead of failing.")
    ] = False,
    decode: Annotated[
        bool, typer.Option(help="Decode every image (thorough, slow) instead of a quick scan.")
    ] = False,
) -> None:
    """Scan a data root or split: images/places (train), database/queries/positives (eval)."""
    import json

    from rich.table import Table

    from vpr_tune.data.splits import check_data

    info = check_data(path, skip_bad_files=skip_bad_files, decode=decode)
    if json_out:
        print(json.dumps(info, indent=1))
        return
    synthetic = any(v.get("synthetic") for v in info.values())
    table = Table(title=f"{path}" + (" (synthetic street-world)" if synthetic else ""))
    for col in ("split", "images", "places", "database", "queries", "no positive"):
        table.add_column(col, justify="left" if col == "split" else "right", no_wrap=True)
    for rel, v in info.items():
        row = [v.get(k, "") for k in ("images", "places", "database", "queries")]
        row.append(v.get("queries_without_positive", ""))
        table.add_row(rel, *(str(x) for x in row))
    console.print(table)
    for rel, v in info.items():
        console.print(f"{rel}: {v['path']}", highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- train / eval
@app.command("train")
def train(
    config: Annotated[Path, typer.Argument(help="YAML with fixed values (search-space schema).")],
    data: Annotated[str | None, typer.Option(help="Data root (default: street-world).")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run folder (default results/train/<name>).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.pt.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Start over in an existing run folder.")] = False,
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU threads for torch (default: all cores).")
    ] = None,
) -> None:
    """Train one model with fixed hyperparameters; writes metrics.csv, TensorBoard, checkpoints."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from vpr_tune.data.splits import is_synthetic, resolve_data_root
    from vpr_tune.metrics import RECALL_NS, best_index, mode_of
    from vpr_tune.train import load_train_config, train_run

    cfg = load_train_config(config)
    if data is not None:
        cfg["data"]["root"] = data
    cfg["name"] = cfg.get("name") or config.stem
    run_dir = out or Path("results") / "train" / cfg["name"]
    if (run_dir / "last.pt").exists() and not (resume or overwrite):
        raise UserError(f"{run_dir} already holds a run; pass --resume to continue it, "
                        "--overwrite to start over, or --out for another folder")
    root = resolve_data_root(cfg["data"]["root"], cfg["data"].get("synth_size", "demo"),
                             log=console.print)
    synthetic = " (street-world synthetic data)" if is_synthetic(root) else ""
    console.print(f"data: {root}{synthetic}", highlight=False)
    console.print(f"run folder: {run_dir}", highlight=False)
    budget = cfg["budget"]
    progress = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total} batches"),
                        TextColumn("loss {task.fields[loss]}"),
                        TimeRemainingColumn(), console=console, transient=True)
    task = progress.add_task("train", total=int(budget["batches_per_epoch"]), epoch=1, loss="-")

    def on_batch(batch: int, loss: float) -> None:
        progress.update(task, completed=batch + 1, loss=f"{loss:.4f}")

    def on_epoch(row: dict) -> None:
        loss = row["train/loss"]
        loss = f"{float(loss):.4f}" if loss not in ("", None) else "-"
        recalls = " ".join(f"{float(row[f'val/R@{n}']):5.1f}" for n in RECALL_NS)
        progress.console.print(
            f"epoch {int(row['epoch']):>3}  loss {loss:>7}  lr {float(row['lr']):.1e}  "
            f"val R@{'/'.join(map(str, RECALL_NS))} {recalls}  {float(row['time_s']):.0f}s",
            highlight=False, soft_wrap=True)
        progress.reset(task, total=int(budget["batches_per_epoch"]),
                       epoch=int(row["epoch"]) + 1, loss="-")

    with progress:
        rows = train_run(cfg, root, run_dir, resume=resume, num_threads=threads,
                         log=progress.console.print, on_epoch=on_epoch, on_batch=on_batch)
    metric = cfg["search"]["metric"]  # best.pt follows the search metric and its mode
    best = rows[best_index([r.get(metric) for r in rows], mode_of(cfg["search"])) or 0]
    console.print(f"best {metric} {float(best[metric] or 'nan'):.4g} at epoch {best['epoch']}; "
                  f"wrote {run_dir}/ (metrics.csv, best.pt, last.pt, TensorBoard events)",
                  highlight=False)


@app.command("eval")
def evaluate(
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint written by train or run.")],
    data: Annotated[str, typer.Option(help="An eval split folder or a data root.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    save_preds: Annotated[
        int, typer.Option(min=0, help="Write predictions.csv with the top N and pictures.")
    ] = 0,
    only_wrong: Annotated[bool, typer.Option(help="Pictures only for wrong queries.")] = False,
    split: Annotated[
        str, typer.Option(help="Split under a data root: sf_xs/val, sf_xs/test, tokyo_xs/test.")
    ] = "sf_xs/val",
    preds_dir: Annotated[
        Path | None,
        typer.Option(help="Where predictions.csv goes (default: next to the checkpoint)."),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Images per forward pass.")] = None,
) -> None:
    """Recall@1/5/10/25 of a checkpoint on an eval split (25 m rule)."""
    import json

    import torch
    from rich.table import Table

    from vpr_tune.checkpoint import load_model_from_checkpoint
    from vpr_tune.config import normalize_config
    from vpr_tune.data.splits import is_synthetic, load_eval_split
    from vpr_tune.evaluate import evaluate_split, save_predictions
    from vpr_tune.metrics import RECALLS

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, cfg = load_model_from_checkpoint(checkpoint, device)
    cfg = normalize_config(cfg)
    path = Path(data).expanduser()
    if not path.exists():
        raise UserError(f"--data {path} does not exist")
    eval_split = load_eval_split(path, rel=split)
    image_size = cfg["data"]["image_size"]
    metrics, preds = evaluate_split(
        model, eval_split, image_size, int(batch_size or cfg["budget"]["eval_batch_size"]),
        device, cache=bool(cfg["data"].get("cache", True)))
    metrics["synthetic"] = is_synthetic(eval_split.root)
    if save_preds > 0:
        slug = f"{eval_split.root.parent.name}-{eval_split.root.name}".lower()
        where = preds_dir or checkpoint.parent / f"eval-{slug}"
        metrics["predictions"] = str(save_predictions(eval_split, preds, where, save_preds,
                                                      only_wrong=only_wrong))
    if json_out:
        print(json.dumps(metrics))
        return
    table = Table(title=f"{eval_split.root}" + (" (synthetic)" if metrics["synthetic"] else ""))
    for r in RECALLS:
        table.add_column(r, justify="right")
    table.add_column("queries", justify="right")
    table.add_column("database", justify="right")
    table.add_column("no positive", justify="right")
    table.add_row(*[f"{metrics[r]:.1f}" for r in RECALLS],
                  str(metrics["queries"]), str(metrics["database"]),
                  str(metrics["queries_without_positive"]))
    console.print(table)
    if "predictions" in metrics:
        console.print(f"predictions: {metrics['predictions']} (pictures in preds/)",
                      highlight=False)


# ------------------------------------------------------------------------------ search
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
                   warm_start=warm_start, log=log, mlflow=mlflow)


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
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Check this machine before a search: packages, GPUs, precision, weights, data, disk."""
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

    checks = run_checks(Context(space_path=space, data=data, decode=decode), on_check=show)
    if json_out:
        print(json.dumps(as_json(checks), indent=1))
    raise typer.Exit(exit_code(checks))


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
    import json

    from vpr_tune import analysis

    exp = _load_experiment(name, storage)
    front = exp.multi_objective and metric is None  # --metric ranks by one objective
    metric = metric or exp.metric
    log_console = err_console if json_out else console  # keep --json stdout pure JSON
    if export is not None or save_preds:
        _best_trial_outputs(exp, export, trial, save_preds, data, metric, log_console)
        return
    top_n = _parse_top(top, exp, 3 if repeat else 5)
    if repeat:
        _best_repeat(exp, repeat, top_n, metric, data, json_out, log_console)
        return
    table = analysis.front_table(exp) if front else analysis.top_table(exp, top_n, metric)
    retested = None
    if retest:
        from vpr_tune.retest import retest as run_retest

        retested = run_retest(exp, top_n, metric, data, force, log=log_console.print,
                              front=front)
        _push(exp, storage, ("retest.csv", "retest.md"))
    objectives = ", ".join(f"{m} ({mode})" for m, mode in exp.objectives)
    from vpr_tune.tune.lineage import lineage, read_perturbations

    schedule = None  # PBT/PB2: the hyperparameters the winner trained with, per epoch
    if read_perturbations(exp.path) is not None and len(table):
        schedule = lineage(exp.path, str(table["trial_id"].iloc[0]))
    if json_out:
        out = {"experiment": exp.name, "path": str(exp.path), "synthetic": exp.synthetic,
               "metric": metric, "varying": exp.varying, "trials": _records(table)}
        if front:
            out["objectives"] = [{"metric": m, "mode": mode} for m, mode in exp.objectives]
            out["pareto_front"] = True
        if retested is not None:
            out["retest"] = _records(retested)
            out["test_sets"] = retested.attrs.get("test_sets", {})
            out["transfer"] = _records(analysis.rank_transfer(retested))
        if schedule is not None:
            out["schedule"] = _records(schedule)
        print(json.dumps(out, indent=1))
        return
    if front:
        unfinished = int(exp.trials["status"].isin(["ERROR", "DIVERGED", "PENDING"]).sum())
        caption = (f"{len(table)} of {len(exp.trials)} trials on the front ({unfinished} "
                   f"failed, diverged or unstarted); --metric M ranks by one objective")
        title = f"Pareto front of {exp.label}: {objectives}"
    else:
        failed = len(exp.trials) - len(analysis.ranked(exp, metric))
        caption = f"{len(exp.trials)} trials, {failed} not ranked (failed, diverged or unfinished)"
        title = f"Best trials of {exp.label} by {metric}"
    if retested is None:
        _print_wide(_rich_table(table, title, caption))
    else:  # the retest table holds every column of the best table but epochs
        from vpr_tune.retest import transfer_lines

        _print_wide(_rich_table(retested, f"Retest of {exp.label} (R@N %, 25 m rule)",
                                f"{caption}; written to {exp.path / 'retest.csv'} and .md"))
        for line in transfer_lines(retested):
            console.print(line, highlight=False, soft_wrap=True)
    if schedule is not None:
        _print_wide(_rich_table(schedule, f"Schedule of {table['trial_id'].iloc[0]} (PBT "
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


def _best_trial_outputs(exp, export, trial, save_preds, data, metric, log_console) -> None:
    """``best --export FILE`` and ``best --save-preds N`` for one trial (default: the best)."""
    if export is not None:
        from vpr_tune.export import export_trial

        path, cfg = export_trial(exp, export, trial, metric)
        log_console.print(f"wrote {path}: trial {cfg['name'].rpartition('-')[2]} of "
                          f"{exp.name} as a train config; reproduce it with\n"
                          f"  vpr-tune train {path}", highlight=False, soft_wrap=True)
    if save_preds:
        from vpr_tune.preds import save_trial_predictions

        written = save_trial_predictions(
            exp, save_preds, trial, data, metric,
            log=lambda m: log_console.print(m, highlight=False, soft_wrap=True))
        log_console.print(f"wrote predictions.csv and pictures for {', '.join(written)} under "
                          f"{next(iter(written.values())).parent.parent}", highlight=False,
                          soft_wrap=True)


def _best_repeat(exp, seeds, top, metric, data, json_out, log_console) -> None:
    """``best --repeat N``: the top configs retrained with N new seeds, mean ± std."""
    import json

    from vpr_tune.repeats import display_table, repeat, verdict

    runs, summary, changed = repeat(exp, seeds, top, metric, data, log=log_console.print)
    if json_out:
        print(json.dumps({"experiment": exp.name, "runs": _records(runs),
                          "summary": _records(summary), "winner_changed": changed}, indent=1))
        return
    _print_wide(_rich_table(display_table(summary),
                            f"Repeats of {exp.label}: {seeds} new seed(s) per config",
                            f"mean ± std over seeds; written to {exp.path / 'repeats.csv'} "
                            "and repeats.md"))
    console.print(verdict(summary, changed), highlight=False, soft_wrap=True)


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

    from vpr_tune.compare import compare_table, differing_hyperparameters, plot_best_so_far

    if len(names) < 2:
        raise UserError("compare needs at least two experiments")
    exps = [_load_experiment(n, storage) for n in names]
    table, diff = compare_table(exps, metric), differing_hyperparameters(exps, metric)
    if json_out:
        print(json.dumps({"experiments": _records(table), "differing": _records(diff)},
                         indent=1))
    else:
        _print_wide(_rich_table(table, "Experiments (best trial of each; R@N %)",
                                "trial_time_h: trial-seconds summed; wall_time_h: start to "
                                "last table update"))
        _print_wide(_rich_table(diff, "Where their best configs differ", ""))
    if plot is not None:
        path = plot_best_so_far(exps, plot, metric)
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
) -> None:
    """Benchmarks that print ratios against their bars; writes results/bench/NAME.json."""
    import json

    from vpr_tune.bench import resolve_names, results_table, run_benchmarks

    names = resolve_names(name)
    log = err_console.print if json_out else console.print  # keep --json stdout pure JSON
    results = run_benchmarks(names, quick=quick, out_dir=out, log=log)
    if json_out:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=1))
        return
    _print_wide(results_table(results))
    console.print(f"wrote {', '.join(str(out / (r['name'] + '.json')) for r in results)}",
                  highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------------- entry
def _click_usage_errors() -> tuple[type[Exception], ...]:
    """Click's UsageError: typer >= 0.20 vendors click as ``typer._click``."""
    errors: list[type[Exception]] = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        with contextlib.suppress(ImportError):
            errors.append(__import__(module, fromlist=["UsageError"]).UsageError)
    return tuple(errors)


_CLICK_ERRORS = _click_usage_errors()


def _print_error(message: str) -> None:
    """``error: MESSAGE`` on stderr, the message printed literally (never read as markup)."""
    from rich.text import Text

    err_console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False,
                      soft_wrap=True)


@contextlib.contextmanager
def _one_line_warnings():
    """Our own warnings (a skipped corrupt image) as one ``warning: ...`` line each, not
    Python's file:line + source-code format; other libraries' warnings are left alone."""
    import warnings

    default = warnings.formatwarning

    def short(message, category, filename, lineno, line=None) -> str:
        if "vpr_tune" in str(filename):
            return f"warning: {message}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = short
    try:
        yield
    finally:
        warnings.formatwarning = default


def main(argv: list[str] | None = None) -> int:
    """Console-script entry: user errors -> one line and exit 2 (``--debug`` for traceback)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    command = typer.main.get_command(app)
    try:
        with _one_line_warnings():
            rc = command.main(args=args, prog_name="vpr-tune", standalone_mode=False)
    except UserError as exc:
        if debug:
            raise
        _print_error(str(exc))
        return exc.exit_code
    except _CLICK_ERRORS as exc:  # bad command line: unknown command/option, bad value
        if debug:
            raise
        _print_error(exc.format_message())
        return 2
    except typer.Exit as exc:  # a command's own exit status (doctor: 2 when a check fails)
        return int(exc.exit_code or 0)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("interrupted")
        return 130
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
