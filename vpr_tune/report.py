"""``vpr-tune report``: the analysis figures as PNGs plus ``report.md``, for users who never
open Jupyter::

    from vpr_tune.analysis import load_experiment
    from vpr_tune.report import write_report

    path = write_report(load_experiment("demo"))   # results/demo/report/report.md
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from vpr_tune import analysis as va
from vpr_tune import plots
from vpr_tune.atomic import atomic_path, write_text
from vpr_tune.metrics import summary_column
from vpr_tune.noise import INTERVAL_NOTE, add_val_intervals, display, noise_lines
from vpr_tune.retest import SYNTHETIC_MD

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# file stem -> (section title, what to look for)
FIGURES = {
    "curves": ("Learning curves", "the ranking metric per epoch of every trial; x marks "
               "where ASHA stopped a trial, dashed lines are the rungs."),
    "best_so_far": ("Best so far", "the best value found against the trial-epochs spent."),
    "parallel": ("Parallel coordinates", "each line is a finished trial, coloured by the "
                 "ranking metric."),
    "by_category": ("By categorical hyperparameter", "one box per choice, every trial "
                    "drawn on top."),
    "lr_wd": ("Learning rate × weight decay", "each finished trial, coloured by the ranking "
              "metric."),
    "importance": ("Hyperparameter importance", "Optuna fANOVA on the trials table (sums to "
                   "1); with few trials it is a hint, not a finding."),
    "rung_spearman": ("Early epochs vs final ranking", "Spearman correlation of the ranking "
                      "at each epoch with the final one; high means early stopping is safe."),
    "pareto": ("Pareto front", "recall against descriptor size, coloured by query time; "
               "ringed trials are on the front, the step line is the front of these two axes."),
    "hypervolume": ("Hypervolume against trials", "how much of the objective space the front "
                    "covers after each trial (flat: new trials stopped improving the front)."),
    "intervals": ("How sure is each R@1?", "the top trials' R@1 with its 95 % bootstrap "
                  "interval over queries, on val and (after `best --retest`) each test set; "
                  "hollow markers: trials a paired bootstrap separates from that split's "
                  "winner, filled: the winner and the trials within noise of it."),
    "retest": ("Val vs test", "does the val ranking transfer to SF-XS test and Tokyo-XS?"),
    "val_vs_test": ("Val vs test, per config", "each retested config; Spearman in the legend."),
}


# PBT/PB2: what the figures show of a population whose trials copy each other's weights.
PBT_ABOUT = {
    "curves": "the ranking metric per epoch of every trial; the bold line is the best "
              "trial's lineage: each epoch as the trial whose weights it inherited ran it "
              "(PBT copies weights at each exploit and stops no trial early).",
    "parallel": "each line is a finished trial with its last configuration (PBT mutated it "
                "while training: the schedule is below), coloured by the ranking metric.",
    "lr_wd": "each finished trial with its last configuration (PBT mutated it while "
             "training), coloured by the ranking metric.",
    "by_category": "one box per choice of each trial's last configuration, every trial "
                   "drawn on top.",
}


def _about(stem: str, exp: va.Experiment) -> str:
    """What to look for in a figure of this experiment."""
    if exp.population_based and stem in PBT_ABOUT:
        return PBT_ABOUT[stem]
    about = FIGURES[stem][1]
    if stem == "curves" and not exp.rungs:
        about = ("the ranking metric per epoch of every trial; x marks a trial stopped "
                 "before the last epoch.")
    if stem == "hypervolume":
        with contextlib.suppress(ValueError, KeyError):
            about += " Measured from the " + plots.reference_words(
                exp, va.reference_point(exp)) + "."
    return about


def _save_png(fig, path: Path) -> None:
    """Save a figure atomically and close it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _pbt_section(exp: va.Experiment, best: str, out: Path) -> list[str]:
    """PBT/PB2: the lr of every trial per epoch with the exploits, and the winner's schedule."""
    from vpr_tune.tune.lineage import exploits, lineage, plot_lr_schedules, read_perturbations

    moves = read_perturbations(exp.path)
    if moves is None:
        return []
    _save_png(plot_lr_schedules(exp.path, best), out / "lr_schedule.png")
    n = len(exploits(moves))
    return ["### Learning rate per epoch (population-based training)", "",
            f"{n} exploit(s) in `perturbations.csv` (a trial copied another's weights and "
            f"mutated its hyperparameters; {len(moves)} changed value(s) in all); stars mark "
            "where an exploited trial starts training with its new lr; the black line is the "
            "best trial's lineage (the schedule it really trained with).", "",
            "![lr per epoch](lr_schedule.png)", "", f"Schedule of the best trial `{best}`:", "",
            va.markdown_table(lineage(exp.path, best)), ""]


def write_report(
    exp: va.Experiment, out_dir: Path | None = None, top: int = 5, metric: str | None = None
) -> Path:
    """Write ``report.md`` and one PNG per figure into ``out_dir`` (default
    ``<experiment>/report/``); trials ranked by ``metric`` (default: the search's) in its
    direction. Returns the path of ``report.md``."""
    metric = metric or exp.metric
    table = va.top_table(exp, top, metric)  # raises UserError when no trial finished
    out = Path(out_dir) if out_dir else exp.path / "report"
    figs, missing = _save_figures(exp, metric, out)
    best = va.ranked(exp, metric).iloc[0]
    lines = [*_summary_lines(exp, metric), *_best_lines(exp, metric, best),
             *_table_lines(exp, metric, table), *_figure_lines(exp, figs, missing),
             *_pbt_section(exp, str(best["trial_id"]), out)]
    path = out / "report.md"
    write_text(path, "\n".join(lines))
    return path


def _save_figures(exp: va.Experiment, metric: str, out: Path
                  ) -> tuple[dict[str, Figure], dict[str, str]]:
    """Draw the report's figures into ``out`` as PNGs; (drawn figures, {stem: why absent})."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window
    out.mkdir(parents=True, exist_ok=True)
    figs, missing = plots.figure_set(exp, metric)
    for stem, fig in figs.items():
        _save_png(fig, out / f"{stem}.png")
    for stem in missing:  # an earlier report's picture would no longer be true
        (out / f"{stem}.png").unlink(missing_ok=True)
    return figs, missing


def _summary_lines(exp: va.Experiment, metric: str) -> list[str]:
    """The title and what the search was: trials by status, trial-epochs, what varied."""
    status = exp.trials["status"].astype(str).value_counts()
    lines = [f"# Search report: {exp.name}", ""]
    if exp.synthetic:
        lines += [SYNTHETIC_MD, ""]
    return [
        *lines,
        f"- experiment: `{exp.path}`",
        f"- trials: {len(exp.trials)} ("
        + ", ".join(f"{n} {s}" for s, n in status.items()) + f"); ranked by best {metric}",
        f"- trial-epochs spent: {exp.trial_epochs}"
        + (f" (metrics.csv keeps {len(exp.curves)}: the last run of each trial-epoch; PBT "
           "restored some trials from older checkpoints)"
           if exp.trial_epochs != len(exp.curves) and exp.population_based else ""),
        f"- hyperparameters that vary: {', '.join(f'`{c}`' for c in exp.varying) or 'none'}",
        "",
    ]


def _best_lines(exp: va.Experiment, metric: str, best: pd.Series) -> list[str]:
    """The best trial: its values, every hyperparameter it ran with, its checkpoint."""
    lines = [
        "## Best configuration",
        "",
        f"Trial `{best['trial_id']}`: best {metric} {_fmt(best.get(summary_column(metric)))}"
        f" (val R@1 {_fmt(best.get('best_val/R@1'))}, val R@5 {_fmt(best.get('best_val/R@5'))})"
        f" after {_fmt(best.get('epochs'))} epochs.",
        "",
    ]
    lines += [f"- `{c}`: {_fmt(best[c])}" for c in exp.hyperparameters if pd.notna(best[c])]
    if isinstance(best.get("checkpoint"), str):
        lines += ["", f"Checkpoint: `{best['checkpoint']}`"]
    return lines


def _table_lines(exp: va.Experiment, metric: str, table: pd.DataFrame) -> list[str]:
    """The tables: the top trials with intervals, the Pareto front, the retest, the rungs."""
    table = add_val_intervals(table, exp, metric)
    lines = ["", f"## Top {len(table)} trials", "", f"R@N in percent; {INTERVAL_NOTE}.", "",
             va.markdown_table(display(table)), "", *(f"- {x}" for x in noise_lines(table)),
             ""]
    if exp.multi_objective:
        front = va.front_table(exp)
        lines += [f"## Pareto front ({len(front)} trials)", "",
                  "Objectives: " + ", ".join(f"{m} ({mode})" for m, mode in exp.objectives)
                  + "; no finished trial is at least as good on all of them and better on "
                  "one.", "", va.markdown_table(front), ""]
    if exp.retest is not None and not exp.retest.empty:
        lines += ["## Retest on the test sets (R@N %, 25 m rule)", "",
                  f"{INTERVAL_NOTE}; `within_noise`: not separated from the winner of that "
                  "split by a paired bootstrap over its queries.", "",
                  va.markdown_table(display(exp.retest)), "",
                  "Spearman correlation of val R@1 with each test set's R@1 across these "
                  "configs (does the val ranking transfer?):", "",
                  va.markdown_table(va.rank_transfer(exp.retest)), ""]
    else:
        lines += ["No retest yet: `vpr-tune best --retest` adds SF-XS test and Tokyo-XS.", ""]
    rungs = va.rung_spearman_table(exp.finished_curves, metric).dropna()
    if not rungs.empty and not exp.population_based:  # PBT: early epochs of other lineages
        lines += ["## Do early epochs predict the final ranking?", "",
                  "Spearman correlation between the ranking at an epoch and the final one "
                  "(trials that trained past that epoch).", "",
                  va.markdown_table(rungs), ""]
    return lines


def _figure_lines(exp: va.Experiment, figs: dict[str, Figure], missing: dict[str, str]
                  ) -> list[str]:
    """One section per figure in :data:`FIGURES` order: the picture, or why it is absent."""
    lines = ["## Figures", ""]
    for stem in FIGURES:
        title, about = FIGURES[stem][0], _about(stem, exp)
        if stem in figs:
            lines += [f"### {title}", "", about, "", f"![{title}]({stem}.png)", ""]
        elif stem in missing:
            lines += [f"### {title}", "", f"Not drawn: {missing[stem]}.", ""]
    return lines
