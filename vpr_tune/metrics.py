"""The metrics a trial reports, in one place: names, which a search may rank on, and which
way is better. Everything that lists a metric or picks a best imports it from here::

    from vpr_tune import metrics

    metrics.SEARCHABLE                      # ('val/R@1', ..., 'val/R@25', 'train/loss')
    metrics.direction("train/loss")         # 'min'
    metrics.best_index([3.0, 1.0, 2.0], "min")   # 1
    metrics.summary_column("val/R@10")      # 'best_val/R@10' (the trials.csv column)
    metrics.OBJECTIVES                      # SEARCHABLE + descriptor_dim, query_ms, params_m
    metrics.objective_column("query_ms")    # 'query_ms' (its trials.csv column)
    metrics.ranking({"metric": "train/loss"})   # ('train/loss', 'min'): what ranks trials
    metrics.running_best([1.0, 3.0, 2.0], "max")   # [1.0, 3.0, 3.0]

Plain Python only: the config validator imports this module.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

# Recall@N cut-offs: evaluate computes ``R@N`` for each, a trial reports ``val/R@N``.
RECALL_NS = (1, 5, 10, 25)
RECALLS = tuple(f"R@{n}" for n in RECALL_NS)
VAL_RECALLS = tuple(f"val/{r}" for r in RECALLS)
# Mean reciprocal rank of each query's first positive (percent): every rank counts, not
# only the first N, so it moves less from one query to the next than R@1 (vpr_tune/uncertainty.py).
MRR = "val/MRR"
# The mean of val R@1/5/10/25: the early signal that ranked trials most like their final
# best R@1 in the pilots of docs/performance.md ("Rung signals"), what asha.metric judges.
MEAN_RECALL = "val/R@mean"
LOSS = "train/loss"
LR = "lr"
# What a model costs, reported every epoch next to the recalls (lower is better):
DESCRIPTOR_DIM = "descriptor_dim"  # the aggregator's output size
QUERY_MS = "query_ms"  # median ms: one query at batch 1 + exact search of a val-sized database
PARAMS_M = "params_m"  # model parameters in millions
COSTS = {DESCRIPTOR_DIM: "min", QUERY_MS: "min", PARAMS_M: "min"}
# What every epoch reports, in the order metrics.csv lists it (after trial_id/epoch).
REPORTED = (LOSS, LR, *VAL_RECALLS, MRR, MEAN_RECALL, *COSTS)
# Metrics a search may rank on (``search.metric``), each with its natural direction.
DIRECTIONS = {**{m: "max" for m in VAL_RECALLS}, MRR: "max", MEAN_RECALL: "max", LOSS: "min"}
# Reported next to the metrics each epoch (text, not a number): the val split's per-query
# first-hit ranks, kept by the driver in <experiment>/ranks/ (uncertainty.encode).
RANKS = "val/ranks"
SEARCHABLE = tuple(DIRECTIONS)
# What ``search.objectives`` may list: a searchable metric or a cost. At most three at once
# (the hypervolume the report draws is exact up to three), at least one searchable.
OBJECTIVES = (*SEARCHABLE, *COSTS)
MAX_OBJECTIVES = 3
DEFAULT_METRIC = "val/R@1"
MODES = ("max", "min")
# trials.csv summary columns of one metric: its best and its last value.
SUMMARY_KINDS = ("best", "last")


def direction(metric: str) -> str:
    """``max`` or ``min``: which way ``metric`` (or its ``best_``/``last_`` column) improves.

    >>> direction("val/R@5"), direction("best_train/loss")
    ('max', 'min')
    """
    name = base_name(metric)
    if name in COSTS:
        return COSTS[name]
    if name not in DIRECTIONS:
        from vpr_tune.errors import UserError

        raise UserError(f"unknown metric {metric!r}: one of {', '.join(OBJECTIVES)}")
    return DIRECTIONS[name]


def objective_column(metric: str) -> str:
    """The trials.csv column holding a trial's one value of an objective: ``best_<m>`` for a
    searchable metric, the bare name for a cost (``query_ms``: the median over its epochs).

    >>> objective_column("val/R@1"), objective_column("descriptor_dim")
    ('best_val/R@1', 'descriptor_dim')
    """
    return metric if metric in COSTS else summary_column(metric)


def objectives_of(search: dict[str, Any] | None) -> list[tuple[str, str]]:
    """``(metric, mode)`` pairs of a validated ``search`` section: ``search.objectives``, else
    the one objective ``search.metric``/``mode``.

    >>> objectives_of({"objectives": [{"metric": "val/R@1", "mode": "max"},
    ...                               {"metric": "query_ms", "mode": "min"}]})
    [('val/R@1', 'max'), ('query_ms', 'min')]
    >>> objectives_of({"metric": "train/loss"})
    [('train/loss', 'min')]
    """
    search = search or {}
    if search.get("objectives"):
        return [(str(o["metric"]), str(o.get("mode") or direction(o["metric"])))
                for o in search["objectives"]]
    return [(str(search.get("metric") or DEFAULT_METRIC), mode_of(search))]


def mode_of(search: dict[str, Any] | None) -> str:
    """The mode of a ``search`` config section: ``search.mode``, else the metric's direction."""
    search = search or {}
    mode = search.get("mode")
    return str(mode) if mode in MODES else direction(str(search.get("metric") or DEFAULT_METRIC))


def ranking(search: dict[str, Any] | None) -> tuple[str, str]:
    """``(metric, mode)`` that ranks a search's trials and picks each trial's ``best.pt``:
    ``search.metric``; with several objectives and no metric, the first searchable one;
    ``DEFAULT_METRIC`` when none is given or the name is not searchable. The mode is
    ``search.mode`` when set, else the metric's direction.

    >>> ranking({"metric": "train/loss"}), ranking(None)
    (('train/loss', 'min'), ('val/R@1', 'max'))
    >>> ranking({"objectives": [{"metric": "query_ms"}, {"metric": "val/R@5"}]})
    ('val/R@5', 'max')
    """
    search = search or {}
    metric = search.get("metric")
    if metric is None and search.get("objectives"):
        metric = next((o["metric"] for o in search["objectives"] if o["metric"] in SEARCHABLE),
                      None)
    metric = metric if metric in SEARCHABLE else DEFAULT_METRIC
    return str(metric), mode_of({**search, "metric": metric})


def base_name(column: str) -> str:
    """``best_val/R@1`` -> ``val/R@1``; a plain metric name is returned as it is."""
    column = column.strip()
    for kind in SUMMARY_KINDS:
        if column.startswith(f"{kind}_"):
            return column[len(kind) + 1:]
    return column


def summary_column(metric: str, kind: str = "best") -> str:
    """``val/R@1`` -> ``best_val/R@1`` (the trials.csv column a metric ranks by); a name that
    already is a summary column is returned as it is.

    >>> summary_column("val/R@10"), summary_column("train/loss", "last")
    ('best_val/R@10', 'last_train/loss')
    """
    metric = metric.strip()
    if metric.startswith(tuple(f"{k}_" for k in SUMMARY_KINDS)):
        return metric
    return f"{kind}_{metric}"


def summary_columns() -> list[str]:
    """Every trials.csv summary column: ``best_<m>``, ``last_<m>`` for each searchable ``m``."""
    return [summary_column(m, k) for m in SEARCHABLE for k in SUMMARY_KINDS]


def with_mean_recall(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with ``val/R@mean`` (the mean of its val R@1/5/10/25) when it has them all.

    >>> with_mean_recall({"val/R@1": 10.0, "val/R@5": 20.0, "val/R@10": 30.0,
    ...                   "val/R@25": 40.0})["val/R@mean"]
    25.0
    """
    values = [row.get(m) for m in VAL_RECALLS]
    if MEAN_RECALL in row or any(not isinstance(v, (int, float)) for v in values):
        return row
    return {**row, MEAN_RECALL: round(sum(values) / len(values), 4)}


def interval_columns(column: str) -> tuple[str, str]:
    """``best_val/R@1`` -> (``best_val/R@1_lo``, ``best_val/R@1_hi``): the 95 % bootstrap
    interval over queries of that value (trials.csv, every ``--json``)."""
    return f"{column}_lo", f"{column}_hi"


def recall_interval_columns() -> list[str]:
    """The interval columns trials.csv keeps: one pair per ``best_val/R@N``."""
    return [c for m in VAL_RECALLS for c in interval_columns(summary_column(m))]


def sort_ascending(mode: str) -> bool:
    """For ``sort_values(ascending=...)``: best first."""
    return mode == "min"


def _value(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def is_better(new: Any, old: Any, mode: str) -> bool:
    """True when ``new`` beats ``old`` under ``mode``; a missing ``old`` is always beaten by a
    value, and a missing ``new`` beats nothing (ties keep the old one)."""
    a, b = _value(new), _value(old)
    if a is None:
        return False
    return b is None or (a > b if mode == "max" else a < b)


def best_index(values: Sequence[Any] | Iterable[Any], mode: str) -> int | None:
    """Index of the best value (the first of equals); missing or NaN values never win;
    None when there is no value at all.

    >>> best_index([1.0, None, 3.0, 3.0], "max"), best_index([2.0, 0.5], "min")
    (2, 1)
    """
    best: int | None = None
    values = list(values)
    for i, v in enumerate(values):
        if is_better(v, values[best] if best is not None else None, mode):
            best = i
    return best


def best_value(values: Iterable[Any], mode: str) -> float | None:
    """The best of ``values`` under ``mode`` (None when there is none)."""
    values = list(values)
    i = best_index(values, mode)
    return None if i is None else float(values[i])


def running_best(values: Iterable[Any], mode: str) -> list[float]:
    """The best value so far after each of ``values`` (a best-so-far curve); missing or NaN
    values keep the best before them (NaN until there is one).

    >>> running_best([2.0, None, 1.0, 3.0], "max"), running_best([2.0, 1.0, 3.0], "min")
    ([2.0, 2.0, 2.0, 3.0], [2.0, 1.0, 1.0])
    """
    out: list[float] = []
    best = math.nan
    for v in values:
        if is_better(v, best, mode):
            best = float(v)
        out.append(best)
    return out


def worst(mode: str) -> float:
    """The worst value a metric can take under ``mode``: what a diverged trial reports."""
    return 0.0 if mode == "max" else math.inf
