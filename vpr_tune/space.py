"""A validated search space: ``Space`` (the fixed ``base`` config and the searched
``params``) and ``Param`` (one searched or conditional leaf: its path, its distribution,
its ``when``). ``config.load_space`` builds them; the search reads them.

Plain Python: the config schema imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vpr_tune.distributions import Distribution, distribution, is_one_of


@dataclass
class Param:
    """One varying or conditional leaf: ``kind`` is a distribution name or ``value``;
    ``dist`` the distribution itself (what draws, checks, suggests and perturbs)."""

    path: str
    kind: str
    args: Any
    when: dict[str, tuple] = field(default_factory=dict)  # dotted sibling path -> values
    # Set on one of several alternatives for the same path: the name it is searched under
    # (``loss.margin#arcface``), unique in the space.
    alias: str = ""

    def __post_init__(self) -> None:
        self.dist: Distribution = distribution(self.kind, self.args)

    @property
    def id(self) -> str:
        """The key of this leaf in ``Space.params`` and the name Optuna suggests it under."""
        return self.alias or self.path

    def applies(self, sampled: dict[str, Any]) -> bool:
        """True when every ``when`` sibling was sampled and has one of its values."""
        return all(k in sampled and is_one_of(sampled[k], v) for k, v in self.when.items())


@dataclass
class Space:
    """A validated search space: fixed ``base`` config + varying ``params`` (ordered)."""

    base: dict[str, Any]
    params: dict[str, Param]
    source: str = "<dict>"
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def algorithm(self) -> str:
        return self.base["search"]["algorithm"]

    def searched(self) -> list[str]:
        """The ids of the searched (not fixed) parameters."""
        return [k for k, p in self.params.items() if not p.dist.fixed]


def uses_points(space: Space) -> bool:
    """True when the trials are drawn up front: grid, or random over grid leaves."""
    return space.algorithm == "grid" or (
        space.algorithm == "random" and any(p.kind == "grid" for p in space.params.values()))
