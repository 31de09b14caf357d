"""One search's folder as an :class:`Experiment`: ``trials.csv``, ``metrics.csv``,
``space.yaml`` and ``retest.csv`` read into pandas frames, with what the search was (its
metric and direction, objectives, ASHA rungs, PBT) and which columns are hyperparameters.

Reached as ``vpr_tune.analysis`` (``va.load_experiment("demo")``), which adds the rankings,
tables and statistics of an experiment; this module knows nothing of those.

Column names follow ``docs/CONTRACTS.md``: ``trials.csv`` holds ``trial_id, status``, the
dotted hyperparameter columns, and ``best_<m>, last_<m>`` for each metric ``m`` of
``metrics.SEARCHABLE``; ``metrics.csv`` holds ``trial_id, epoch`` and ``metrics.REPORTED``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from vpr_tune import metrics, statuses
from vpr_tune.errors import UserError
from vpr_tune.rungs import GRACE_PERIOD, REDUCTION_FACTOR, rung_epochs
from vpr_tune.tune.results import read_table

# trials.csv columns that are not hyperparameters.
SUMMARY_COLUMNS = (
    "rank", "trial_id", "status", "epochs", "time_s", "node_id", "error", "checkpoint", "logdir",
    "pareto", *metrics.COSTS,
)
SUMMARY_PREFIXES = ("best_", "last_", "val/", "train/", "time", "timestamp")
SYNTHETIC_LABEL = "synthetic (street-world)"


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
