"""The distribution of a search-space leaf: one class per kind, each knowing how to draw
itself, check a value, become an Optuna distribution (or a suggestion on an Optuna trial)
and take a PBT explore step.

``KINDS`` maps the YAML name to the class (``randint`` is read as ``int``: ``ALIASES``), so
a new distribution is one class here plus its name in ``KINDS``. ``value`` is a kind too: a
fixed value that applies only under a ``when`` (never searched, never perturbed).

>>> import numpy as np
>>> dist = distribution("randint", [1, 3])
>>> dist.name, dist.contains(2), dist.contains(2.5), 1 <= dist.sample(np.random.default_rng(0)) <= 3
('int', True, False, True)

Plain Python: the config schema imports it. The random draws take a seeded
``numpy.random.Generator``; Optuna is imported inside the methods that need it.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

# A PBT explore step: loguniform x 0.8 or x 1.25; uniform/int/quniform +- 10 % of the range.
LOG_FACTORS = (0.8, 1.25)
LINEAR_STEP = 0.1  # share of the range


def is_one_of(value: Any, allowed: Any) -> bool:
    """True when ``value`` equals one of ``allowed`` (a ``when`` value, a choice)."""
    return any(value == a for a in allowed)


def _sign(rng: Any) -> int:
    return (-1, 1)[int(rng.integers(2))]


class Distribution:
    """A leaf's distribution: ``args`` as the YAML gives them (after validation)."""

    name: ClassVar[str]
    categorical: ClassVar[bool] = False  # args are the values themselves
    fixed: ClassVar[bool] = False  # a value, not searched

    def __init__(self, args: Any) -> None:
        self.args = args

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.args!r})"

    @classmethod
    def problem(cls, args: Any, written: str) -> str | None:
        """What is wrong with ``args`` for this kind (``written``: its name in the YAML)."""
        return None

    def ends(self) -> list[Any]:
        """The values a range check must see: every value, or both ends of a range."""
        return list(self.args[:2])

    def sample(self, rng: Any) -> Any:
        """One draw with the numpy ``Generator`` ``rng``."""
        raise NotImplementedError

    def contains(self, value: Any) -> bool:
        """True when this distribution can take ``value``."""
        raise NotImplementedError

    def coerce(self, value: Any) -> Any:
        """A value read back from a table (a numpy scalar) as this distribution gives it."""
        return value.item() if hasattr(value, "item") else value

    def optuna(self) -> Any:
        """The Optuna distribution (what :meth:`suggest` asks a trial for)."""
        raise NotImplementedError

    def suggest(self, trial: Any, name: str) -> Any:
        """The value an Optuna trial suggests for the parameter ``name``."""
        raise NotImplementedError

    def over(self, low: float, high: float) -> Any:
        """The Optuna distribution of this kind over an observed range (importance), or None
        when the observed values should decide (categories, steps the ends may miss)."""
        return None

    def perturb(self, value: Any, rng: Any, resample: float) -> tuple[Any, str]:
        """PBT's explore step: (new value, what was done), a redraw with probability
        ``resample`` else a step on the declared scale; always inside the bounds."""
        if rng.random() < resample:
            return self.sample(rng), "resample"
        return self.step(value, rng)

    def step(self, value: Any, rng: Any) -> tuple[Any, str]:
        """A linear step of ``LINEAR_STEP`` of the range, clipped to it."""
        lo, hi = self.args[0], self.args[1]
        step = _sign(rng) * LINEAR_STEP * (hi - lo)
        new = self.snap(min(max(value + step, lo), hi))
        return new, f"{'+' if step > 0 else '-'} {abs(step):.3g}"

    def snap(self, value: float) -> Any:
        """A value of the range moved onto what this kind can take."""
        return value


class Fixed(Distribution):
    """``{value: x, when: ...}``: one value, applying under a condition."""

    name, fixed = "value", True

    def ends(self) -> list[Any]:
        return [self.args]

    def sample(self, rng: Any) -> Any:
        return self.args

    def contains(self, value: Any) -> bool:
        return value == self.args

    def suggest(self, trial: Any, name: str) -> Any:
        return self.args


class Choice(Distribution):
    """``choice: [a, b, ...]``: one of the listed values."""

    name, categorical = "choice", True

    @classmethod
    def problem(cls, args: Any, written: str) -> str | None:
        return None if args else f"{written} needs at least one value"

    def ends(self) -> list[Any]:
        return list(self.args)

    def sample(self, rng: Any) -> Any:
        return self.args[int(rng.integers(len(self.args)))]

    def contains(self, value: Any) -> bool:
        return is_one_of(value, self.args)

    def optuna(self) -> Any:
        from optuna.distributions import CategoricalDistribution

        return CategoricalDistribution(self.args)

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_categorical(name, self.args)

    def perturb(self, value: Any, rng: Any, resample: float) -> tuple[Any, str]:
        if rng.random() < resample or value not in self.args:
            return self.sample(rng), "resample"
        return self.step(value, rng)

    def step(self, value: Any, rng: Any) -> tuple[Any, str]:
        """A neighbouring value of the list."""
        i = min(max(self.args.index(value) + _sign(rng), 0), len(self.args) - 1)
        return self.args[i], "shift"


class Grid(Choice):
    """``grid: [a, b, ...]``: every value, each with every other grid leaf's."""

    name = "grid"


class Uniform(Distribution):
    """``uniform: [low, high]``."""

    name = "uniform"
    size = 2  # numbers in args

    @classmethod
    def problem(cls, args: Any, written: str) -> str | None:
        shape = "[low, high, q]" if cls.size == 3 else "[low, high]"
        if len(args) != cls.size or not all(isinstance(a, (int, float)) and not isinstance(
                a, bool) and math.isfinite(a) for a in args):
            return f"{written} takes {shape} numbers, got {args!r}"
        if args[0] > args[1]:
            return f"{written}: low {args[0]} > high {args[1]}"
        return None

    def sample(self, rng: Any) -> Any:
        return float(rng.uniform(self.args[0], self.args[1]))

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return self.args[0] <= value <= self.args[1]

    def optuna(self) -> Any:
        from optuna.distributions import FloatDistribution

        return FloatDistribution(self.args[0], self.args[1])

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_float(name, self.args[0], self.args[1])

    def over(self, low: float, high: float) -> Any:
        from optuna.distributions import FloatDistribution

        return FloatDistribution(low, high)


class LogUniform(Uniform):
    """``loguniform: [low, high]``, low > 0: uniform in log space."""

    name = "loguniform"

    @classmethod
    def problem(cls, args: Any, written: str) -> str | None:
        problem = super().problem(args, written)
        if problem is None and args[0] <= 0:
            return f"loguniform range must be > 0, got [{args[0]}, {args[1]}]"
        return problem

    def sample(self, rng: Any) -> Any:
        a = self.args
        return float(math.exp(rng.uniform(math.log(a[0]), math.log(a[1]))))

    def optuna(self) -> Any:
        from optuna.distributions import FloatDistribution

        return FloatDistribution(self.args[0], self.args[1], log=True)

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_float(name, self.args[0], self.args[1], log=True)

    def over(self, low: float, high: float) -> Any:
        from optuna.distributions import FloatDistribution

        return FloatDistribution(low, high, log=True)

    def step(self, value: Any, rng: Any) -> tuple[Any, str]:
        """x 0.8 or x 1.25 (``LOG_FACTORS``), clipped to the range."""
        factor = LOG_FACTORS[int(rng.integers(len(LOG_FACTORS)))]
        return min(max(value * factor, self.args[0]), self.args[1]), f"* {factor}"


class Int(Uniform):
    """``int: [low, high]`` (also written ``randint``): an integer, both ends included."""

    name = "int"

    @classmethod
    def problem(cls, args: Any, written: str) -> str | None:
        problem = super().problem(args, written)
        if problem is None and not all(isinstance(a, int) for a in args):
            return f"{written} takes integer bounds, got {args!r}"
        return problem

    def sample(self, rng: Any) -> Any:
        return int(rng.integers(self.args[0], self.args[1] + 1))

    def contains(self, value: Any) -> bool:
        return super().contains(value) and value == int(value)

    def coerce(self, value: Any) -> Any:
        return int(value)

    def optuna(self) -> Any:
        from optuna.distributions import IntDistribution

        return IntDistribution(self.args[0], self.args[1])

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_int(name, self.args[0], self.args[1])

    def over(self, low: float, high: float) -> Any:
        from optuna.distributions import IntDistribution

        return IntDistribution(int(low), int(high))

    def snap(self, value: float) -> Any:
        return int(min(max(round(value), self.args[0]), self.args[1]))


class QUniform(Uniform):
    """``quniform: [low, high, q]``: uniform, rounded to a multiple of q inside the range."""

    name = "quniform"
    size = 3

    @classmethod
    def problem(cls, args: Any, written: str) -> str | None:
        problem = super().problem(args, written)
        if problem is None and args[2] <= 0:
            return f"quniform step q must be > 0, got {args[2]}"
        return problem

    def sample(self, rng: Any) -> Any:
        return self.snap(float(rng.uniform(self.args[0], self.args[1])))

    def optuna(self) -> Any:
        from optuna.distributions import FloatDistribution

        return FloatDistribution(self.args[0], self.args[1], step=self.args[2])

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_float(name, self.args[0], self.args[1], step=self.args[2])

    def over(self, low: float, high: float) -> Any:
        return None  # the observed ends need not be steps apart

    def snap(self, value: float) -> Any:
        a = self.args
        return float(min(max(round(value / a[2]) * a[2], a[0]), a[1]))


KINDS: dict[str, type[Distribution]] = {
    cls.name: cls for cls in (Fixed, Choice, Uniform, LogUniform, Int, QUniform, Grid)}
ALIASES = {"randint": "int"}  # another YAML name for a kind
# The distribution names a YAML may write, in the order error messages list them.
DISTRIBUTIONS = ("choice", "uniform", "loguniform", "int", "randint", "quniform", "grid")
assert set(DISTRIBUTIONS) == {*KINDS, *ALIASES} - {"value"}, "DISTRIBUTIONS and KINDS agree"


def distribution(kind: str, args: Any) -> Distribution:
    """The distribution ``kind`` (a YAML name, ``randint`` included) over ``args``."""
    return KINDS[ALIASES.get(kind, kind)](args)


def leaf_distribution(leaf: Any) -> Distribution | None:
    """The distribution of a raw YAML leaf (``{loguniform: [...], when: ...}``), else None."""
    if not isinstance(leaf, dict):
        return None
    kind = next((k for k in leaf if k in KINDS or k in ALIASES), None)
    return None if kind is None else distribution(kind, leaf[kind])
