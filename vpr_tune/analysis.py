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

Column names follow ``docs/CONTRACTS.md``: ``trials.csv`` holds ``trial_id, status``, the
dotted hyperparameter columns, and ``best_<m>, last_<m>`` for each metric ``m`` of
``metrics.SEARCHABLE``; ``metrics.csv`` holds ``trial_id, epoch`` and ``metrics.REPORTED``.

The statistics of the frames (``best_so_far``, ``rung_spearman``, ``rank_transfer``) live in
:mod:`vpr_tune.search_stats` and ``markdown_table`` in :mod:`vpr_tune.markdown`; they are
imported here so ``va.`` reaches them too.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from vpr_tune import metrics, statuses
from vpr_tune.errors import SearchFailed, UserError
from vpr_tune.markdown import markdown_table as markdown_table
from vpr_tune.metrics import summary_column
from vpr_tune.rungs import GRACE_PERIOD, REDUCTION_FACTOR, rung_epochs
from vpr_tune.search_stats import RungCorrelation as RungCorrelation
from vpr_tune.search_stats import best_so_far as best_so_far
from vpr_tune.search_stats import rank_transfer as rank_transfer
from vpr_tune.search_stats import retest_columns as retest_columns
from vpr_tune.search_stats import rung_spearman as rung_spearman
from vpr_tune.search_stats import rung_spearman_table as rung_spearman_table
from vpr_tune.tune import pareto
from vpr_tune.tune.results import all_failed, failure_summary, read_table

# trials.csv columns that are not hyperparameters.
SUMMARY_COLUMNS = (
    "rank", "trial_id", "status", "epochs", "time_s", "node_id", "error", "checkpoint", "logdir",
    "pareto", *metrics.COSTS,
)
SUMMARY_PREFIXES = ("best_", "last_", "val/", "train/", "time", "timestamp")
SYNTHETIC_LABEL = "synthetic (street-world)"
# The recalls the best table shows (plus the ranking metric when it is another one).
TABLE_METRICS = metrics.VAL_RECALLS[:2]


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
    _reported: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        """The experiment's folder name."""
        return self.path.name

    @property
    def hyperparameters(self) -> list[str]:
        """Every hyperparameter column of ``trials`` (varying or not)."""
        return hyperparameter_columns(self.trials)

    @property
    def search(self) -> dict[str, Any] | None:
        """The ``search`` section of space.yaml (None when there is none)."""
        search = self.space.get("search") if isinstance(self.space, dict) else None
        return search if isinstance(search, dict) else None

    @property
    def metric(self) -> str:
        """The metric the search ranked by (:func:`vpr_tune.metrics.ranking`: ``search.metric``
        in space.yaml; several objectives: the first recall or loss, which ``best.pt`` followed)."""
        return metrics.ranking(self.search)[0]

    @property
    def mode(self) -> str:
        """``max`` or ``min``: ``search.mode`` in space.yaml, else the metric's direction."""
        return metrics.ranking(self.search)[1]

    @property
    def objectives(self) -> list[tuple[str, str]]:
        """``(metric, mode)`` of each objective: ``search.objectives``, else the one metric."""
        return metrics.objectives_of(self.search)

    @property
    def multi_objective(self) -> bool:
        """True when the search ranked by several objectives (a Pareto front)."""
        return len(self.objectives) > 1

    def mode_for(self, metric: str) -> str:
        """How a best by ``metric`` is chosen: the search's mode for the search's metric, else
        the metric's own direction (``best_train/loss`` -> ``min``)."""
        name = metrics.base_name(metric)
        return self.mode if name == self.metric else metrics.direction(name)

    @property
    def rungs(self) -> list[int]:
        """ASHA rung epochs (grace_period * reduction_factor**k below max_epochs); [] for FIFO."""
        if _get(self.space, "search.scheduler", "asha") != "asha":
            return []
        grace = _get(self.space, "asha.grace_period", GRACE_PERIOD)
        factor = _get(self.space, "asha.reduction_factor", REDUCTION_FACTOR)
        max_t = _get(self.space, "budget.max_epochs", None)
        if not self.curves.empty:
            max_t = max(int(max_t or 0), int(self.curves["epoch"].max()))
        if not all(isinstance(v, int | float) for v in (grace, factor, max_t)):
            return []
        return rung_epochs(grace, factor, max_t)

    @property
    def population_based(self) -> bool:
        """True for a PBT/PB2 search (trials copy each other's weights: lineages)."""
        return (_get(self.space, "search.scheduler", "") in ("pbt", "pb2")
                or (self.path / "perturbations.csv").exists())

    @property
    def reported(self) -> pd.DataFrame:
        """Every trial-epoch that ran, in the order it finished: the rows of
        ``epochs.jsonl`` (``trial_id``, ``epoch``, the metrics, ``timestamp``). Unlike
        ``curves`` (one row per trial and epoch) it keeps an epoch a trial ran twice (PBT
        restored it from an older checkpoint, a resume repeated it): compute spent. An
        experiment without the file (older, or pulled from a bucket): ``curves``."""
        if self._reported is None:
            from vpr_tune.tune.results import EPOCH_LOG, finished_at, read_result_rows

            rows = [{"trial_id": str(r.get("trial_id", "")), "epoch": int(r["epoch"]),
                     **{m: r.get(m) for m in metrics.REPORTED}, "timestamp": finished_at(r)}
                    for r in read_result_rows(self.path, EPOCH_LOG)
                    if "epoch" in r and not r.get("diverged")]
            known = set(self.curves["trial_id"].astype(str))
            rows = [r for r in rows if r["trial_id"] in known]
            # rows missing from the file (it was cut, or the rows were only in result.json)
            self._reported = (pd.DataFrame(rows) if len(rows) >= len(self.curves) > 0
                              else self.curves)
        return self._reported

    @property
    def trial_epochs(self) -> int:
        """Trial-epochs that ran (:attr:`reported`'s rows)."""
        return len(self.reported)

    @property
    def finished_curves(self) -> pd.DataFrame:
        """``curves`` without ERROR / DIVERGED trials (what rung statistics should use)."""
        return self.curves[~self.curves["trial_id"].isin(failed_trials(self))]

    @property
    def label(self) -> str:
        """Experiment name, with the synthetic-data label when it applies."""
        return f"{self.name} — {SYNTHETIC_LABEL}" if self.synthetic else self.name


# ------------------------------------------------------------------------------ loading
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
        raise UserError(f"unknown experiment {name!r}: no folder {path} "
                        f"(experiments there: {', '.join(known) or 'none'})")
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
        curves = pd.DataFrame(columns=["trial_id", "epoch", *metrics.REPORTED])
    retest_csv = path / "retest.csv"
    retest = read_table(retest_csv) if retest_csv.exists() else None
    space = _read_yaml(path / "space.yaml")
    return Experiment(path=path, trials=trials, curves=curves, retest=retest,
                      varying=varying_columns(trials),
                      synthetic=is_synthetic_experiment(path, space), space=space)


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
    from vpr_tune.data.splits import is_synthetic

    return Path(root).exists() and bool(is_synthetic(Path(root)))


# ------------------------------------------------------------------------------ columns
def hyperparameter_columns(trials: pd.DataFrame) -> list[str]:
    """Columns of ``trials`` that are hyperparameters (dotted paths like ``optimizer.lr``)."""
    return [c for c in trials.columns
            if c not in SUMMARY_COLUMNS and not c.startswith(SUMMARY_PREFIXES) and "/" not in c]


def failed_trials(exp: Experiment) -> list[str]:
    """Ids of ERROR / DIVERGED trials."""
    status = exp.trials["status"].astype(str).str.upper()
    return list(exp.trials.loc[status.isin(statuses.FAILED), "trial_id"])


def varying_columns(trials: pd.DataFrame) -> list[str]:
    """Hyperparameter columns with more than one distinct (non-missing) value across trials."""
    return [c for c in hyperparameter_columns(trials) if trials[c].dropna().nunique() > 1]


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
