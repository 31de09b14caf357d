"""A DataFrame as a GitHub-flavoured markdown table: what ``report.md``, ``retest.md`` and
``repeats.md`` hold (no extra dependency)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd


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
