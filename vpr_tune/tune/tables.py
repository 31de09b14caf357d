"""Reading an experiment's CSV tables (``trials.csv``, ``metrics.csv``, ``perturbations.csv``,
``retest.csv``): the one reader, below both the tables' writer (``results.py``) and what
reads them back (``lineage.py``, ``analysis``).

>>> trials = read_table("results/demo/trials.csv")   # doctest: +SKIP
"""

from __future__ import annotations

import os

import pandas as pd


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """One of an experiment's CSV tables (``trials.csv``, ``metrics.csv``, ``retest.csv``)
    with ``trial_id`` kept as text: Ray's ids are hex, and pandas would read ``00123456`` as
    an int (losing the zeros) and ``12e45678`` as a float.

    >>> trials = read_table("results/demo/trials.csv")   # doctest: +SKIP
    """
    return pd.read_csv(path, dtype={"trial_id": str})
