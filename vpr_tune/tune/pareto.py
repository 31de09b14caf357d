"""Pareto fronts of trials on several objectives: sorting, crowding, hypervolume.

Every function takes the objectives as ``(metric, mode)`` pairs with mode ``"min"`` or
``"max"``. Internally each column is turned into a loss (``max`` columns negated), so one
point dominates another when it is no worse on every objective and better on at least
one. Equal points do not dominate each other: both stay on the front.

>>> import pandas as pd
>>> frame = pd.DataFrame({"val/R@1": [80.0, 70.0, 60.0], "descriptor_dim": [512, 128, 512],
...                       "status": ["TERMINATED"] * 3})
>>> objectives = [("val/R@1", "max"), ("descriptor_dim", "min")]
>>> pareto_flags(frame, objectives).tolist()
[True, True, False]
>>> non_dominated_fronts(losses(frame, objectives))
[[0, 1], [2]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

Objective = tuple[str, str]
# trials that did not finish cleanly never sit on the front
FAILED_STATUSES = ("ERROR", "DIVERGED")


def losses(frame: pd.DataFrame, objectives: Sequence[Objective]) -> np.ndarray:
    """The objective columns as an (n, k) float array to minimise (``max`` columns negated).

    >>> losses(pd.DataFrame({"a": [1.0], "b": [2.0]}), [("a", "max"), ("b", "min")]).tolist()
    [[-1.0, 2.0]]
    """
    columns = []
    for metric, mode in objectives:
        if mode not in ("min", "max"):
            raise ValueError(f"mode of {metric!r} must be 'min' or 'max', got {mode!r}")
        values = pd.to_numeric(frame[metric], errors="coerce").to_numpy(dtype=float)
        columns.append(-values if mode == "max" else values)
    return np.column_stack(columns) if columns else np.empty((len(frame), 0))


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """True when loss vector ``a`` is no worse than ``b`` everywhere and better somewhere.

    >>> dominates(np.array([1, 2]), np.array([1, 3])), dominates(np.array([1, 2]), np.array([1, 2]))
    (True, False)
    """
    return bool(np.all(a <= b) and np.any(a < b))


def non_dominated_fronts(points: np.ndarray) -> list[list[int]]:
    """Row indices of ``points`` (losses) split into fronts, best front first.

    Fast non-dominated sort (Deb et al., NSGA-II): O(k n^2), fine for the hundreds of
    trials a search has. Rows holding NaN are left out of every front.

    >>> non_dominated_fronts(np.array([[1.0, 3.0], [2.0, 2.0], [2.0, 3.0], [3.0, 3.0]]))
    [[0, 1], [2], [3]]
    """
    points = np.asarray(points, dtype=float)
    valid = [i for i in range(len(points)) if not np.isnan(points[i]).any()]
    dominated_by: dict[int, list[int]] = {i: [] for i in valid}  # i dominates these
    count = {i: 0 for i in valid}  # how many dominate i
    for pos, i in enumerate(valid):
        for j in valid[pos + 1:]:
            if dominates(points[i], points[j]):
                dominated_by[i].append(j)
                count[j] += 1
            elif dominates(points[j], points[i]):
                dominated_by[j].append(i)
                count[i] += 1
    fronts: list[list[int]] = []
    current = [i for i in valid if count[i] == 0]
    while current:
        fronts.append(sorted(current))
        following = []
        for i in current:
            for j in dominated_by[i]:
                count[j] -= 1
                if count[j] == 0:
                    following.append(j)
        current = following
    return fronts


def crowding_distance(points: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each row within one front (larger = more isolated).

    The extreme points of each objective get ``inf`` so a ranking keeps the front's ends.

    >>> crowding_distance(np.array([[0.0, 2.0], [1.0, 1.0], [2.0, 0.0]])).tolist()
    [inf, 2.0, inf]
    """
    points = np.asarray(points, dtype=float)
    n, k = points.shape
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for m in range(k):
        order = np.argsort(points[:, m], kind="stable")
        column = points[order, m]
        distance[order[0]] = distance[order[-1]] = np.inf
        span = column[-1] - column[0]
        if not np.isfinite(span) or span <= 0:
            continue  # all equal (or an infinite end): the objective separates nothing
        distance[order[1:-1]] += (column[2:] - column[:-2]) / span
    return distance


def front_and_crowding(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: its front number (0 = non-dominated; NaN rows get ``len(points)``) and its
    crowding distance within that front (NaN rows get 0).

    >>> points = np.array([[0.0, 2.0], [1.0, 1.0], [2.0, 0.0], [3.0, 3.0]])
    >>> front, crowd = front_and_crowding(points)
    >>> front.tolist(), crowd.tolist()
    ([0, 0, 0, 1], [inf, 2.0, inf, inf])
    """
    points = np.asarray(points, dtype=float)
    front = np.full(len(points), len(points), dtype=int)
    crowd = np.zeros(len(points))
    for number, members in enumerate(non_dominated_fronts(points)):
        front[members] = number
        crowd[members] = crowding_distance(points[members])
    return front, crowd


def rank_order(points: np.ndarray) -> list[int]:
    """Row indices from best to worst: by front, then by crowding distance within a front.

    Rows with NaN come last. Ties keep row order, so the result is deterministic.

    >>> rank_order(np.array([[3.0, 3.0], [0.0, 2.0], [1.0, 1.0], [2.0, 0.0]]))
    [1, 3, 2, 0]
    """
    front, crowd = front_and_crowding(points)
    return sorted(range(len(front)), key=lambda i: (front[i], -crowd[i]))


def hypervolume(points: np.ndarray, reference: Sequence[float]) -> float:
    """Volume dominated by ``points`` (losses) and bounded by ``reference``, exact for k <= 3.

    Points not strictly better than the reference on every objective add nothing. For
    k = 2 a sweep; for k = 3 slices along the last objective, each a 2-d sweep (O(n^2 log n)).

    >>> hypervolume(np.array([[1.0, 2.0], [2.0, 1.0]]), [3.0, 3.0])
    3.0
    """
    points = np.asarray(points, dtype=float).reshape(-1, len(reference))
    ref = np.asarray(reference, dtype=float)
    points = points[~np.isnan(points).any(axis=1)]
    points = points[np.all(points < ref, axis=1)]
    k = len(ref)
    if len(points) == 0:
        return 0.0
    if k == 1:
        return float(ref[0] - points[:, 0].min())
    if k == 2:
        return _hypervolume_2d(points, ref)
    if k == 3:
        order = np.argsort(points[:, 2], kind="stable")
        points = points[order]
        volume = 0.0
        for i in range(len(points)):
            upper = points[i + 1, 2] if i + 1 < len(points) else ref[2]
            if upper > points[i, 2]:
                volume += _hypervolume_2d(points[: i + 1, :2], ref[:2]) * (upper - points[i, 2])
        return float(volume)
    raise ValueError(f"hypervolume is exact for 1 to 3 objectives, got {k}")


def _hypervolume_2d(points: np.ndarray, ref: np.ndarray) -> float:
    order = np.lexsort((points[:, 1], points[:, 0]))  # by first objective, then second
    area, best_second = 0.0, ref[1]
    for x, y in points[order]:
        if y < best_second:
            area += (ref[0] - x) * (best_second - y)
            best_second = y
    return float(area)


def finished_mask(frame: pd.DataFrame, objectives: Sequence[Objective]) -> pd.Series:
    """Rows that may sit on a front: not ERROR/DIVERGED and every objective value present."""
    ok = pd.Series(True, index=frame.index)
    if "status" in frame.columns:
        ok &= ~frame["status"].isin(FAILED_STATUSES)
    for metric, _ in objectives:
        if metric not in frame.columns:
            return pd.Series(False, index=frame.index)
        ok &= pd.to_numeric(frame[metric], errors="coerce").notna()
    return ok


def pareto_flags(frame: pd.DataFrame, objectives: Sequence[Objective]) -> pd.Series:
    """Boolean Series (frame's index): True for finished trials no other finished one dominates.

    This is the ``pareto`` column of ``trials.csv``. Failed trials (ERROR, DIVERGED) and
    rows missing an objective are False and do not dominate anyone.

    >>> frame = pd.DataFrame({"r": [50.0, 50.0, 90.0, None], "q": [1.0, 1.0, 5.0, 0.1],
    ...                       "status": ["TERMINATED", "STOPPED_EARLY", "ERROR", "TERMINATED"]})
    >>> pareto_flags(frame, [("r", "max"), ("q", "min")]).tolist()
    [True, True, False, False]
    """
    flags = pd.Series(False, index=frame.index)
    ok = finished_mask(frame, objectives)
    if not ok.any():
        return flags
    sub = frame[ok]
    fronts = non_dominated_fronts(losses(sub, objectives))
    flags.loc[sub.index[fronts[0]]] = True
    return flags


def front_hypervolume(frame: pd.DataFrame, objectives: Sequence[Objective],
                      reference: Sequence[float]) -> float:
    """Hypervolume of the finished trials, ``reference`` given in the metrics' own units.

    >>> frame = pd.DataFrame({"r": [80.0, 60.0], "d": [512, 128]})
    >>> front_hypervolume(frame, [("r", "max"), ("d", "min")], reference=[0.0, 1024])
    64000.0
    """
    ok = finished_mask(frame, objectives)
    signs = np.array([-1.0 if mode == "max" else 1.0 for _, mode in objectives])
    return hypervolume(losses(frame[ok], objectives), signs * np.asarray(reference, float))


def reference_point(frames: Sequence[pd.DataFrame], objectives: Sequence[Objective],
                    margin: float = 0.1) -> list[float]:
    """A reference point (metric units) shared by several runs: per objective, the worst
    finished value over all ``frames`` pushed ``margin`` of the value range further out, so
    the worst trials still add a sliver of volume. Compare hypervolumes only under one point.

    >>> a = pd.DataFrame({"r": [80.0, 60.0], "d": [512, 128]})
    >>> reference_point([a, pd.DataFrame({"r": [40.0], "d": [1024]})], [("r", "max"), ("d", "min")])
    [36.0, 1113.6]
    """
    point = []
    for metric, mode in objectives:
        values = pd.concat([pd.to_numeric(f.loc[finished_mask(f, objectives), metric],
                                          errors="coerce") for f in frames]).dropna()
        if values.empty:
            raise ValueError(f"no finished trial has a value for {metric!r}")
        span = float(values.max() - values.min()) or abs(float(values.mean())) or 1.0
        worst = float(values.min() if mode == "max" else values.max())
        point.append(round(worst - margin * span if mode == "max" else worst + margin * span, 6))
    return point


def hypervolume_curve(frame: pd.DataFrame, objectives: Sequence[Objective],
                      reference: Sequence[float]) -> pd.Series:
    """Hypervolume of the first 1, 2, ... trials (row order = the order trials started).

    >>> frame = pd.DataFrame({"r": [60.0, 50.0, 80.0], "d": [128, 512, 512]})
    >>> hypervolume_curve(frame, [("r", "max"), ("d", "min")], [0.0, 1024]).tolist()
    [53760.0, 53760.0, 64000.0]
    """
    ok = finished_mask(frame, objectives).to_numpy()
    points = losses(frame, objectives)
    signs = np.array([-1.0 if mode == "max" else 1.0 for _, mode in objectives])
    ref = signs * np.asarray(reference, dtype=float)
    values = [hypervolume(points[: i + 1][ok[: i + 1]], ref) for i in range(len(frame))]
    return pd.Series(values, index=pd.RangeIndex(1, len(frame) + 1, name="trials"),
                     name="hypervolume")


def front(frame: pd.DataFrame, objectives: Sequence[Objective]) -> pd.DataFrame:
    """The Pareto-optimal rows, best first on the first objective (then the next ones).

    >>> frame = pd.DataFrame({"r": [60.0, 50.0, 80.0], "d": [128, 512, 512]})
    >>> front(frame, [("r", "max"), ("d", "min")])["r"].tolist()
    [80.0, 60.0]
    """
    rows = frame[pareto_flags(frame, objectives)]
    return rows.sort_values([m for m, _ in objectives],
                            ascending=[mode == "min" for _, mode in objectives], kind="stable")
