"""Optuna samplers by name: the registry behind ``search.sampler``.

>>> sampler = build_sampler("cmaes", seed=0, num_samples=24)
>>> note = sampler_note("cmaes", space)   # e.g. "cmaes: optimizer.name (choice) ... random"

One line per sampler: the Optuna class, its seeded keyword arguments, and what it cannot
model. Parameters a sampler cannot model (categorical ones for CMA-ES and QMC, parameters
that apply to some trials only for CMA-ES, QMC and GP) are drawn by Optuna's independent
sampler (uniformly at random): a documented fallback that the run prints. A space that
leaves nothing for the sampler to model is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vpr_tune.config import SAMPLERS as SAMPLER_NAMES
from vpr_tune.config import Space
from vpr_tune.errors import UserError


@dataclass(frozen=True)
class SamplerSpec:
    """``optuna.samplers.<cls>(seed=..., **kwargs)``; what it models besides numbers."""

    cls: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    categorical: bool = True  # models choice parameters
    conditional: bool = True  # models parameters that apply to some trials only


# Optuna's own warning about independent sampling is replaced by one line of ours.
_QUIET = {"warn_independent_sampling": False}
SAMPLERS: dict[str, SamplerSpec] = {
    "tpe": SamplerSpec("TPESampler"),
    "random": SamplerSpec("RandomSampler"),
    "qmc": SamplerSpec("QMCSampler", {"scramble": True, **_QUIET}, False, False),
    "cmaes": SamplerSpec("CmaEsSampler", _QUIET, False, False),
    "gp": SamplerSpec("GPSampler", _QUIET, True, False),
    "nsga2": SamplerSpec("NSGAIISampler"),
}
assert tuple(SAMPLERS) == SAMPLER_NAMES, "config.SAMPLERS and this registry must agree"


def build_sampler(name: str, seed: int, num_samples: int = 16) -> Any:
    """The seeded Optuna sampler registered as ``name``."""
    import warnings

    import optuna

    spec = SAMPLERS[name]
    kwargs = dict(spec.kwargs)
    if name == "nsga2":  # a generation must fit a few times into the search
        kwargs["population_size"] = max(4, min(50, num_samples // 3))
    with warnings.catch_warnings():  # QMC is "experimental" in Optuna since 3.0
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return getattr(optuna.samplers, spec.cls)(seed=seed, **kwargs)


def sampler_note(name: str, space: Space) -> str:
    """One line naming the parameters ``name`` leaves to random draws ('' when none).

    Raises UserError when the sampler would model nothing in ``space``."""
    spec = SAMPLERS[name]
    left, modelled = [], []
    for p in space.params.values():
        if p.kind == "value":
            continue
        why = ("choice" if p.kind in ("choice", "grid") and not spec.categorical
               else "conditional" if p.when and not spec.conditional else "")
        (left if why else modelled).append(f"{p.path} ({why})" if why else p.path)
    if left and not modelled:
        raise UserError(f"{space.source}: search.sampler: {name} cannot model any parameter of "
                        f"this space ({', '.join(left)}); use tpe, random or nsga2")
    if not left:
        return ""
    return (f"sampler {name}: {', '.join(left)} drawn at random (Optuna's independent "
            f"sampler); {name} models {', '.join(modelled)}")
