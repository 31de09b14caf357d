"""An experiment as pandas frames, plus the figures the notebooks and ``vpr-tune report`` show.

Typical use (in a notebook or a script)::

    from vpr_tune import analysis as va

    exp = va.load_experiment("demo")          # a name under results/, or a folder path
    exp.trials                                # one row per trial: config + summary
    exp.curves                                # one row per trial-epoch
    exp.varying                               # e.g. ["optimizer.name", "optimizer.lr"]
    va.ranked(exp).head()                     # finished trials, best first
    va.best_so_far(exp.curves)                # best val R@1 vs trial-epochs spent
    va.rung_spearman(exp.finished_curves, rung_epoch=1)
    va.importance(exp.trials, "val/R@1", space=exp.space)
    fig = va.plot_curves(exp)                 # every plot_* returns a matplotlib Figure

Column names follow ``docs/CONTRACTS.md``: ``trials.csv`` holds ``trial_id, status``, the
dotted hyperparameter columns, and ``best_val/R@1, last_val/R@1, best_val/R@5, ...``;
``metrics.csv`` holds ``trial_id, epoch, train/loss, lr, val/R@1 ... val/R@25``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from vpr_tune.errors import SearchFailed, UserError
from vpr_tune.tune.results import all_failed, failure_summary

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# trials.csv columns that are not hyperparameters.
SUMMARY_COLUMNS = (
    "rank", "trial_id", "status", "epochs", "time_s", "node_id", "error", "checkpoint", "logdir",
)
SUMMARY_PREFIXES = ("best_", "last_", "val/", "train/", "time", "timestamp")
# Statuses that never rank: the trial crashed or its loss became NaN/inf, or it never ran.
FAILED_STATUSES = frozenset({"ERROR", "DIVERGED"})
NOT_STARTED = frozenset({"PENDING"})
SYNTHETIC_LABEL = "synthetic (street-world)"
METRICS = ("val/R@1", "val/R@5", "val/R@10", "val/R@25")


@dataclass
class Experiment:
    """One search, loaded from ``results/<name>/``.

    ``trials``: one row per trial (config + summary); ``curves``: one row per trial-epoch;
    ``retest``: the ``retest.csv`` table or None; ``varying``: hyperparameter columns with
    more than one distinct value; ``synthetic``: the data were street-world; ``space``: the
    parsed ``space.yaml`` (a nested dict, possibly with distributions).
    """

    path: Path
    trials: pd.DataFrame
    curves: pd.DataFrame
    retest: pd.DataFrame | None
    varying: list[str]
    synthetic: bool
    space: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The experiment's folder name."""
        return self.path.name

    @property
    def hyperparameters(self) -> list[str]:
        """Every hyperparameter column of ``trials`` (varying or not)."""
        return hyperparameter_columns(self.trials)

    @property
    def mode(self) -> str:
        """``max`` or ``min``, from ``search.mode`` in space.yaml (Recall: max)."""
        mode = _get(self.space, "search.mode", "max")
        return mode if mode in ("max", "min") else "max"

    @property
    def rungs(self) -> list[int]:
        """ASHA rung epochs (grace_period * reduction_factor**k below max_epochs); [] for FIFO."""
        if _get(self.space, "search.scheduler", "asha") != "asha":
            return []
        grace = _get(self.space, "asha.grace_period", 1)
        factor = _get(self.space, "asha.reduction_factor", 3)
        max_t = _get(self.space, "budget.max_epochs", None)
        if not self.curves.empty:
            max_t = max(int(max_t or 0), int(self.curves["epoch"].max()))
        if not all(isinstance(v, int | float) for v in (grace, factor, max_t)) or factor <= 1:
            return []
        rungs, t = [], float(grace)
        while t < max_t:
            rungs.append(int(t))
            t *= factor
        return rungs

    @property
    def finished_curves(self) -> pd.DataFrame:
        """``curves`` without ERROR / DIVERGED trials (what rung statistics should use)."""
        return self.curves[~self.curves["trial_id"].isin(failed_trials(self))]

    @property
    def label(self) -> str:
        """Experiment name, with the synthetic-data label when it applies."""
        return f"{self.name} — {SYNTHETIC_LABEL}" if self.synthetic else self.name


# ------------------------------------------------------------------------------ loading
def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """One of an experiment's CSV tables (``trials.csv``, ``metrics.csv``, ``retest.csv``)
    with ``trial_id`` kept as text: Ray's ids are hex, and pandas would read ``00123456`` as
    an int (losing the zeros) and ``12e45678`` as a float.

    >>> trials = read_table("results/demo/trials.csv")   # doctest: +SKIP
    """
    return pd.read_csv(path, dtype={"trial_id": str})


def resolve_experiment(name: str | os.PathLike[str] | None, storage: str | None = None) -> Path:
    """The folder of experiment ``name`` (a name under storage, or a folder); None -> newest.

    Raises :class:`UserError` naming what was looked for when it does not exist.
    """
    if name is not None and Path(name).is_dir() and (Path(name) / "trials.csv").exists():
        return Path(name).resolve()
    from vpr_tune.tune.results import experiment_dir, newest_experiment

    path = Path(newest_experiment(storage) if name is None else experiment_dir(str(name), storage))
    if not path.is_dir():
        known = sorted(p.parent.name for p in path.parent.glob("*/trials.csv"))
        raise UserError(
            f"unknown experiment {name!r}: no folder {path} "
            f"(experiments there: {', '.join(known) or 'none'})"
        )
    return path


def load_experiment(
    path_or_name: str | os.PathLike[str] | None = None, storage: str | None = None
) -> Experiment:
    """Load ``results/<name>/`` (trials.csv, metrics.csv, space.yaml, retest.csv if any).

    >>> exp = load_experiment("demo")            # doctest: +SKIP
    >>> exp.trials[["trial_id", "status", "best_val/R@1"]]   # doctest: +SKIP
    """
    path = resolve_experiment(path_or_name, storage)
    trials_csv = path / "trials.csv"
    if not trials_csv.exists():
        raise UserError(f"{path}: no trials.csv (is this a vpr-tune experiment folder?)")
    trials = read_table(trials_csv)
    if "trial_id" not in trials.columns:
        raise UserError(f"{trials_csv}: no 'trial_id' column")
    if "status" not in trials.columns:
        trials["status"] = "TERMINATED"
    metrics_csv = path / "metrics.csv"
    curves = read_table(metrics_csv) if metrics_csv.exists() else pd.DataFrame()
    if curves.empty:
        curves = pd.DataFrame(columns=["trial_id", "epoch", *METRICS])
    retest_csv = path / "retest.csv"
    retest = read_table(retest_csv) if retest_csv.exists() else None
    space = _read_yaml(path / "space.yaml")
    return Experiment(
        path=path,
        trials=trials,
        curves=curves,
        retest=retest,
        varying=varying_columns(trials),
        synthetic=is_synthetic_experiment(path, space),
        space=space,
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({exc})") from exc
    return data if isinstance(data, dict) else {}


def _get(nested: dict[str, Any], dotted: str, default: Any = None) -> Any:
    """``nested["a"]["b"]`` for ``"a.b"``; ``default`` when absent or a distribution."""
    node: Any = nested
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return default if isinstance(node, dict) else node


def data_root_of(space: dict[str, Any]) -> str | None:
    """The data root an experiment ran on: ``resolved.data_root`` that ``vpr-tune run``
    records in space.yaml, else ``data.root``, else $VPR_TUNE_DATA."""
    root = _get(space, "resolved.data_root", None) or _get(space, "data.root", None)
    return str(root) if root else os.environ.get("VPR_TUNE_DATA") or None


def is_synthetic_experiment(path: Path, space: dict[str, Any]) -> bool:
    """True when the experiment's data were street-world (no root -> street-world)."""
    root = data_root_of(space)
    if root is None:
        return True
    from vpr_tune.data.datasets import is_synthetic

    return Path(root).exists() and bool(is_synthetic(Path(root)))


# ------------------------------------------------------------------------------ columns
def hyperparameter_columns(trials: pd.DataFrame) -> list[str]:
    """Columns of ``trials`` that are hyperparameters (dotted paths like ``optimizer.lr``)."""
    return [
        c
        for c in trials.columns
        if c not in SUMMARY_COLUMNS and not c.startswith(SUMMARY_PREFIXES) and "/" not in c
    ]


def failed_trials(exp: Experiment) -> list[str]:
    """Ids of ERROR / DIVERGED trials."""
    status = exp.trials["status"].astype(str).str.upper()
    return list(exp.trials.loc[status.isin(FAILED_STATUSES), "trial_id"])


def varying_columns(trials: pd.DataFrame) -> list[str]:
    """Hyperparameter columns with more than one distinct (non-missing) value across trials."""
    return [c for c in hyperparameter_columns(trials) if trials[c].dropna().nunique() > 1]


def summary_column(metric: str) -> str:
    """``val/R@1`` -> ``best_val/R@1`` (the trials.csv column a metric ranks by)."""
    metric = metric.strip()
    if metric.startswith(("best_", "last_")):
        return metric
    return f"best_{metric}"


def ranked(
    exp_or_trials: Experiment | pd.DataFrame, metric: str = "val/R@1", mode: str = "max"
) -> pd.DataFrame:
    """Finished trials ranked by ``metric`` (best first), with a 1-based ``rank`` column.

    ERROR, DIVERGED and PENDING trials never rank, nor trials without a value of the metric.
    Ties break on val R@5, then trial id, so the order is stable.
    """
    if isinstance(exp_or_trials, Experiment):
        trials, mode = exp_or_trials.trials, exp_or_trials.mode
    else:
        trials = exp_or_trials
    column = summary_column(metric)
    if column not in trials.columns:
        allowed = [c.removeprefix("best_") for c in trials.columns if c.startswith("best_")]
        raise UserError(f"unknown metric {metric!r}: trials.csv has {', '.join(allowed) or 'none'}")
    status = trials["status"].astype(str).str.upper()
    ok = ~status.isin(FAILED_STATUSES | NOT_STARTED) & trials[column].notna()
    frame = trials[ok].copy()
    frame["_tie"] = frame.get("best_val/R@5", pd.Series(0.0, index=frame.index)).fillna(-1.0)
    ascending = mode == "min"
    frame = frame.sort_values(
        [column, "_tie", "trial_id"], ascending=[ascending, ascending, True], kind="mergesort"
    ).drop(columns="_tie")
    frame.insert(0, "rank", range(1, len(frame) + 1))
    return frame.reset_index(drop=True)


def top_table(exp: Experiment, top: int = 5, metric: str = "val/R@1") -> pd.DataFrame:
    """The ``vpr-tune best`` table: ``rank, trial_id``, varying hyperparameters,
    ``val_R@1, val_R@5, epochs`` of the ``top`` best finished trials.

    Raises :class:`UserError` when no trial finished.
    """
    if top < 1:
        raise UserError(f"--top must be at least 1, got {top}")
    frame = ranked(exp, metric)
    if frame.empty and all_failed(exp.trials):
        raise SearchFailed(f"experiment {exp.name}: no trial finished: "
                           f"{failure_summary(exp.trials)}")
    if frame.empty:
        counts = exp.trials["status"].astype(str).value_counts().to_dict()
        raise UserError(
            f"experiment {exp.name}: no finished trial to rank "
            f"(statuses: {counts or 'no trials'}; {exp.path / 'trials.csv'})"
        )
    frame = frame.head(top)
    table = frame[["rank", "trial_id", *exp.varying]].copy()
    for n in (1, 5):
        col = f"best_val/R@{n}"
        table[f"val_R@{n}"] = frame[col].astype(float) if col in frame else math.nan
    table["epochs"] = frame.get("epochs", math.nan)
    return table.reset_index(drop=True)


# ------------------------------------------------------------------------------ helpers
def best_so_far(
    curves: pd.DataFrame, metric: str = "val/R@1", exclude: Iterable[str] = ()
) -> pd.DataFrame:
    """Best ``metric`` seen so far against cumulative trial-epochs spent.

    Rows are taken in the order they were reported (``timestamp``/``time_total_s`` when
    present, else file order). Epochs of ``exclude`` trials (e.g. failed ones, which never
    rank) cost compute but never count as best. Returns ``trial_epochs``, ``trial_id``,
    ``metric``, ``best``.
    """
    frame = curves.dropna(subset=[metric]).copy()
    frame[metric] = frame[metric].where(~frame["trial_id"].isin(set(exclude)))
    for col in ("timestamp", "time_total_s"):
        if col in frame.columns:
            frame = frame.sort_values(col, kind="mergesort")
            break
    frame = frame.reset_index(drop=True)
    return pd.DataFrame(
        {
            "trial_epochs": np.arange(1, len(frame) + 1),
            "trial_id": frame["trial_id"].to_numpy(),
            metric: frame[metric].to_numpy(dtype=float),
            "best": frame[metric].cummax().ffill().to_numpy(dtype=float),
        }
    )


@dataclass(frozen=True)
class RungCorrelation:
    """Spearman correlation between the ranking at ``rung_epoch`` and the final ranking."""

    rung_epoch: int
    n_trials: int
    spearman: float
    pvalue: float


def rung_spearman(
    curves: pd.DataFrame, rung_epoch: int, metric: str = "val/R@1"
) -> RungCorrelation:
    """How well the ranking at an early epoch predicts the final one (Spearman, scipy).

    Only trials that trained past ``rung_epoch`` count (a trial ASHA stopped at the rung has
    no later value to compare); "final" is each such trial's value at its last epoch.
    With fewer than 3 such trials the correlation is NaN.

    >>> rung_spearman(exp.curves, rung_epoch=1).spearman   # doctest: +SKIP
    """
    from scipy.stats import spearmanr

    frame = curves.dropna(subset=[metric])
    at_rung = frame[frame["epoch"] == rung_epoch].groupby("trial_id")[metric].last()
    last = frame.sort_values("epoch", kind="mergesort").groupby("trial_id").last()
    later = last[last["epoch"] > rung_epoch]
    ids = [t for t in later.index if t in at_rung.index]
    if len(ids) < 3:
        return RungCorrelation(rung_epoch, len(ids), math.nan, math.nan)
    early, final = at_rung.loc[ids].to_numpy(), later.loc[ids, metric].to_numpy()
    if np.ptp(early) == 0 or np.ptp(final) == 0:  # a constant ranking has no correlation
        return RungCorrelation(rung_epoch, len(ids), math.nan, math.nan)
    result = spearmanr(early, final)
    return RungCorrelation(rung_epoch, len(ids), float(result.statistic), float(result.pvalue))


def rung_spearman_table(curves: pd.DataFrame, metric: str = "val/R@1") -> pd.DataFrame:
    """:func:`rung_spearman` for every epoch before the last one (one row per epoch)."""
    if curves.empty:
        return pd.DataFrame(columns=["rung_epoch", "n_trials", "spearman", "pvalue"])
    epochs = sorted(int(e) for e in curves["epoch"].dropna().unique())[:-1]
    rows = [rung_spearman(curves, e, metric).__dict__ for e in epochs]
    return pd.DataFrame(rows, columns=["rung_epoch", "n_trials", "spearman", "pvalue"])


def _space_leaf(space: dict[str, Any], dotted: str) -> Any:
    node: Any = space
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _distribution(values: pd.Series, leaf: Any) -> Any:
    """An Optuna distribution for one column: from the space's leaf when known, else the data."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    kind = next((k for k in ("loguniform", "uniform", "int", "randint") if isinstance(leaf, dict)
                 and k in leaf), None)
    clean = values.dropna()
    numeric = pd.api.types.is_numeric_dtype(clean) and not pd.api.types.is_bool_dtype(clean)
    if not numeric or kind is None and clean.nunique() <= 4 and isinstance(leaf, dict):
        return CategoricalDistribution(sorted(clean.astype(str).unique()))
    low, high = float(clean.min()), float(clean.max())
    if kind in ("int", "randint") or pd.api.types.is_integer_dtype(clean):
        return IntDistribution(int(low), int(high))
    log = kind == "loguniform" or (kind is None and low > 0 and high / low >= 100)
    return FloatDistribution(low, high, log=log)


def importance(
    trials: pd.DataFrame,
    metric: str = "val/R@1",
    space: dict[str, Any] | None = None,
    params: list[str] | None = None,
    seed: int = 0,
) -> pd.Series:
    """Hyperparameter importance (Optuna's fANOVA evaluator) fed from the trials table.

    Builds an in-memory Optuna study with ``optuna.trial.create_trial`` from the finished
    trials, then calls ``optuna.importance.get_param_importances``. ``params`` defaults to
    the varying columns present in every finished trial (conditional ones are left out).
    Returns a Series (parameter -> importance, summing to 1), largest first; empty when
    fewer than 2 finished trials, no varying parameter, or a constant metric.
    """
    import optuna

    frame = ranked(trials, metric)
    column = summary_column(metric)
    names = params or [c for c in varying_columns(frame) if frame[c].notna().all()]
    if len(frame) < 2 or not names or frame[column].nunique() < 2:
        return pd.Series(dtype=float, name="importance")  # nothing to attribute
    dists = {n: _distribution(frame[n], _space_leaf(space or {}, n)) for n in names}
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" line per call
    study = optuna.create_study(direction="maximize")
    for _, row in frame.iterrows():
        values = {}
        for n in names:
            v = row[n]
            if isinstance(dists[n], optuna.distributions.CategoricalDistribution):
                v = str(v)
            elif isinstance(dists[n], optuna.distributions.IntDistribution):
                v = int(v)
            else:
                v = float(v)
            values[n] = v
        study.add_trial(
            optuna.trial.create_trial(params=values, distributions=dists, value=float(row[column]))
        )
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    scores = optuna.importance.get_param_importances(study, evaluator=evaluator, params=names)
    return pd.Series(scores, name="importance", dtype=float).sort_values(ascending=False)


# ------------------------------------------------------------------------------ figures
def _plt():
    # No matplotlib.use() here: a notebook's inline backend must stay; headless scripts get
    # matplotlib's own fallback (Agg), and `vpr-tune report` selects Agg itself.
    import matplotlib.pyplot as plt

    return plt


def _title(fig: Figure, exp: Experiment, what: str) -> None:
    fig.suptitle(f"{what}\n{exp.label}", fontsize=11)


def _message(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_curves(exp: Experiment, metric: str = "val/R@1") -> Figure:
    """Val R@1 per epoch for every trial; x marks where ASHA stopped a trial, dashed lines
    are the rungs, red crosses are failed/diverged trials."""
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
    for trial_id, group in curves.groupby("trial_id", sort=False):
        group = group.sort_values("epoch")
        is_best = trial_id == best_id
        ax.plot(group["epoch"], group[metric], marker="o", ms=3,
                lw=2.5 if is_best else 1.0, alpha=1.0 if is_best else 0.6,
                label=f"best: {trial_id}" if is_best else None, zorder=3 if is_best else 2)
        last = group.iloc[-1]
        if status.get(trial_id, "") in FAILED_STATUSES:
            ax.plot(last["epoch"], last[metric], "X", color="red", ms=9,
                    label="failed / diverged" if failed_label else None)
            failed_label = False
        elif last["epoch"] < max_epoch:
            ax.plot(last["epoch"], last[metric], "x", color="black", ms=7,
                    label="stopped early (ASHA)" if stopped_label else None)
            stopped_label = False
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{metric} (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    _title(fig, exp, f"{metric} per epoch, {curves['trial_id'].nunique()} trials"
           + (f" (ASHA rungs at {exp.rungs})" if exp.rungs else ""))
    return fig


def plot_best_so_far(exp: Experiment, metric: str = "val/R@1") -> Figure:
    """Best val R@1 found so far against trial-epochs spent (the search's cost curve)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    frame = best_so_far(exp.curves, metric, exclude=failed_trials(exp))
    if frame.empty:
        _message(ax, "no epochs reported yet")
        return fig
    ax.scatter(frame["trial_epochs"], frame[metric], s=12, alpha=0.5,
               label="each trial-epoch (failed trials not shown)")
    ax.step(frame["trial_epochs"], frame["best"], where="post", lw=2, color="C3",
            label="best so far")
    ax.set_xlabel("trial-epochs spent")
    ax.set_ylabel(f"{metric} (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
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


def plot_parallel(exp: Experiment, metric: str = "val/R@1") -> Figure:
    """Parallel coordinates: one line per finished trial across the varying hyperparameters
    and the metric, coloured by the metric (log axes for wide positive ranges)."""
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
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=f"{column} (%)")
    _title(fig, exp, "Hyperparameters vs " + column)
    return fig


def categorical_varying(exp: Experiment) -> list[str]:
    """Varying hyperparameters that are categories (names) rather than numbers."""
    return [
        c for c in exp.varying
        if not pd.api.types.is_numeric_dtype(exp.trials[c].dropna())
        or pd.api.types.is_bool_dtype(exp.trials[c].dropna())
    ]


def plot_by_category(exp: Experiment, metric: str = "val/R@1") -> Figure:
    """R@1 by each categorical hyperparameter (optimizer, scheduler, loss, aggregator, ...):
    box plot with every trial drawn on top."""
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
        ax.set_ylabel(f"{column} (%)")
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
        ax.grid(alpha=0.3, axis="y")
    _title(fig, exp, f"{column} by categorical hyperparameter")
    return fig


def plot_lr_wd(exp: Experiment, metric: str = "val/R@1", x: str = "optimizer.lr",
               y: str = "optimizer.weight_decay") -> Figure:
    """Learning rate vs weight decay (log axes), each finished trial coloured by R@1."""
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
    fig.colorbar(sc, ax=ax, label=f"{column} (%)")
    _title(fig, exp, f"{x} × {y}")
    return fig


def plot_importance(exp: Experiment, metric: str = "val/R@1") -> Figure:
    """Hyperparameter importance (Optuna fANOVA on the trials table) as horizontal bars."""
    plt = _plt()
    scores = importance(exp.trials, metric, space=exp.space)
    fig, ax = plt.subplots(figsize=(7.5, max(2.5, 0.5 * len(scores) + 1.5)), layout="constrained")
    if scores.empty:
        _message(ax, "too few finished trials, no varying hyperparameter, or equal R@1")
        return fig
    order = scores.sort_values()
    ax.barh(order.index, order.to_numpy(), color="C0")
    for i, v in enumerate(order.to_numpy()):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=8)
    ax.set_xlabel("importance (fANOVA, sums to 1)")
    ax.set_xlim(0, max(1.0, float(order.max()) * 1.15))
    _title(fig, exp, f"Hyperparameter importance for {summary_column(metric)}")
    return fig


def retest_columns(retest: pd.DataFrame, n: int = 1) -> list[str]:
    """The ``<set>_R@n`` columns of a retest table other than val (e.g. sf_test_R@1, tokyo_R@1)."""
    return [c for c in retest.columns if c.endswith(f"_R@{n}") and not c.startswith("val_")]


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
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    _title(fig, exp, f"Val vs test R@{n} per configuration (ranked by val)")
    return fig


def rank_transfer(retest: pd.DataFrame, n: int = 1) -> pd.DataFrame:
    """Spearman correlation between val R@n and each test set's R@n across the retested
    configs: does the val ranking transfer? One row per test set (NaN with < 3 configs)."""
    from scipy.stats import spearmanr

    rows = []
    for col in retest_columns(retest, n):
        val, test = retest[f"val_R@{n}"].astype(float), retest[col].astype(float)
        ok = len(retest) >= 3 and val.nunique() > 1 and test.nunique() > 1
        rho = float(spearmanr(val, test).statistic) if ok else math.nan
        rows.append({"test_set": col.removesuffix(f"_R@{n}"), "configs": len(retest),
                     "spearman": rho})
    return pd.DataFrame(rows, columns=["test_set", "configs", "spearman"])


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
    ax.legend(fontsize=8)
    _title(fig, exp, f"Does the val ranking transfer? (R@{n})")
    return fig


def plot_rung_spearman(exp: Experiment, metric: str = "val/R@1") -> Figure:
    """Spearman correlation of the ranking at each epoch with the final ranking (finished
    trials that trained past that epoch); high values mean early stopping is safe."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
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
    ax.set_xlabel("epoch (dashed: ASHA rungs)")
    ax.set_ylabel("Spearman vs final ranking")
    ax.grid(alpha=0.3)
    _title(fig, exp, "Does an early epoch predict the final ranking?")
    return fig


def figures(exp: Experiment, metric: str = "val/R@1") -> dict[str, Figure]:
    """Every figure of the report, by file stem (what ``vpr-tune report`` saves as PNGs)."""
    out = {
        "curves": plot_curves(exp, metric),
        "best_so_far": plot_best_so_far(exp, metric),
        "parallel": plot_parallel(exp, metric),
        "by_category": plot_by_category(exp, metric),
        "lr_wd": plot_lr_wd(exp, metric),
        "importance": plot_importance(exp, metric),
        "rung_spearman": plot_rung_spearman(exp, metric),
    }
    if exp.retest is not None:
        out["retest"] = plot_retest(exp)
        out["val_vs_test"] = plot_val_vs_test(exp)
    return out


# ------------------------------------------------------------------------------ tables
def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (no extra dependency): Recall columns with 2
    decimals, other numbers with 3 significant digits."""

    def cell(col: str, v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else format(v, ".2f" if "R@" in col else ".3g")
        return str(v).replace("|", "\\|")

    cols = [str(c) for c in frame.columns]
    header = "| " + " | ".join(cols) + " |"
    rule = "|" + "|".join("---" for _ in cols) + "|"
    rows = ["| " + " | ".join(cell(c, v) for c, v in zip(cols, row, strict=True)) + " |"
            for row in frame.itertuples(False)]
    return "\n".join([header, rule, *rows])
