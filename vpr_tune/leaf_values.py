"""The values one search-space leaf can take, in one place (the config validator, the
search and ``vpr-tune doctor`` all ask).

A leaf is a :class:`vpr_tune.config.Param`: ``kind`` is ``value`` (fixed), a categorical
distribution (``choice``, ``grid``: ``args`` lists the values) or a numeric one (``uniform``,
``loguniform``, ``int``, ...: ``args`` starts ``[low, high]``).

>>> from types import SimpleNamespace as Leaf
>>> possible_values(Leaf(kind="choice", args=["adam", "sgd"]))
['adam', 'sgd']
>>> possible_values(Leaf(kind="loguniform", args=[1e-4, 1e-2]))
[0.0001, 0.01]

Plain Python: the config schema may import it.
"""

from __future__ import annotations

from typing import Any

# Distributions whose arguments are the values themselves.
CATEGORICAL = ("choice", "grid")


def possible_values(leaf: Any) -> list[Any]:
    """Every value a leaf can take: a fixed value, every choice, both ends of a numeric
    range (what a range check must see)."""
    if leaf.kind == "value":
        return [leaf.args]
    return list(leaf.args) if leaf.kind in CATEGORICAL else list(leaf.args[:2])

