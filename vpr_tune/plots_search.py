"""The figures of how a search went (matplotlib): learning curves, the cost curve, the
hyperparameters against the metric, their importance, and whether early epochs predict the
final ranking. Also the conventions every figure of :mod:`vpr_tune.plots` follows: a title
naming the experiment, a legend outside the axes, and an empty figure that says why
(:func:`absent`).

Every ``plot_*`` takes an :class:`~vpr_tune.analysis.Experiment` and returns a Figure;
``metric`` defaults to the search's metric and "best" follows its direction. Notebooks and
scripts reach these through :mod:`vpr_tune.plots` (``vp.plot_curves(exp)``), which adds the
figures of the results (retest, intervals, Pareto front) and the report's set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from vpr_tune import statuses
from vpr_tune.analysis import (
    Experiment,
    best_so_far,
    categorical_varying,
    failed_trials,
    importance,
    ranked,
    rung_spearman_table,
)
from vpr_tune.metrics import summary_column

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _unit(metric: str) -> str:
    """Axis label suffix: recalls are percentages, a loss has no unit."""
    return " (%)" if "R@" in metric else ""


def _plt():
    # No matplotlib.use() here: a notebook's inline backend must stay; headless scripts get
    # matplotlib's own fallback (Agg), and `vpr-tune report` selects Agg itself.
    import matplotlib.pyplot as plt

    return plt


def _title(fig: Figure, exp: Experiment, what: str) -> None:
    fig.suptitle(f"{what}\n{exp.label}", fontsize=11)


# The attribute an empty figure carries: why it has nothing to show (see ``absent``).
ABSENT = "vpr_tune_absent"


def _message(ax: Any, text: str) -> None:
    """Write why the figure is empty in its middle, and mark the figure so (``absent``):
    ``figures`` and the report leave such a figure out and say why instead."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    setattr(ax.figure, ABSENT, text)


def _legend_outside(ax: Any) -> None:
    """The legend right of the axes, where it covers no curve or point."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


def absent(fig: Figure) -> str | None:
    """Why ``fig`` has nothing to show (the message drawn in it), None when it has."""
    return getattr(fig, ABSENT, None)


def plot_curves(exp: Experiment, metric: str | None = None) -> Figure:
    """The metric per epoch for every trial (the best one bold); x marks where ASHA stopped a
    trial, dashed lines are the rungs, red crosses are failed/diverged trials."""
    metric = metric or exp.metric
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.8), layout="constrained")
    curves = exp.curves.dropna(subset=[metric])
    if curves.empty:
        _message(ax, "no epochs reported yet")
        return fig
    from matplotlib.ticker import MaxNLocator

    max_epoch = int(curves["epoch"].max())
    status = exp.trials.set_index("trial_id")["status"].astype(str).str.upper()
    best_id = None
    with_metric = ranked(exp, metric) if summary_column(metric) in exp.trials else None
    if with_metric is not None and len(with_metric):
        best_id = with_metric["trial_id"].iloc[0]
    for rung in exp.rungs:
        ax.axvline(rung, color="grey", ls="--", lw=0.8, alpha=0.7)
    stopped_label = failed_label = True
    pbt = exp.population_based
    for trial_id, group in curves.groupby("trial_id", sort=False):
        group = group.sort_values("epoch")
        is_best = trial_id == best_id and not pbt  # PBT: the best is its lineage, below
        ax.plot(group["epoch"], group[metric], marker="o", ms=3,
                lw=2.5 if is_best else 1.0, alpha=1.0 if is_best else 0.6,
                label=f"best: {trial_id}" if is_best else None, zorder=3 if is_best else 2)
        last = group.iloc[-1]
        if status.get(trial_id, "") in statuses.FAILED:
            ax.plot(last["epoch"], last[metric], "X", color="red", ms=9,
                    label="failed / diverged" if failed_label else None)
            failed_label = False
        elif last["epoch"] < max_epoch and not pbt:
            ax.plot(last["epoch"], last[metric], "x", color="black", ms=7,
                    label=f"stopped early ({_scheduler_name(exp)})" if stopped_label else None)
            stopped_label = False
    if pbt and best_id is not None:
        path = lineage_curve(exp, str(best_id), metric)
        ax.plot(path["epoch"], path[metric], color="black", lw=2.5, marker="o", ms=3, zorder=3,
                label=f"best: {best_id}, its lineage")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{metric}{_unit(metric)}")
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    what = (" (PBT: bold = the best trial's lineage, the epochs its weights came from)"
            if pbt else f" (ASHA rungs at {exp.rungs})" if exp.rungs else "")
    _title(fig, exp, f"{metric} per epoch, {curves['trial_id'].nunique()} trials{what}")
    return fig


def _scheduler_name(exp: Experiment) -> str:
    scheduler = exp.search.get("scheduler") if exp.search else None
    return {"asha": "ASHA", "mo_asha": "MO-ASHA", "moasha": "MO-ASHA"}.get(
        str(scheduler), str(scheduler or "ASHA"))


def lineage_curve(exp: Experiment, trial_id: str, metric: str) -> pd.DataFrame:
    """``epoch``, ``ran_in`` and ``metric`` along ``trial_id``'s PBT lineage: each epoch as
    the trial whose weights it inherited ran it (:func:`vpr_tune.tune.lineage.lineage`)."""
    from vpr_tune.tune.lineage import lineage

    path = lineage(exp.path, trial_id)[["epoch", "ran_in"]]
    values = exp.curves.set_index(["trial_id", "epoch"])[metric]
    path[metric] = [values.get((r, e)) for e, r in zip(path["epoch"], path["ran_in"],
                                                       strict=True)]
    return path.dropna(subset=[metric])


def plot_best_so_far(exp: Experiment, metric: str | None = None) -> Figure:
    """Best metric found so far against trial-epochs spent (the search's cost curve)."""
    metric = metric or exp.metric
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    frame = best_so_far(exp.reported, metric, exclude=failed_trials(exp),
                        mode=exp.mode_for(metric))
    if frame.empty:
        _message(ax, "no epochs reported yet")
        return fig
    ax.scatter(frame["trial_epochs"], frame[metric], s=12, alpha=0.5,
               label="each trial-epoch (failed trials not shown)")
    ax.step(frame["trial_epochs"], frame["best"], where="post", lw=2, color="C3",
            label="best so far")
    ax.set_xlabel("trial-epochs spent")
    ax.set_ylabel(f"{metric}{_unit(metric)}")
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    _title(fig, exp, "Best so far vs compute spent")
    return fig


def _axis_values(values: pd.Series) -> tuple[np.ndarray, list[float], list[str]]:
    """Map one column onto [0, 1] for parallel coordinates; returns positions + ticks."""
    clean = values.dropna()
    numeric = pd.api.types.is_numeric_dtype(clean) and not pd.api.types.is_bool_dtype(clean)
    if not numeric or clean.nunique() <= 1:
        cats = sorted(clean.astype(str).unique())
        pos = {c: (i / (len(cats) - 1) if len(cats) > 1 else 0.5) for i, c in enumerate(cats)}
        mapped = values.map(lambda v: pos.get(str(v), np.nan) if pd.notna(v) else np.nan)
        return mapped.to_numpy(dtype=float), list(pos.values()), cats
    low, high = float(clean.min()), float(clean.max())
    log = low > 0 and high / low >= 20
    f = np.log10 if log else (lambda x: x)
    span = (f(high) - f(low)) or 1.0
    mapped = (f(values.astype(float)) - f(low)) / span
    return mapped.to_numpy(dtype=float), [0.0, 1.0], [f"{low:.3g}", f"{high:.3g}"]


def plot_parallel(exp: Experiment, metric: str | None = None) -> Figure:
    """Parallel coordinates: one line per finished trial across the varying hyperparameters
    and the metric, coloured by the metric (log axes for wide positive ranges)."""
    metric = metric or exp.metric
    plt = _plt()
    frame = ranked(exp, metric)
    column = summary_column(metric)
    axes_cols = [*exp.varying, column]
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(axes_cols)), 4.6), layout="constrained")
    if frame.empty or not exp.varying:
        _message(ax, "no finished trials" if frame.empty else "no hyperparameter varies")
        return fig
    cmap = plt.get_cmap("viridis")
    score = frame[column].astype(float)
    norm = plt.Normalize(score.min(), score.max() if score.max() > score.min() else score.min() + 1)
    mapped = {}
    for i, col in enumerate(axes_cols):
        pos, ticks, labels = _axis_values(frame[col])
        mapped[col] = pos
        ax.axvline(i, color="black", lw=0.8)
        for t, lab in zip(ticks, labels, strict=True):
            ax.text(i + 0.03, t, lab, fontsize=7, va="center")
    xs = np.arange(len(axes_cols))
    for r in range(len(frame)):
        ys = np.array([mapped[c][r] for c in axes_cols])
        ax.plot(xs, ys, color=cmap(norm(score.iloc[r])), alpha=0.8, lw=1.5, marker="o", ms=3)
    ax.set_xticks(xs, [c.replace(".", ".\n", 1) for c in axes_cols], fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(axes_cols) - 0.5)
    ax.set_ylim(-0.08, 1.08)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax,
                 label=f"{column}{_unit(column)}")
    _title(fig, exp, "Hyperparameters vs " + column)
    return fig


def plot_by_category(exp: Experiment, metric: str | None = None) -> Figure:
    """The metric by each categorical hyperparameter (optimizer, scheduler, loss, aggregator, ...):
    box plot with every trial drawn on top."""
    metric = metric or exp.metric
    plt = _plt()
    cols = categorical_varying(exp)
    frame = ranked(exp, metric)
    column = summary_column(metric)
    fig, axes = plt.subplots(1, max(1, len(cols)), figsize=(max(5, 3.6 * len(cols)), 4.2),
                             layout="constrained", squeeze=False)
    if not cols or frame.empty:
        _message(axes[0, 0], "no categorical hyperparameter varies" if not cols
                 else "no finished trials")
        return fig
    rng = np.random.default_rng(0)  # fixed jitter: the same figure every time
    for ax, col in zip(axes[0], cols, strict=True):
        cats = sorted(frame[col].dropna().astype(str).unique())
        groups = [frame.loc[frame[col].astype(str) == c, column].astype(float) for c in cats]
        ax.boxplot(groups, tick_labels=cats, showfliers=False)
        for i, g in enumerate(groups, start=1):
            ax.scatter(i + rng.uniform(-0.12, 0.12, len(g)), g, s=18, alpha=0.8, zorder=3)
        ax.set_title(col, fontsize=10)
        ax.set_ylabel(f"{column}{_unit(column)}")
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
        ax.grid(alpha=0.3, axis="y")
    _title(fig, exp, f"{column} by categorical hyperparameter")
    return fig


def plot_lr_wd(exp: Experiment, metric: str | None = None, x: str = "optimizer.lr",
               y: str = "optimizer.weight_decay") -> Figure:
    """Learning rate vs weight decay (log axes), each finished trial coloured by the metric."""
    metric = metric or exp.metric
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.8), layout="constrained")
    frame = ranked(exp, metric)
    column = summary_column(metric)
    missing = [c for c in (x, y) if c not in frame.columns]
    if frame.empty or missing:
        _message(ax, f"no column {', '.join(missing)}" if missing else "no finished trials")
        return fig
    sc = ax.scatter(frame[x], frame[y], c=frame[column], cmap="viridis", s=60,
                    edgecolors="black", linewidths=0.5)
    for _, row in frame.head(3).iterrows():
        ax.annotate(f"#{row['rank']}", (row[x], row[y]), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)
    for axis, col in (("x", x), ("y", y)):
        vals = frame[col].dropna().astype(float)
        if len(vals) and vals.min() > 0 and vals.max() / vals.min() >= 20:
            getattr(ax, f"set_{axis}scale")("log")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    fig.colorbar(sc, ax=ax, label=f"{column}{_unit(column)}")
    _title(fig, exp, f"{x} × {y}")
    return fig


def plot_importance(exp: Experiment, metric: str | None = None) -> Figure:
    """Hyperparameter importance (Optuna fANOVA on the trials table) as horizontal bars."""
    metric = metric or exp.metric
    plt = _plt()
    if exp.population_based:
        fig, ax = plt.subplots(figsize=(7.5, 2.5), layout="constrained")
        _message(ax, "PBT mutates hyperparameters while training: a trial's value comes from "
                 "a lineage of configurations, not from the one trials.csv lists")
        return fig
    scores = importance(exp.trials, metric, space=exp.space)
    fig, ax = plt.subplots(figsize=(7.5, max(2.5, 0.5 * len(scores) + 1.5)), layout="constrained")
    if scores.empty:
        _message(ax, "too few finished trials, no varying hyperparameter, or a constant metric")
        return fig
    order = scores.sort_values()
    ax.barh(order.index, order.to_numpy(), color="C0")
    for i, v in enumerate(order.to_numpy()):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=8)
    ax.set_xlabel("importance (fANOVA, sums to 1)")
    ax.set_xlim(0, max(1.0, float(order.max()) * 1.15))
    _title(fig, exp, f"Hyperparameter importance for {summary_column(metric)}")
    return fig


def plot_rung_spearman(exp: Experiment, metric: str | None = None) -> Figure:
    """Spearman correlation of the ranking at each epoch with the final ranking (finished
    trials that trained past that epoch); high values mean early stopping is safe."""
    metric = metric or exp.metric
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    if exp.population_based:
        _message(ax, "PBT: a trial's early epochs may belong to another lineage than its "
                 "final value, and nothing is stopped early")
        return fig
    table = rung_spearman_table(exp.finished_curves, metric)
    if table["spearman"].notna().sum() == 0:
        _message(ax, "too few trials trained past an early epoch (need 3)")
        return fig
    ax.plot(table["rung_epoch"], table["spearman"], marker="o")
    for _, row in table.dropna().iterrows():
        ax.annotate(f"n={int(row['n_trials'])}", (row["rung_epoch"], row["spearman"]),
                    textcoords="offset points", xytext=(4, -12), fontsize=8)
    for rung in exp.rungs:
        ax.axvline(rung, color="grey", ls="--", lw=0.8, alpha=0.7)
    ax.axhline(0, color="black", lw=0.6)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("epoch (dashed: ASHA rungs)" if exp.rungs else "epoch")
    ax.set_ylabel("Spearman vs final ranking")
    ax.grid(alpha=0.3)
    _title(fig, exp, "Does an early epoch predict the final ranking?")
    return fig
