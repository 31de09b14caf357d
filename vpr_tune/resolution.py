"""What a val split of Q queries can resolve: one query moves R@N by 100/Q points, and the
95 % interval of an R@1 near 20 % is about ±1.96·sqrt(p(1-p)/Q). ``run --dry-run`` and
``doctor`` say it, and warn when it is coarser than ±3 points::

    >>> from vpr_tune.resolution import resolution_lines
    >>> print(resolution_lines(150)[0][:60])
    val resolution: 150 val queries: one query moves R@N by 0.67
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from vpr_tune import metrics
from vpr_tune.uncertainty import half_width

# A val split coarser than this (95 % half-width in points at R@1 = 20 %) is warned about.
RESOLUTION_LIMIT = 3.0
RESOLUTION_AT = 20.0  # the R@1 (percent) the half-width is quoted at


@dataclass(frozen=True)
class Resolution:
    """What a val split of ``queries`` queries can resolve."""

    queries: int
    metric: str
    step: float  # points of R@N one query moves
    half_width: float  # 95 % half-width in points at R@1 = RESOLUTION_AT
    needed: int  # queries for a half-width of RESOLUTION_LIMIT

    @property
    def coarse(self) -> bool:
        return self.half_width > RESOLUTION_LIMIT

    @property
    def detail(self) -> str:
        return (f"{self.queries} val queries: one query moves R@N by {self.step:.2f} points; "
                f"95 % interval at R@1 = {RESOLUTION_AT:.0f} %: ±{self.half_width:.1f} points")

    @property
    def advice(self) -> str:
        if not self.coarse:
            return ""
        less_noisy = ("" if self.metric == metrics.MRR else
                      f", or rank by a less noisy metric (search.metric: {metrics.MRR}, "
                      "which counts every rank, not only the first)")
        return (f"trials closer than about ±{self.half_width:.1f} points of val R@1 cannot be "
                f"told apart (coarser than ±{RESOLUTION_LIMIT:g}): use more val queries "
                f"(about {self.needed:,} for ±{RESOLUTION_LIMIT:g}){less_noisy}")


def resolution(queries: int, metric: str = metrics.DEFAULT_METRIC) -> Resolution:
    """The resolution of a val split: points per query (100/Q), the 95 % half-width at
    R@1 = 20 % (:func:`vpr_tune.uncertainty.half_width`) and the queries a ±3 point
    half-width needs.

    >>> r = resolution(150)
    >>> round(r.step, 2), round(r.half_width, 1), r.coarse
    (0.67, 6.4, True)
    """
    queries = max(int(queries), 0)
    p = RESOLUTION_AT / 100.0
    needed = math.ceil((1.96 * 100.0) ** 2 * p * (1 - p) / RESOLUTION_LIMIT ** 2)
    return Resolution(queries, metric, 100.0 / max(queries, 1),
                      half_width(RESOLUTION_AT, queries), needed)


def resolution_lines(queries: int, metric: str = metrics.DEFAULT_METRIC) -> list[str]:
    """What ``run --dry-run`` prints about the val split: its resolution, and a warning
    with the advice when it is coarser than ±3 points."""
    r = resolution(queries, metric)
    lines = [f"val resolution: {r.detail}"]
    if r.coarse:
        lines.append(f"warning: {r.advice}")
    return lines


def log_resolution(queries: int, search: dict[str, Any] | None, log: Any) -> None:
    """:func:`resolution_lines` of a space's val split (``search``: its search section, for
    the ranking metric), each through ``log`` (``run --dry-run``)."""
    for line in resolution_lines(queries, metrics.ranking(search)[0]):
        log(line)
