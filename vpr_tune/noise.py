"""How sure is a ranking? The 95 % intervals the result tables carry, which trials the data
cannot separate from the winner, and how finely a val split resolves R@N.

Everything here works from per-query first-hit ranks (:mod:`vpr_tune.uncertainty`): the val
ranks a search keeps in ``<experiment>/ranks/<trial_id>.npz`` (one array per epoch) and the
test ranks ``best --retest`` keeps in ``<experiment>/ranks/retest/<trial_id>.npz`` (one
array per test set). ``best``, ``best --retest``, ``compare``, ``eval`` and the report use
it; an experiment without ranks files (made before they were kept, or by hand) gets no
intervals and says so::

    from vpr_tune import noise

    table = noise.add_val_intervals(va.top_table(exp), exp, exp.metric)
    table[["val_R@1", "val_R@1_lo", "val_R@1_hi", "within_noise"]]
    noise.noise_lines(table)   # ["2 trials are within noise of the winner t0 (...): ..."]
    noise.display(table)       # "16.00 (10.7–22.0)" cells for a printed table
    noise.resolution(150)      # what a val split of 150 queries can resolve

The comparison with the winner is a paired bootstrap over the same queries
(:func:`vpr_tune.uncertainty.separated`, scipy's BCa up to 2,000 queries, percentile
beyond, seeded): each trial's ranks at its best epoch by the ranking metric against the
winner's. ``within_noise`` is True when the 95 % interval of the R@N difference contains 0.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vpr_tune import metrics
from vpr_tune.uncertainty import (
    BCA_UP_TO,
    CONFIDENCE,
    RANKS_DIR,
    RESAMPLES,
    SEED,
    load_arrays,
    load_ranks,
    paired_difference,
    ranks_path,
    recall,
    recall_interval,
    save_arrays,
)

WITHIN = "within_noise"  # the best table's column: not separated from the winner
METHOD = ("95 % paired bootstrap over queries (scipy.stats.bootstrap: BCa up to "
          f"{BCA_UP_TO:,} queries, percentile beyond; {RESAMPLES:,} resamples, seeded)")
INTERVAL_NOTE = "(lo–hi): 95 % bootstrap interval over queries"
UNAVAILABLE = ("intervals unavailable: no per-query ranks in {where} (an experiment made "
               "before vpr-tune kept them, or by hand)")
RETEST_DIR = "retest"  # <experiment>/ranks/retest/<trial_id>.npz: one array per test set
_RECALL = re.compile(r"R@(\d+)$")


# ------------------------------------------------------------------------ names
def recall_n(column: str) -> int | None:
    """``val_R@5`` -> 5, ``sf_test_R@1`` -> 1; None for any other column."""
    hit = _RECALL.search(str(column))
    return int(hit.group(1)) if hit else None


def compared_n(metric: str) -> int:
    """The N of the R@N two models are compared on: the ranking metric's when it is a
    recall (``val/R@5`` -> 5), else R@1 (``val/MRR``, ``train/loss``).

    >>> compared_n("val/R@5"), compared_n("train/loss")
    (5, 1)
    """
    return recall_n(metrics.base_name(metric)) or 1


def interval_columns(column: str) -> tuple[str, str]:
    """``val_R@1`` -> (``val_R@1_lo``, ``val_R@1_hi``)."""
    return metrics.interval_columns(column)


def within_column(prefix: str = "") -> str:
    """``within_noise`` (val), ``sf_test_within_noise`` (a test set)."""
    return f"{prefix}_{WITHIN}" if prefix else WITHIN


# ------------------------------------------------------------------------ ranks
def best_epoch(curves: pd.DataFrame, trial_id: str, metric: str, mode: str) -> int | None:
    """The epoch at which a trial reached its best ``metric`` (first of equals)."""
    if curves is None or curves.empty or metric not in curves:
        return None
    rows = curves[curves["trial_id"].astype(str) == str(trial_id)]
    rows = rows.dropna(subset=[metric])
    best = metrics.best_index(rows[metric].tolist(), mode)
    return None if best is None else int(rows.iloc[best]["epoch"])


class ValRanks:
    """The val ranks an experiment kept, each trial's file read once::

        ranks = ValRanks(exp)
        ranks.at_best("a1b2", "val/R@1", "max")   # (Q,) uint8 at its best epoch, or None
    """

    def __init__(self, exp: Any) -> None:
        self.exp = exp
        self.folder = Path(exp.path) / RANKS_DIR
        self._files: dict[str, dict[int, np.ndarray]] = {}
        self._paths: dict[str, list[tuple[int, str]]] | None = None  # PBT lineages, lazily
        self._values: dict[str, dict[tuple[str, int], Any]] = {}  # metric -> (trial, epoch)

    @property
    def available(self) -> bool:
        """True when the experiment kept any val ranks."""
        return self.folder.is_dir() and any(self.folder.glob("*.npz"))

    def of(self, trial_id: str) -> dict[int, np.ndarray]:
        tid = str(trial_id)
        if tid not in self._files:
            self._files[tid] = load_ranks(ranks_path(self.exp.path, tid))
        return self._files[tid]

    def at_best(self, trial_id: str, metric: str, mode: str) -> np.ndarray | None:
        """The trial's val ranks at its best epoch by ``metric`` under ``mode``; a PBT/PB2
        trial's over its lineage (as trials.csv's ``best_`` columns), from the ranks of the
        trial that ran that epoch."""
        path = self._lineages().get(str(trial_id))
        if path:
            return self._at_best_of_lineage(path, metrics.base_name(metric), mode)
        by_epoch = self.of(trial_id)
        if not by_epoch:
            return None
        return by_epoch.get(best_epoch(self.exp.curves, trial_id, metrics.base_name(metric),
                                       mode))

    def _lineages(self) -> dict[str, list[tuple[int, str]]]:
        """PBT/PB2: each trial's ``(epoch, ran_in)`` lineage; {} for other searches."""
        if self._paths is None:
            from vpr_tune.tune.lineage import lineage_epochs, read_perturbations

            moves = read_perturbations(Path(self.exp.path))
            trials = self.exp.trials
            self._paths = {} if moves is None or moves.empty or "epochs" not in trials else \
                lineage_epochs(moves, {str(t): int(e) for t, e in zip(
                    trials["trial_id"], trials["epochs"].fillna(0), strict=True)})
        return self._paths

    def _at_best_of_lineage(self, path: list[tuple[int, str]], metric: str, mode: str
                            ) -> np.ndarray | None:
        curves = self.exp.curves
        if curves is None or curves.empty or metric not in curves:
            return None
        if metric not in self._values:  # built once, read for every trial
            self._values[metric] = {(str(t), int(e)): v for t, e, v in zip(
                curves["trial_id"], curves["epoch"], curves[metric], strict=True)}
        value = self._values[metric]
        best = metrics.best_index([value.get((ran_in, epoch)) for epoch, ran_in in path], mode)
        if best is None:
            return None
        epoch, ran_in = path[best]
        return self.of(ran_in).get(epoch)


def retest_ranks_path(exp_dir: Path, trial_id: str) -> Path:
    """Where ``best --retest`` keeps a trial's test-set ranks."""
    return Path(exp_dir) / RANKS_DIR / RETEST_DIR / f"{trial_id}.npz"


# a retest's ranks: {set name: ranks}, one array per test set, in one atomic file
save_set_ranks, load_set_ranks = save_arrays, load_arrays


# ------------------------------------------------------------------------ tables
def _insert_after(table: pd.DataFrame, column: str, new: dict[str, list[Any]]) -> None:
    at = table.columns.get_loc(column) + 1
    for offset, (name, values) in enumerate(new.items()):
        if name in table:
            table[name] = values
        else:
            table.insert(at + offset, name, values)


def _interval_or_nan(ranks: np.ndarray | None, n: int) -> tuple[float, float]:
    if ranks is None or not len(ranks):
        return math.nan, math.nan
    lo, hi = recall_interval(ranks, n)
    return round(lo, 4), round(hi, 4)


def add_val_intervals(table: pd.DataFrame, exp: Any, metric: str,
                      ranks: ValRanks | None = None, compare: bool = True) -> pd.DataFrame:
    """``table`` (the best, front or retest table: ``trial_id`` and ``val_R@N`` columns) with
    ``val_R@N_lo``/``_hi`` after each ``val_R@N`` and ``within_noise``: the trial is not
    separated from the first row's (the winner's) R@N, N from :func:`compared_n`, by a paired
    bootstrap over the val queries at each trial's best epoch by ``metric`` (None where a
    trial's ranks are missing). ``attrs["noise"]`` describes the comparison for
    :func:`noise_lines`. ``compare=False`` (a Pareto front: no single winner): intervals
    only. An interval is trials.csv's ``best_val/R@N_lo``/``_hi`` when
    there, else computed from the ranks at the epoch of that best value."""
    table = table.copy()
    ranks = ranks or ValRanks(exp)
    trials = exp.trials.set_index(exp.trials["trial_id"].astype(str))
    ids = table["trial_id"].astype(str).tolist()
    for col in [c for c in table.columns if c.startswith("val_") and recall_n(c)]:
        n = recall_n(col)
        stored = metrics.interval_columns(metrics.summary_column(f"val/R@{n}"))
        lows, highs = [], []
        for tid in ids:
            lo, hi = (trials.loc[tid, c] if tid in trials.index and c in trials else math.nan
                      for c in stored)
            lo, hi = (float(lo), float(hi)) if pd.notna(lo) and pd.notna(hi) else (
                _interval_or_nan(ranks.at_best(tid, f"val/R@{n}", "max"), n))
            lows.append(lo)
            highs.append(hi)
        _insert_after(table, col, dict(zip(interval_columns(col), (lows, highs), strict=True)))
    if not compare:
        return table
    mode = exp.mode_for(metric)
    by_trial = [ranks.at_best(tid, metric, mode) for tid in ids]
    n = compared_n(metric)
    table[WITHIN] = within_noise(by_trial, n)
    info: dict[str, Any] = {"split": "val", "column": WITHIN, "n": n, "metric": metric,
                            "winner": ids[0] if ids else None}
    if not ranks.available or not ids or by_trial[0] is None:
        where = ranks.folder if not ranks.available else (
            ranks_path(exp.path, ids[0]) if ids else ranks.folder)
        info["unavailable"] = UNAVAILABLE.format(where=where)
    else:
        info["queries"] = len(by_trial[0])
    table.attrs.setdefault("noise", []).append(info)
    return table


def within_noise(ranks: list[np.ndarray | None], n: int, winner: int = 0) -> list[bool | None]:
    """For each model's ranks: True when a paired bootstrap over the queries cannot separate
    its R@n from ``ranks[winner]``'s (the winner itself: True); None when either has no ranks
    or they were not measured on the same queries (another length)."""
    best = ranks[winner] if ranks else None
    out: list[bool | None] = []
    for i, r in enumerate(ranks):
        if best is None or r is None or len(r) != len(best):
            out.append(None)
        elif i == winner:
            out.append(True)
        else:
            lo, hi = paired_difference(r, best, n)
            out.append(not (lo > 0 or hi < 0))
    return out


def add_set_intervals(table: pd.DataFrame, set_name: str, ranks: list[np.ndarray | None],
                      n: int) -> pd.DataFrame:
    """The retest table with ``<set>_R@N_lo``/``_hi`` after each ``<set>_R@N`` (from each
    row's ``ranks`` on that set) and ``<set>_within_noise``: not separated from that set's
    winner (the row with the highest ``<set>_R@n``; the first of equals), paired bootstrap
    over the set's queries."""
    table = table.copy()
    for col in [c for c in table.columns if c.startswith(f"{set_name}_R@")
                and not c.endswith(("_lo", "_hi"))]:
        k = recall_n(col)
        lows, highs = zip(*(_interval_or_nan(r, k) for r in ranks), strict=True) \
            if ranks else ((), ())
        _insert_after(table, col, dict(zip(interval_columns(col), (list(lows), list(highs)),
                                           strict=True)))
    values = table[f"{set_name}_R@{n}"].astype(float).tolist() if len(table) else []
    winner = metrics.best_index(values, "max") or 0
    column = within_column(set_name)
    table[column] = within_noise(ranks, n, winner) if len(table) else []
    info: dict[str, Any] = {"split": set_name, "column": column, "n": n,
                            "winner": str(table["trial_id"].iloc[winner]) if len(table) else None}
    if not ranks or ranks[winner] is None:
        info["unavailable"] = f"{set_name}: intervals unavailable (no per-query test ranks)"
    else:
        info["queries"] = len(ranks[winner])
    table.attrs.setdefault("noise", []).append(info)
    return table


def noise_lines(table: pd.DataFrame) -> list[str]:
    """In words, for each comparison :func:`add_val_intervals` / :func:`add_set_intervals`
    made: how many trials are within noise of the winner, and by which test."""
    lines = []
    for info in table.attrs.get("noise", []):
        if "unavailable" in info:
            lines.append(info["unavailable"])
            continue
        split, col, n, winner = info["split"], info["column"], info["n"], info["winner"]
        if col not in table:
            continue
        marks = table[col].tolist()
        ids = table["trial_id"].astype(str).tolist()
        within = [t for t, m in zip(ids, marks, strict=True) if m is True and t != winner]
        unknown = [t for t, m in zip(ids, marks, strict=True) if m is None]
        others = len(ids) - 1 - len(unknown)
        where = "the winner" if split == "val" else f"the {split} winner"
        how = (f"95 % paired bootstrap of R@{n} over {info['queries']} {split} queries"
               + (f", each trial at its best epoch by {info['metric']}" if split == "val"
                  else ""))
        if len(ids) < 2:
            text = f"one trial ranked on {split}: nothing to compare it with"
        elif within:
            verb = "trial is" if len(within) == 1 else "trials are"
            text = (f"{len(within)} {verb} within noise of {where} {winner} "
                    f"({', '.join(within)}): {how}")
        else:
            text = (f"no trial is within noise of {where} {winner}: the data separate it "
                    f"from {'the other' if others == 1 else f'all {others} others'} ({how})")
        if unknown:
            text += f"; not compared (no ranks on the same queries): {', '.join(unknown)}"
        lines.append(text)
    return lines


def noise_json(table: pd.DataFrame) -> list[dict[str, Any]]:
    """``attrs["noise"]`` as JSON: one object per comparison (split, column, n, winner,
    queries or ``unavailable``) and the method."""
    return [{**info, "method": METHOD} for info in table.attrs.get("noise", [])]


def display(frame: pd.DataFrame) -> pd.DataFrame:
    """A table to print: each recall ``X`` with ``X_lo``/``X_hi`` becomes one text cell
    ``"16.00 (10.7–22.0)"`` (just ``"16.00"`` without an interval); ``within_noise``
    columns read ``winner`` / ``yes`` / ``no`` (empty: not compared)."""
    out = frame.copy()
    for col in list(out.columns):
        lo, hi = interval_columns(col)
        if lo in out and hi in out:
            out[col] = [_cell(v, a, b) for v, a, b in zip(out[col], out[lo], out[hi],
                                                          strict=True)]
            out = out.drop(columns=[lo, hi])
    infos = {i["column"]: i for i in frame.attrs.get("noise", [])}
    for col in [c for c in out.columns if str(c).endswith(WITHIN)]:
        winner = infos.get(col, {}).get("winner") or _winner_of(frame, col)
        out[col] = ["winner" if str(t) == str(winner) and m is not None else
                    "" if m is None or (isinstance(m, float) and math.isnan(m)) else
                    "yes" if bool(m) else "no"
                    for t, m in zip(out["trial_id"], out[col], strict=True)]
    out.attrs = {}
    return out


def _winner_of(frame: pd.DataFrame, column: str) -> str | None:
    """A table read back from a CSV (no ``attrs``): val's winner is the first row, a test
    set's the row with its highest R@1."""
    if not len(frame):
        return None
    prefix = str(column).removesuffix(WITHIN).removesuffix("_")
    values = frame.get(f"{prefix}_R@1") if prefix else None
    best = metrics.best_index(values.astype(float).tolist(), "max") if values is not None \
        else 0
    return str(frame["trial_id"].iloc[best or 0])


def _cell(value: Any, lo: Any, hi: Any) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "" if value is None else str(value)
    if math.isnan(v):
        return ""
    if pd.isna(lo) or pd.isna(hi):
        return f"{v:.2f}"
    return f"{v:.2f} ({float(lo):.1f}–{float(hi):.1f})"


# ------------------------------------------------------------------------ two models
@dataclass(frozen=True)
class Paired:
    """A paired comparison of two models' R@n on the same queries: ``a - b`` in points."""

    n: int
    queries: int
    a: float
    b: float
    lo: float
    hi: float

    @property
    def separated(self) -> bool:
        """The 95 % interval of the difference excludes 0: the data tell them apart."""
        return self.lo > 0 or self.hi < 0

    def words(self, a: str, b: str, split: str = "val") -> str:
        verdict = ("separated: the data tell them apart" if self.separated else
                   "not separated: the data cannot tell them apart")
        return (f"{a} vs {b}: R@{self.n} {self.a:.2f} vs {self.b:.2f}, difference "
                f"{self.a - self.b:+.2f} points (95 % paired bootstrap over the same "
                f"{self.queries} {split} queries: {self.lo:+.2f} to {self.hi:+.2f}): {verdict}")


def paired(a: np.ndarray, b: np.ndarray, n: int) -> Paired:
    """R@n of ``a`` and ``b`` and the paired 95 % interval of their difference."""
    lo, hi = paired_difference(a, b, n)
    return Paired(n, len(a), recall(a, n), recall(b, n), round(lo, 4), round(hi, 4))


def mean_difference_interval(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """95 % paired bootstrap interval (points) of ``mean(a) - mean(b)`` over the same queries,
    for per-query values in [0, 1] (e.g. a query's hit rate over several seeds)."""
    from scipy import stats

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    point = float((a.mean() - b.mean()) * 100.0)
    if len(a) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return point, point
    res = stats.bootstrap((a, b), lambda x, y, axis=-1: (x.mean(axis) - y.mean(axis)) * 100,
                          paired=True, vectorized=True, confidence_level=CONFIDENCE,
                          n_resamples=RESAMPLES,
                          method="BCa" if len(a) <= BCA_UP_TO else "percentile",
                          rng=np.random.default_rng(SEED))
    lo, hi = res.confidence_interval
    return float(lo), float(hi)
