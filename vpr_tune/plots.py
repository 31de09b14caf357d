"""The figures of an experiment (matplotlib): what the notebooks and ``vpr-tune report`` show.

Every ``plot_*`` takes an :class:`~vpr_tune.analysis.Experiment` and returns a Figure;
``metric`` defaults to the search's metric and "best" follows its direction::

    from vpr_tune import analysis as va, plots as vp

    exp = va.load_experiment("demo")
    fig = vp.plot_curves(exp)                 # learning curves, best trial highlighted
    figs = vp.figures(exp)                    # every figure of the report, by file stem
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from vpr_tune import metrics, statuses
from vpr_tune.analysis import (
    Experiment,
    best_so_far,
    categorical_varying,
    failed_trials,
    hypervolume_curve,
    importance,
    objective_columns,
    rank_transfer,
    ranked,
    reference_point,
    retest_columns,
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
