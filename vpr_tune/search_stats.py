"""Statistics of a search's tables (plain pandas frames in, frames out): the best value so
far against compute spent, how well an early rung's ranking predicts the final one, and
whether the val ranking transfers to the test sets. :mod:`vpr_tune.analysis` re-exports
them next to the experiment they are usually fed from::

    from vpr_tune import analysis as va

    va.best_so_far(exp.curves)                          # best val R@1 vs trial-epochs
    va.rung_spearman(exp.finished_curves, rung_epoch=1)
    va.rank_transfer(exp.retest)                        # val vs test rankings
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from vpr_tune import metrics


def best_so_far(
    curves: pd.DataFrame, metric: str = metrics.DEFAULT_METRIC, exclude: Iterable[str] = (),
    mode: str | None = None,
) -> pd.DataFrame:
    """Best ``metric`` seen so far against cumulative trial-epochs spent.

    Rows are taken in the order they were reported (``timestamp``/``time_total_s`` when
    present, else file order). Epochs of ``exclude`` trials (e.g. failed ones, which never
    rank) cost compute but never count as best. ``mode`` defaults to the metric's direction
    (the lowest ``train/loss`` so far). Returns ``trial_epochs``, ``trial_id``, ``metric``,
    ``best``.
    """
    mode = mode or metrics.direction(metric)
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
            "best": np.array(metrics.running_best(frame[metric], mode), dtype=float),
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
    curves: pd.DataFrame, rung_epoch: int, metric: str = metrics.DEFAULT_METRIC
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


def rung_spearman_table(curves: pd.DataFrame, metric: str = metrics.DEFAULT_METRIC) -> pd.DataFrame:
    """:func:`rung_spearman` for every epoch before the last one (one row per epoch)."""
    if curves.empty:
        return pd.DataFrame(columns=["rung_epoch", "n_trials", "spearman", "pvalue"])
    epochs = sorted(int(e) for e in curves["epoch"].dropna().unique())[:-1]
    rows = [rung_spearman(curves, e, metric).__dict__ for e in epochs]
    return pd.DataFrame(rows, columns=["rung_epoch", "n_trials", "spearman", "pvalue"])


def retest_columns(retest: pd.DataFrame, n: int = 1) -> list[str]:
    """The ``<set>_R@n`` columns of a retest table other than val (e.g. sf_test_R@1, tokyo_R@1)."""
    return [c for c in retest.columns if c.endswith(f"_R@{n}") and not c.startswith("val_")]


def rank_transfer(retest: pd.DataFrame, n: int = 1) -> pd.DataFrame:
    """Spearman's rho and Kendall's tau between val R@n and each test set's R@n across the
    retested configs: does the val ranking transfer? One row per test set with the number
    of ``configs`` (NaN with < 3 configs or a constant column)."""
    from scipy.stats import kendalltau, spearmanr

    rows = []
    for col in retest_columns(retest, n):
        val, test = retest[f"val_R@{n}"].astype(float), retest[col].astype(float)
        ok = len(retest) >= 3 and val.nunique() > 1 and test.nunique() > 1
        rho = float(spearmanr(val, test).statistic) if ok else math.nan
        tau = float(kendalltau(val, test).statistic) if ok else math.nan
        rows.append({"test_set": col.removesuffix(f"_R@{n}"), "configs": len(retest),
                     "spearman": rho, "kendall": tau})
    return pd.DataFrame(rows, columns=["test_set", "configs", "spearman", "kendall"])
