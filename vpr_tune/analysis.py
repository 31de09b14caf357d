"""An experiment as pandas frames and the statistics the notebooks and ``vpr-tune report``
show (the figures are in :mod:`vpr_tune.plots`).

Typical use (in a notebook or a script)::

    from vpr_tune import analysis as va

    exp = va.load_experiment("demo")          # a name under results/, or a folder path
    exp.trials                                # one row per trial: config + summary
    exp.curves                                # one row per trial-epoch
    exp.varying                               # e.g. ["optimizer.name", "optimizer.lr"]
    va.ranked(exp).head()                     # finished trials, best first (search metric)
    va.ranked(exp, "train/loss")              # any searchable metric, in its own direction
    va.best_so_far(exp.curves)                # best val R@1 vs trial-epochs spent
    va.rung_spearman(exp.finished_curves, rung_epoch=1)
    va.importance(exp.trials, "val/R@1", space=exp.space)

The frames themselves (:class:`Experiment`, ``load_experiment``, the hyperparameter
columns) live in :mod:`vpr_tune.experiment`, the statistics of the frames (``best_so_far``,
``rung_spearman``, ``rank_transfer``) in :mod:`vpr_tune.search_stats` and
``markdown_table`` in :mod:`vpr_tune.markdown`; they are imported here so ``va.`` reaches
them too. Here: rankings and the ``best`` tables, the Pareto front, and importance.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from vpr_tune import metrics, statuses
from vpr_tune.errors import SearchFailed, UserError
from vpr_tune.experiment import SUMMARY_COLUMNS as SUMMARY_COLUMNS
from vpr_tune.experiment import SUMMARY_PREFIXES as SUMMARY_PREFIXES
from vpr_tune.experiment import SYNTHETIC_LABEL as SYNTHETIC_LABEL
from vpr_tune.experiment import Experiment, varying_columns
from vpr_tune.experiment import data_root_of as data_root_of
from vpr_tune.experiment import failed_trials as failed_trials
from vpr_tune.experiment import hyperparameter_columns as hyperparameter_columns
from vpr_tune.experiment import is_synthetic_experiment as is_synthetic_experiment
from vpr_tune.experiment import load_experiment as load_experiment
from vpr_tune.experiment import resolve_experiment as resolve_experiment
from vpr_tune.markdown import markdown_table as markdown_table
from vpr_tune.metrics import summary_column
from vpr_tune.search_stats import RungCorrelation as RungCorrelation
from vpr_tune.search_stats import best_so_far as best_so_far
from vpr_tune.search_stats import rank_transfer as rank_transfer
from vpr_tune.search_stats import retest_columns as retest_columns
from vpr_tune.search_stats import rung_spearman as rung_spearman
from vpr_tune.search_stats import rung_spearman_table as rung_spearman_table
from vpr_tune.tune import pareto
from vpr_tune.tune.results import all_failed, failure_summary
from vpr_tune.tune.results import read_table as read_table  # scripts and tests read tables

# The recalls the best table shows (plus the ranking metric when it is another one).
TABLE_METRICS = metrics.VAL_RECALLS[:2]


# ------------------------------------------------------------------------------ ranking
def ranked(
    exp_or_trials: Experiment | pd.DataFrame, metric: str | None = None, mode: str | None = None
) -> pd.DataFrame:
    """Finished trials ranked by ``metric`` (best first), with a 1-based ``rank`` column.

    ``metric`` defaults to the experiment's search metric (``val/R@1`` for a bare table);
    ``mode`` to the search's mode for that metric, else the metric's own direction
    (``train/loss``: lowest first). ERROR, DIVERGED and PENDING trials never rank, nor trials
    without a value of the metric. Ties break on val R@5, then trial id, so the order is stable.
    """
    exp = exp_or_trials if isinstance(exp_or_trials, Experiment) else None
    trials = exp.trials if exp is not None else exp_or_trials
    metric = metric or (exp.metric if exp is not None else metrics.DEFAULT_METRIC)
    column = rank_column(metric, exp)
    if column not in trials.columns:
        allowed = [c.removeprefix("best_") for c in trials.columns if c.startswith("best_")]
        allowed += [m for m, _ in (exp.objectives if exp is not None else [])
                    if m in metrics.COSTS and m in trials.columns]
        raise UserError(f"unknown metric {metric!r}: trials.csv has {', '.join(allowed) or 'none'}"
                        + ("" if metrics.base_name(metric) not in metrics.COSTS else
                           f" ({metric} ranks only a search that lists it in "
                           "search.objectives)"))
    if mode is None:
        mode = exp.mode_for(column) if exp is not None else metrics.direction(column)
    status = trials["status"].astype(str).str.upper()
    ok = ~status.isin(statuses.UNRANKED) & trials[column].notna()
    frame = trials[ok].copy()
    tie = summary_column(metrics.VAL_RECALLS[1])
    frame["_tie"] = frame.get(tie, pd.Series(0.0, index=frame.index)).fillna(-1.0)
    frame = frame.sort_values(
        [column, "_tie", "trial_id"],
        ascending=[metrics.sort_ascending(mode), metrics.sort_ascending(metrics.direction(tie)),
                   True],
        kind="mergesort",
    ).drop(columns="_tie")
    frame.insert(0, "rank", range(1, len(frame) + 1))
    return frame.reset_index(drop=True)


def rank_column(metric: str, exp: Experiment | None = None) -> str:
    """The trials.csv column that ranks by ``metric``: ``best_<metric>`` (``val/R@1`` ->
    ``best_val/R@1``); for a cost that ``exp`` lists among its objectives (a multi-objective
    search's ``descriptor_dim``, ``query_ms``, ``params_m``), the cost's own column."""
    name = metrics.base_name(metric)
    if name in metrics.COSTS and exp is not None and name in dict(exp.objectives):
        return name
    return summary_column(metric)


def table_column(metric: str) -> str:
    """The best/retest table's name for a metric's best value: ``val/R@1`` -> ``val_R@1``."""
    return metrics.base_name(metric).replace("/", "_")


def top_table(exp: Experiment, top: int = 5, metric: str | None = None) -> pd.DataFrame:
    """The ``vpr-tune best`` table: ``rank, trial_id``, varying hyperparameters,
    ``val_R@1, val_R@5`` (plus the ranking metric's column when it is another, e.g.
    ``val_R@10`` or ``train_loss``) and ``epochs`` of the ``top`` best finished trials.

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
    shown = list(TABLE_METRICS)
    if metrics.base_name(metric or exp.metric) not in shown:
        shown.append(metrics.base_name(metric or exp.metric))
    for m in shown:
        col = rank_column(m, exp)
        table[table_column(m)] = frame[col].astype(float) if col in frame else math.nan
    table["epochs"] = frame.get("epochs", math.nan)
    return table.reset_index(drop=True)


# ----------------------------------------------------------------------- Pareto front
def objective_columns(exp: Experiment) -> list[tuple[str, str]]:
    """``(trials.csv column, mode)`` of each objective (``best_val/R@1``, ``query_ms``, ...)."""
    return [(metrics.objective_column(m), mode) for m, mode in exp.objectives]


def front_rows(exp: Experiment) -> pd.DataFrame:
    """The trials on the Pareto front (finished, no other finished trial dominates them),
    best first on the first objective; raises :class:`UserError` when no trial finished."""
    columns = objective_columns(exp)
    missing = [c for c, _ in columns if c not in exp.trials.columns]
    if missing:
        raise UserError(f"experiment {exp.name}: trials.csv has no {', '.join(missing)} "
                        f"column ({exp.path / 'trials.csv'})")
    status = exp.trials["status"].astype(str).str.upper()
    rows = pareto.front(exp.trials[~status.isin(statuses.NOT_STARTED)], columns)
    if rows.empty:
        counts = status.value_counts().to_dict()
        raise UserError(f"experiment {exp.name}: no finished trial with every objective "
                        f"(statuses: {counts or 'no trials'}; {exp.path / 'trials.csv'})")
    rows = rows.reset_index(drop=True)
    rows.insert(0, "rank", range(1, len(rows) + 1))
    return rows


def front_table(exp: Experiment) -> pd.DataFrame:
    """The ``vpr-tune best`` table of a multi-objective search: ``rank, trial_id``, the
    varying hyperparameters, every objective (``val_R@1``, ``descriptor_dim``, ``query_ms``),
    ``params_m`` and ``epochs`` of each trial on the front."""
    rows = front_rows(exp)
    table = rows[["rank", "trial_id", *exp.varying]].copy()
    shown = [m for m, _ in exp.objectives]
    shown += [m for m in metrics.COSTS if m not in shown and m in rows]
    for m in shown:
        table[table_column(m)] = rows[metrics.objective_column(m)].astype(float)
    table["epochs"] = rows.get("epochs", math.nan)
    return table


def reference_point(exp: Experiment) -> list[float]:
    """The hypervolume reference point of ``exp`` (worst finished values, 10 % further)."""
    return pareto.reference_point([exp.trials], objective_columns(exp))


def hypervolume_curve(exp: Experiment, reference: list[float] | None = None) -> pd.Series:
    """Hypervolume of the first 1, 2, ... trials (trials.csv order: the order they started)."""
    columns = objective_columns(exp)
    return pareto.hypervolume_curve(exp.trials, columns, reference or reference_point(exp))


# ------------------------------------------------------------------------------ importance
def _space_leaf(space: dict[str, Any], dotted: str) -> Any:
    node: Any = space
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _distribution(values: pd.Series, leaf: Any) -> Any:
    """An Optuna distribution for one column: over the observed range on the scale the
    space's leaf declares (its ``Distribution.over``), else as the data suggest."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    from vpr_tune.distributions import leaf_distribution

    clean = values.dropna()
    numeric = pd.api.types.is_numeric_dtype(clean) and not pd.api.types.is_bool_dtype(clean)
    low, high = (float(clean.min()), float(clean.max())) if numeric else (0.0, 0.0)
    declared = leaf_distribution(leaf)
    ranged = declared.over(low, high) if numeric and declared else None
    if not numeric or ranged is None and clean.nunique() <= 4 and isinstance(leaf, dict):
        return CategoricalDistribution(sorted(clean.astype(str).unique()))
    if isinstance(ranged, IntDistribution) or pd.api.types.is_integer_dtype(clean):
        return IntDistribution(int(low), int(high))
    if ranged is not None:
        return ranged
    return FloatDistribution(low, high, log=low > 0 and high / low >= 100)


def importance(
    trials: pd.DataFrame,
    metric: str = metrics.DEFAULT_METRIC,
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
    maximize = metrics.direction(column) == "max"
    study = optuna.create_study(direction="maximize" if maximize else "minimize")
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


def categorical_varying(exp: Experiment) -> list[str]:
    """Varying hyperparameters that are categories (names) rather than numbers."""
    return [
        c for c in exp.varying
        if not pd.api.types.is_numeric_dtype(exp.trials[c].dropna())
        or pd.api.types.is_bool_dtype(exp.trials[c].dropna())
    ]
