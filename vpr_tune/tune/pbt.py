"""Population-based training on the declared space: Ray's PBT and PB2, explained.

>>> params = check_pbt(space)                   # the mutated Params; UserError if unusable
>>> scheduler = population_scheduler(space, exp_dir / "perturbations.csv")

Every ``pbt.perturbation_interval`` epochs a trial in the bottom ``quantile_fraction`` of
the population copies the checkpoint of one in the top fraction (exploit) and continues with
that trial's config, perturbed (explore):

- PBT: each ``pbt.mutate`` key is redrawn from its declared distribution with probability
  ``resample_probability``, otherwise moved a step on its declared scale: loguniform x 0.8
  or x 1.25, uniform/int/quniform +- 10 % of the range (rounded to the int/step), choice to
  a neighbouring value; always inside the declared bounds.
- PB2: Ray's GP-bandit proposes the values inside the declared bounds (continuous keys only;
  PB2 searches a loguniform range on a linear scale).

Each exploit is one row per mutated key in ``perturbations.csv`` (trial_id, epoch,
source_trial_id, param, old, new): ``epoch`` is the epoch of the checkpoint the trial
continues from, so the trial's next row in metrics.csv is the first under the new value.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pandas as pd
from ray.tune.schedulers import PopulationBasedTraining
from ray.tune.schedulers.pb2 import PB2

from vpr_tune.atomic import write_csv
from vpr_tune.config import Param, Space
from vpr_tune.errors import UserError
from vpr_tune.tune.results import read_table

COLUMNS = ["trial_id", "epoch", "source_trial_id", "param", "old", "new"]
# Keys a trial can change between two epochs without rebuilding its model.
MUTABLE = ("optimizer.", "loss.", "miner.")
LOG_FACTORS = (0.8, 1.25)
LINEAR_STEP = 0.1  # share of the range


def check_pbt(space: Space) -> list[Param]:
    """The Params ``pbt.mutate`` names, validated for ``search.scheduler`` pbt or pb2."""
    conf, kind = space.base["pbt"], space.base["search"]["scheduler"]
    where = f"{space.source}: pbt"
    mutate = conf["mutate"]
    if not isinstance(mutate, list) or not mutate or not all(isinstance(k, str) for k in mutate):
        raise UserError(f"{where}.mutate: expected a list of searched keys, e.g. "
                        "[optimizer.lr, optimizer.weight_decay]")
    params = []
    for key in mutate:
        p = space.params.get(key)
        if p is None or p.kind == "value":
            raise UserError(f"{where}.mutate: {key} is not searched in this space (searched: "
                            f"{', '.join(space.params) or 'nothing'})")
        if not key.startswith(MUTABLE) or key.endswith(".name"):
            raise UserError(f"{where}.mutate: {key} cannot change during training; allowed: "
                            "optimizer, loss and miner parameters (not their names)")
        if p.when:
            raise UserError(f"{where}.mutate: {key} applies only to some trials (when: "
                            f"{', '.join(p.when)}); mutate keys every trial has")
        if kind == "pb2" and p.kind not in ("uniform", "loguniform"):
            raise UserError(f"{where}.mutate: {key} is {p.kind}; pb2 takes continuous "
                            "parameters only (uniform, loguniform)")
        params.append(p)
    if not 0 < float(conf["quantile_fraction"]) <= 0.5:
        raise UserError(f"{where}.quantile_fraction: must be in (0, 0.5], got "
                        f"{conf['quantile_fraction']}")
    if not 0 <= float(conf["resample_probability"]) <= 1:
        raise UserError(f"{where}.resample_probability: must be in [0, 1], got "
                        f"{conf['resample_probability']}")
    return params


def explore_value(p: Param, value: Any, rng: random.Random, resample: float) -> tuple[Any, str]:
    """(new value, what was done): a redraw or a step on the declared scale, in bounds."""
    a = p.args
    if rng.random() < resample or (p.kind in ("choice", "grid") and value not in a):
        return draw(p, rng), "resample"
    if p.kind in ("choice", "grid"):
        i = min(max(a.index(value) + rng.choice((-1, 1)), 0), len(a) - 1)
        return a[i], "shift"
    lo, hi = a[0], a[1]
    if p.kind == "loguniform":
        factor = rng.choice(LOG_FACTORS)
        return min(max(value * factor, lo), hi), f"* {factor}"
    step = rng.choice((-1, 1)) * LINEAR_STEP * (hi - lo)
    new = min(max(value + step, lo), hi)
    if p.kind in ("int", "randint"):
        new = int(min(max(round(new), lo), hi))
    elif p.kind == "quniform":
        new = float(min(max(round(new / a[2]) * a[2], lo), hi))
    return new, f"{'+' if step > 0 else '-'} {abs(step):.3g}"


def draw(p: Param, rng: random.Random) -> Any:
    """A fresh draw from the declared distribution of ``p``."""
    a = p.args
    if p.kind in ("choice", "grid"):
        return rng.choice(a)
    if p.kind == "loguniform":
        return math.exp(rng.uniform(math.log(a[0]), math.log(a[1])))
    if p.kind in ("int", "randint"):
        return rng.randint(a[0], a[1])
    if p.kind == "quniform":
        return float(min(max(round(rng.uniform(a[0], a[1]) / a[2]) * a[2], a[0]), a[1]))
    return rng.uniform(a[0], a[1])


class PerturbationLog:
    """``perturbations.csv``, rewritten whole (atomically) after each exploit."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] | None = None  # read lazily: a resumed search appends

    def add(self, trial: Any, source: Any, epoch: int, new_config: dict[str, Any],
            keys: list[str]) -> None:
        if self.rows is None:
            self.rows = (read_table(self.path).to_dict("records") if self.path.exists()
                         else [])
        for key in keys:
            self.rows.append({"trial_id": trial.trial_id, "epoch": epoch,
                              "source_trial_id": source.trial_id, "param": key,
                              "old": trial.config.get(key), "new": new_config.get(key)})
        write_csv(pd.DataFrame(self.rows, columns=COLUMNS), self.path)


def _epoch_of(scheduler: PopulationBasedTraining, trial: Any) -> int:
    result = scheduler._trial_state[trial].last_result or {}
    return int(result.get("epoch", 0))


class SpacePBT(PopulationBasedTraining):
    """Ray's PBT whose explore step follows the declared distributions (see module doc)."""

    def __init__(self, params: list[Param], log: PerturbationLog, seed: int,
                 **kwargs: Any) -> None:
        mutations = {p.path: list(p.args) if p.kind in ("choice", "grid") else _Draw(p)
                     for p in params}
        super().__init__(hyperparam_mutations=mutations, **kwargs)
        self.params, self.log, self.rng = params, log, random.Random(seed)

    def _get_new_config(self, trial: Any, trial_to_clone: Any) -> tuple[dict, dict]:
        new, ops = dict(trial_to_clone.config), {}
        for p in self.params:
            new[p.path], ops[p.path] = explore_value(p, new[p.path], self.rng,
                                                     self._resample_probability)
        self.log.add(trial, trial_to_clone, _epoch_of(self, trial_to_clone), new,
                     [p.path for p in self.params])
        return new, ops


class SpacePB2(PB2):
    """Ray's PB2 on the declared bounds; each exploit also goes to perturbations.csv."""

    def __init__(self, params: list[Param], log: PerturbationLog, **kwargs: Any) -> None:
        self.bounds = {p.path: (p.args[0], p.args[1]) for p in params}
        super().__init__(hyperparam_bounds={k: list(b) for k, b in self.bounds.items()},
                         **kwargs)
        self.log = log

    def _get_new_config(self, trial: Any, trial_to_clone: Any) -> tuple[dict, dict]:
        import warnings

        with warnings.catch_warnings():  # a GP on a handful of points rarely "converges"
            warnings.simplefilter("ignore")
            new, ops = super()._get_new_config(trial, trial_to_clone)
        for key, (low, high) in self.bounds.items():  # the GP's [0, 1] -> bounds map can
            new[key] = min(max(new[key], low), high)  # round one ulp past an edge
        self.log.add(trial, trial_to_clone, _epoch_of(self, trial_to_clone), new,
                     list(self.bounds))
        return new, ops


class _Draw:
    """Picklable resampler Ray's PBT keeps per key (our explore step replaces its use)."""

    def __init__(self, p: Param) -> None:
        self.p = p

    def __call__(self) -> Any:
        return draw(self.p, random.Random())


def population_scheduler(space: Space, perturbations_csv: Path | str) -> Any:
    """PBT or PB2 (``search.scheduler``) on the search metric, time in epochs."""
    params = check_pbt(space)
    search, conf = space.base["search"], space.base["pbt"]
    common = dict(time_attr="epoch", metric=search["metric"], mode=search["mode"],
                  perturbation_interval=int(conf["perturbation_interval"]),
                  quantile_fraction=float(conf["quantile_fraction"]))
    log = PerturbationLog(perturbations_csv)
    if search["scheduler"] == "pb2":
        return SpacePB2(params, log, **common)
    return SpacePBT(params, log, int(search["seed"]),
                    resample_probability=float(conf["resample_probability"]), **common)
