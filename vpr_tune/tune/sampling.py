"""Trials drawn from the space: seeded points, Optuna define-by-run, warm starts.

- ``grid`` (and ``random`` over ``grid`` leaves): every combination is drawn up front
  (seeded numpy, ``expand_points``) and handed to Ray as explicit points.
- ``optuna`` (any ``search.sampler``) and ``random``: ``OptunaDefineByRun`` walks
  ``Space.params`` in order, suggests each through its distribution and skips the ones
  whose ``when`` does not hold; ``draw_points`` asks it for a PBT/PB2 population up front.
- ``load_warm_start``: an earlier experiment's finished trials, for the sampler.
- ``count_trials``, ``possible_values``: how many trials, which values a key can take.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vpr_tune.config import POPULATION_SCHEDULERS, Param, Space, materialize, uses_points
from vpr_tune.errors import UserError
from vpr_tune.metrics import best_value, mode_of


def sample_param(p: Param, rng: np.random.Generator) -> Any:
    """One draw of a non-grid parameter (its distribution draws itself)."""
    return p.dist.sample(rng)


def expand_points(space: Space, num_samples: int, seed: int) -> list[dict[str, Any]]:
    """Trial configs for random/grid: cartesian product of grid leaves x ``num_samples``,
    other leaves sampled per point; leaves whose ``when`` fails are absent."""
    rng = np.random.default_rng(seed)
    # Grid leaves and the leaves conditions look at branch first; the rest are drawn per
    # point at the end of each branch (a subsequence of the dependency order stays valid).
    gating = {s for p in space.params.values() for s in p.when}
    params = sorted(space.params.values(),
                    key=lambda p: 0 if p.kind == "grid" or p.path in gating else 1)
    points: list[dict[str, Any]] = []

    def walk(i: int, partial: dict[str, Any]) -> None:
        if i == len(params):
            points.append(dict(partial))
            return
        p = params[i]
        if not p.applies(partial) or p.path in partial:  # or an earlier alternative applied
            walk(i + 1, partial)
        elif p.kind == "grid":
            for value in p.args:
                walk(i + 1, {**partial, p.path: value})
        else:
            walk(i + 1, {**partial, p.path: sample_param(p, rng)})

    for _ in range(num_samples):
        walk(0, {})
    return points


class OptunaDefineByRun:
    """Define-by-run function for ``OptunaSearch``: suggests only applicable parameters.

    A class (not a closure) because Ray pickles the searcher to save the experiment."""

    def __init__(self, space: Space) -> None:
        self.params = list(space.params.values())

    def __call__(self, trial: Any) -> dict[str, Any] | None:
        chosen: dict[str, Any] = {}
        constants: dict[str, Any] = {}
        for p in self.params:
            if not p.applies(chosen) or p.path in chosen:  # or an earlier alternative applied
                continue
            name = p.id  # an alternative is suggested under its own name
            value = p.dist.suggest(trial, name)
            if p.dist.fixed or name != p.path:  # an alternative: its path holds it too
                constants[p.path] = value
            chosen[p.path] = value
        return constants or None

    def params_of(self, config: dict[str, Any]) -> dict[str, Any]:
        """The Optuna params behind a trial's flat config: ``__call__`` run backwards.

        >>> define.params_of({"optimizer.name": "adam", "optimizer.lr": 0.003})
        {'optimizer.name': 'adam', 'optimizer.lr': 0.003}
        """
        replay = _ReplayTrial(config, {p.id: p.path for p in self.params})
        self(replay)
        return replay.params


class _ReplayTrial:
    """Stands in for an Optuna trial: each suggestion is the value a known config holds."""

    def __init__(self, config: dict[str, Any], path_of: dict[str, str]) -> None:
        self.config, self.path_of, self.params = config, path_of, {}

    def _suggest(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self.params[name] = self.config[self.path_of[name]]
        return self.params[name]

    suggest_categorical = suggest_float = suggest_int = _suggest


def sampler_name(space: Space) -> str:
    """The Optuna sampler of the search (``random`` for search.algorithm random)."""
    return "random" if space.algorithm == "random" else space.base["search"]["sampler"]


def count_trials(space: Space, num_samples: int) -> int:
    """How many trials the search will run."""
    if not uses_points(space):
        return num_samples
    return len(expand_points(space, num_samples, 0))


def draw_points(space: Space, n: int, seed: int,
                first: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """``n`` trial configs drawn now by Optuna's RandomSampler (``first`` partial configs
    enqueued first): the initial population of a PBT/PB2 search."""
    import optuna

    from vpr_tune.tune.samplers import build_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=build_sampler("random", seed))
    for point in first or []:
        study.enqueue_trial(point)
    define = OptunaDefineByRun(space)
    points = []
    for _ in range(n):
        trial = study.ask()
        constants = define(trial) or {}
        points.append({**trial.params, **constants})
    return points


def possible_values(space: Space, dotted: str) -> list[Any]:
    p = space.params.get(dotted)
    if p is None:
        return [materialize(space.base, {})["budget"]["max_epochs"]] if dotted.startswith(
            "budget.") else []
    if p.dist.categorical:
        return list(p.args)
    return [p.args] if p.dist.fixed else [p.args[1]]


def load_warm_start(space: Space, earlier: Path) -> list[tuple[dict[str, Any], float]]:
    """(params, best value of the metric over its epochs) of each finished trial of the
    experiment at ``earlier`` — the value the Optuna study of a search records too
    (``optuna_study.py``); refused when its searched keys differ from this space's."""
    import pandas as pd

    from vpr_tune.tune.results import read_table
    from vpr_tune.tune.space_record import recorded_space

    if uses_points(space) or space.base["search"]["scheduler"] in POPULATION_SCHEDULERS:
        raise UserError("--warm-start feeds a sampler: use search.algorithm random or optuna "
                        "with scheduler asha or fifo (grid and pbt/pb2 draw their trials up "
                        "front)")
    if space.base["search"].get("objectives"):
        raise UserError("--warm-start gives the sampler one value per earlier trial: not "
                        "with search.objectives (several objectives)")
    if not (earlier / "trials.csv").exists() or not (earlier / "space.yaml").exists():
        raise UserError(f"--warm-start: no experiment with trials.csv at {earlier}")
    old = recorded_space(earlier)
    mine, theirs = set(space.searched()), set(old.searched())
    if mine != theirs:
        diff = sorted(mine ^ theirs)
        raise UserError(f"--warm-start {earlier.name}: it searched different keys "
                        f"({', '.join(diff)} in only one of the two spaces)")
    metric = space.base["search"]["metric"]
    trials = read_table(earlier / "trials.csv")
    curves = read_table(earlier / "metrics.csv")
    mode = mode_of(space.base["search"])
    best = curves.groupby("trial_id")[metric].agg(lambda v: best_value(v, mode))
    out = []
    for row in trials[trials["status"].isin(["TERMINATED", "STOPPED_EARLY"])].itertuples():
        rec = row._asdict()
        params: dict[str, Any] | None = {}
        for k, p in space.params.items():  # parents before the keys that depend on them
            if k not in mine or not p.applies(params):
                continue
            # trials.csv has an alternative (loss.margin#arcface) under its path
            v = trials.loc[row.Index, p.path] if p.path in trials else None
            if v is None or pd.isna(v):
                continue
            v = p.dist.coerce(v)
            if not p.dist.contains(v):
                params = None  # outside this space's ranges: not a point the sampler knows
                break
            params[k] = v
        value = best.get(rec["trial_id"])
        if params and value is not None and not pd.isna(value):
            out.append((params, float(value)))
    return out
