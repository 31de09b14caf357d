"""The figures of an experiment (matplotlib): what the notebooks and ``vpr-tune report`` show.

Every ``plot_*`` takes an :class:`~vpr_tune.analysis.Experiment` and returns a Figure;
``metric`` defaults to the search's metric and "best" follows its direction::

    from vpr_tune import analysis as va, plots as vp

    exp = va.load_experiment("demo")
    fig = vp.plot_curves(exp)                 # learning curves, best trial highlighted
    figs = vp.figures(exp)                    # every figure of the report, by file stem

Here: the figures of the results (val vs test after ``best --retest``, the top trials'
intervals, the Pareto front and its hypervolume) and the report's set (:func:`figures`,
:func:`figure_set`). The figures of how the search went (curves, best so far,
hyperparameters, importance, early epochs) are in :mod:`vpr_tune.plots_search`, imported
here so ``vp.`` reaches every figure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from vpr_tune import metrics, statuses
from vpr_tune.analysis import (
    Experiment,
    hypervolume_curve,
    objective_columns,
    rank_transfer,
    reference_point,
    retest_columns,
)
from vpr_tune.plots_search import ABSENT as ABSENT
from vpr_tune.plots_search import (
    _legend_outside,
    _message,
    _plt,
    _title,
    _unit,
    absent,
    plot_best_so_far,
    plot_by_category,
    plot_curves,
    plot_importance,
    plot_lr_wd,
    plot_parallel,
    plot_rung_spearman,
)
from vpr_tune.plots_search import lineage_curve as lineage_curve

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_retest(exp: Experiment, n: int = 1) -> Figure:
    """Val vs SF-XS test vs Tokyo-XS R@n per configuration (does the val ranking transfer?)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    retest = exp.retest
    if retest is None or retest.empty:
        _message(ax, "no retest.csv yet: run `vpr-tune best --retest`")
        return fig
    cols = [f"val_R@{n}", *retest_columns(retest, n)]
    cols = [c for c in cols if c in retest.columns]
    x = np.arange(len(retest))
    width = 0.8 / len(cols)
    for i, col in enumerate(cols):
        bars = ax.bar(x + (i - (len(cols) - 1) / 2) * width, retest[col], width, label=col)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(x, [f"#{r} {t}" for r, t in zip(retest["rank"], retest["trial_id"],
                                                  strict=True)], rotation=15, fontsize=8)
    ax.set_ylabel(f"R@{n} (%)")
    _legend_outside(ax)
    ax.grid(alpha=0.3, axis="y")
    _title(fig, exp, f"Val vs test R@{n} per configuration (ranked by val)")
    return fig


def plot_intervals(exp: Experiment, top: int = 5, metric: str | None = None,
                   n: int = 1) -> Figure:
    """The top trials' R@n with their 95 % bootstrap intervals over queries: val (ranked by
    ``metric``) and, after ``best --retest``, each test set; a filled marker is the winner
    of its split or a trial within noise of it, a hollow one a trial the data separate from
    that winner."""
    from vpr_tune.analysis import top_table
    from vpr_tune.noise import add_val_intervals

    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    metric = metric or exp.metric
    table = add_val_intervals(top_table(exp, top, metric), exp, metric)
    series = [("val", table, f"val_R@{n}", "within_noise")]
    retest = exp.retest
    if retest is not None and not retest.empty:
        for col in retest_columns(retest, n):
            name = col.removesuffix(f"_R@{n}")
            series.append((name, retest, col, f"{name}_within_noise"))
    ids = [str(t) for t in table["trial_id"]]
    ids += [str(t) for _, frame, _, _ in series[1:] for t in frame["trial_id"]
            if str(t) not in ids]
    x = {t: i for i, t in enumerate(ids)}
    width = 0.7 / len(series)
    missing = []
    for i, (name, frame, col, within) in enumerate(series):
        rows = frame[frame["trial_id"].astype(str).isin(x)]
        if col not in rows:
            continue
        xs = np.array([x[str(t)] for t in rows["trial_id"]]) + (i - (len(series) - 1) / 2) * width
        y = rows[col].astype(float).to_numpy()
        lo = rows.get(f"{col}_lo", pd.Series(np.nan, index=rows.index)).astype(float).to_numpy()
        hi = rows.get(f"{col}_hi", pd.Series(np.nan, index=rows.index)).astype(float).to_numpy()
        if np.isnan(lo).all():
            missing.append(name)
        err = np.vstack([np.nan_to_num(y - lo), np.nan_to_num(hi - y)])
        colour = f"C{i}"
        ax.errorbar(xs, y, yerr=err, fmt="none", capsize=3, lw=1.2, ecolor=colour)
        marks = rows.get(within, pd.Series(True, index=rows.index)).astype(str).str.lower()
        filled = ~marks.isin(["false", "0"]).to_numpy()
        ax.scatter(xs, y, s=36, zorder=3, label=f"{name} R@{n}", edgecolors=colour,
                   facecolors=[colour if f else "none" for f in filled])
    ax.set_xticks(range(len(ids)), [f"#{i + 1} {t}" if t in set(table["trial_id"].astype(str))
                                    else t for i, t in enumerate(ids)],
                  rotation=15, fontsize=8)
    ax.set_ylabel(f"R@{n} (%), 95 % interval over queries")
    ax.grid(alpha=0.3, axis="y")
    _legend_outside(ax)
    note = f" (no intervals: {', '.join(missing)} kept no per-query ranks)" if missing else ""
    _title(fig, exp, f"Top trials' R@{n} with 95 % intervals; hollow: separated from the "
           f"winner{note}")
    return fig


def plot_val_vs_test(exp: Experiment, n: int = 1) -> Figure:
    """Scatter of val R@n (x) against each test set's R@n (y), one colour per test set,
    with the Spearman correlation in the legend."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.8), layout="constrained")
    retest = exp.retest
    if retest is None or retest.empty:
        _message(ax, "no retest.csv yet: run `vpr-tune best --retest`")
        return fig
    rho = rank_transfer(retest, n).set_index("test_set")["spearman"]
    for col in retest_columns(retest, n):
        name = col.removesuffix(f"_R@{n}")
        ax.scatter(retest[f"val_R@{n}"], retest[col], s=50,
                   label=f"{name} (Spearman {rho[name]:.2f})")
        for _, row in retest.iterrows():
            ax.annotate(f"#{row['rank']}", (row[f"val_R@{n}"], row[col]),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(f"val R@{n} (%)")
    ax.set_ylabel(f"test R@{n} (%)")
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    _title(fig, exp, f"Does the val ranking transfer? (R@{n})")
    return fig


def _axis_label(metric: str) -> str:
    units = {metrics.DESCRIPTOR_DIM: "descriptor size (floats)", metrics.QUERY_MS:
             "query time (ms)", metrics.PARAMS_M: "parameters (millions)"}
    return units.get(metric, f"best {metric}{_unit(metric)}")


def plot_pareto(exp: Experiment) -> Figure:
    """The recall objective (y) against the first cost (x, log scale), coloured by the next
    objective; trials on the Pareto front ringed black, the front of these two axes drawn as
    a step line, and the front's test R@1 (after ``best --retest``) as hollow markers."""
    from vpr_tune.tune.pareto import pareto_flags

    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    objectives = exp.objectives
    quality = next((i for i, (m, _) in enumerate(objectives) if m in metrics.SEARCHABLE), 0)
    others = [i for i in range(len(objectives)) if i != quality]
    columns = objective_columns(exp)
    status = exp.trials["status"].astype(str).str.upper()
    trials = exp.trials[~status.isin(statuses.FAILED)]
    needed = [c for c, _ in columns]
    if len(objectives) < 2 or not set(needed) <= set(trials.columns) or \
            trials[needed].dropna().empty:
        _message(ax, "not a multi-objective search, or no trial finished with every objective")
        return fig
    trials = trials.dropna(subset=needed)
    (y, y_mode), (x, x_mode) = columns[quality], columns[others[0]]
    flags = pareto_flags(trials, columns)
    colour = columns[others[1]][0] if len(others) > 1 else None
    shade = {"c": trials[colour], "cmap": "viridis_r"} if colour else {"color": "tab:blue"}
    points = ax.scatter(trials[x], trials[y], s=60, **shade, linewidths=1.5, zorder=3,
                        edgecolors=np.where(flags, "black", "none"))
    if colour:
        fig.colorbar(points, ax=ax, label=_axis_label(objectives[others[1]][0]))
    on_front = trials[flags].sort_values(x, ascending=x_mode == "min")
    better = pd.Series(metrics.running_best(on_front[y], y_mode), index=on_front.index)
    step = on_front[on_front[y] == better]  # the front of these two axes
    ax.step(step[x], step[y], where="post", color="black", lw=1, label="Pareto front (2-D)")
    for _, row in trials[flags].iterrows():
        ax.annotate(row["trial_id"], (row[x], row[y]), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)
    retest = exp.retest
    if retest is not None and not retest.empty and "trial_id" in retest:
        for col in retest_columns(retest, 1):
            merged = retest[["trial_id", col]].merge(trials[["trial_id", x]], on="trial_id")
            ax.scatter(merged[x], merged[col], s=60, facecolors="none", zorder=2,
                       edgecolors="tab:red" if "tokyo" in col else "tab:orange",
                       label=f"{col} (retest)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(_axis_label(objectives[others[0]][0]))
    ax.set_ylabel(_axis_label(objectives[quality][0]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    _title(fig, exp, "Pareto front (ringed: no finished trial is better on every objective)")
    return fig


def plot_hypervolume(exp: Experiment) -> Figure:
    """Hypervolume of the trials run so far against the number of trials (reference point:
    the worst finished value of each objective, pushed 10 % of its range further out)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    try:
        reference = reference_point(exp)
        curve = hypervolume_curve(exp, reference)
    except (ValueError, KeyError):
        _message(ax, "no finished trial with every objective yet")
        return fig
    ax.plot(curve.index, curve.to_numpy(), marker="o")
    ax.set_xlabel("trials started")
    ax.set_ylabel("hypervolume (objective units multiplied)")
    ax.grid(alpha=0.3)
    _title(fig, exp, "Hypervolume of the front against trials\n"
           + reference_words(exp, reference))
    return fig


def reference_words(exp: Experiment, reference: list[float]) -> str:
    """``reference point: val/R@1 = 5, descriptor_dim = 560 (worst finished values, 10 %
    further)``: what a hypervolume is measured from, without which its number means
    nothing."""
    point = ", ".join(f"{m} = {v:.4g}" for (m, _), v in zip(exp.objectives, reference,
                                                              strict=True))
    return f"reference point: {point} (worst finished values, 10 % further out)"


def figures(exp: Experiment, metric: str | None = None) -> dict[str, Figure]:
    """Every figure of the report that has something to show, by file stem (what
    ``vpr-tune report`` saves as PNGs); :func:`figure_set` also says why the others are
    absent."""
    return figure_set(exp, metric)[0]


def figure_set(exp: Experiment, metric: str | None = None
               ) -> tuple[dict[str, Figure], dict[str, str]]:
    """(figures with something to show, {file stem: why it is absent}) of the report; an
    empty figure is closed, not returned."""
    figs, missing = {}, {}
    for stem, fig in _all_figures(exp, metric).items():
        reason = absent(fig)
        if reason is None:
            figs[stem] = fig
        else:
            missing[stem] = reason
            _plt().close(fig)
    return figs, missing


def _all_figures(exp: Experiment, metric: str | None = None) -> dict[str, Figure]:
    out = {
        "curves": plot_curves(exp, metric),
        "best_so_far": plot_best_so_far(exp, metric),
        "parallel": plot_parallel(exp, metric),
        "by_category": plot_by_category(exp, metric),
        "lr_wd": plot_lr_wd(exp, metric),
        "importance": plot_importance(exp, metric),
        "rung_spearman": plot_rung_spearman(exp, metric),
        "intervals": plot_intervals(exp, metric=metric),
    }
    if exp.multi_objective:
        out["pareto"] = plot_pareto(exp)
        out["hypervolume"] = plot_hypervolume(exp)
    if exp.retest is not None:
        out["retest"] = plot_retest(exp)
        out["val_vs_test"] = plot_val_vs_test(exp)
    return out
