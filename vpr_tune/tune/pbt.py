"""Population-based training on the declared space: Ray's PBT and PB2, explained.

>>> scheduler = population_scheduler(space, exp_dir / "perturbations.csv")

Every ``pbt.perturbation_interval`` epochs a trial in the bottom ``quantile_fraction`` of
the population copies the checkpoint of one in the top fraction (exploit) and continues with
that trial's config, perturbed (explore):

- PBT: each ``pbt.mutate`` key is redrawn from its declared distribution with probability
  ``resample_probability``, otherwise moved a step on its declared scale: loguniform x 0.8
  or x 1.25, uniform/int/quniform +- 10 % of the range (rounded to the int/step), choice to
  a neighbouring value; always inside the declared bounds (``Distribution.perturb`` in
  ``vpr_tune/distributions.py``). ``pbt.mutate`` is checked by
  ``search_rules.mutated_params``.
- PB2: Ray's GP-bandit proposes the values inside the declared bounds (continuous keys only;
  PB2 searches a loguniform range on a linear scale).

``search.reproducible``: Ray's synchronous mode (every trial of the population reaches the
perturbation epoch before any exploits), the bottom and top fractions ranked with ties in
sampling order, and whom to clone (plus PB2's GP) drawn from generators seeded by
``search.seed`` instead of the driver's global ones (:class:`_SeededChoices`).

Each exploit is one row per mutated key in ``perturbations.csv`` (trial_id, epoch,
source_trial_id, param, old, new): ``epoch`` is the epoch of the checkpoint the trial
continues from, so the trial's next row in metrics.csv is the first under the new value.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from ray.tune.schedulers import PopulationBasedTraining
from ray.tune.schedulers.pb2 import PB2

from vpr_tune.atomic import write_csv
from vpr_tune.config import Param, Space
from vpr_tune.search_rules import mutated_params
from vpr_tune.tune.ray_internals import sampling_index
from vpr_tune.tune.results import read_table

COLUMNS = ["trial_id", "epoch", "source_trial_id", "param", "old", "new"]


class PerturbationLog:
    """``perturbations.csv``, rewritten whole (atomically) after each exploit."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] | None = None  # read lazily: a resumed search appends

    def _load(self) -> None:
        if self.rows is None:
            self.rows = (read_table(self.path).to_dict("records") if self.path.exists()
                         else [])

    def add(self, trial: Any, source: Any, epoch: int, new_config: dict[str, Any],
            keys: list[str]) -> None:
        self._load()
        # One exploit per trial and epoch: a resumed search redoes an exploit whose effect
        # the killed driver had not saved, and a trial exploited twice at one epoch trains
        # with the later one (lineage.py reads it so): the new rows replace the old.
        self.rows = [r for r in self.rows
                     if (str(r["trial_id"]), int(r["epoch"])) != (str(trial.trial_id), epoch)]
        for key in keys:
            self.rows.append({"trial_id": trial.trial_id, "epoch": epoch,
                              "source_trial_id": source.trial_id, "param": key,
                              "old": trial.config.get(key), "new": new_config.get(key)})
        write_csv(pd.DataFrame(self.rows, columns=COLUMNS), self.path)

    def forget_unsaved(self, trial: Any) -> None:
        """Drop ``trial``'s latest exploits whose values its (restored) config does not hold.

        The log is written at each exploit, Ray's state when it syncs (rarely): a driver
        killed in between leaves an exploit that ``--resume`` never knew, the trial going on
        with its config from before it, while lineages read the log (found by widening the
        PBT kill test's window). Called when Ray adds a trial, restored ones included."""
        self._load()
        tid, dropped = str(trial.trial_id), False
        while True:
            mine = [r for r in self.rows if str(r["trial_id"]) == tid]
            if not mine:
                break
            last = max(int(r["epoch"]) for r in mine)
            rows = [r for r in mine if int(r["epoch"]) == last]
            if all(_same(trial.config.get(r["param"]), r["new"]) for r in rows):
                break
            self.rows = [r for r in self.rows if not (str(r["trial_id"]) == tid
                                                      and int(r["epoch"]) == last)]
            dropped = True
        if dropped:
            write_csv(pd.DataFrame(self.rows, columns=COLUMNS), self.path)


def _same(value: Any, logged: Any) -> bool:
    """A config value and its logged copy (read back from CSV) are the same value."""
    try:
        return bool(np.isclose(float(value), float(logged), rtol=1e-9, atol=0.0))
    except (TypeError, ValueError):
        return str(value) == str(logged)


def _epoch_of(scheduler: PopulationBasedTraining, trial: Any) -> int:
    result = scheduler._trial_state[trial].last_result or {}
    return int(result.get("epoch", 0))


class _SeededChoices:
    """Reproducible mode of Ray's PBT/PB2 (a mixin): Ray draws whom to clone with the global
    ``random`` (and PB2's GP with the global ``numpy.random``), unseeded in the driver; here
    they run on generators of our own seeded by ``search.seed``, swapped in around each
    exploit step. Ties in the population's ranking fall in sampling order (Ray's falls in the
    order the scheduler met the trials, which a restore reshuffles)."""

    reproducible = False
    _states: tuple[Any, Any] | None = None

    def _seed_choices(self, seed: int) -> None:
        self.reproducible = True
        py, np_state = random.Random(seed), np.random.RandomState(seed)
        self._states = (py.getstate(), np_state.get_state())

    @contextmanager
    def _seeded(self) -> Iterator[None]:
        if self._states is None:
            yield
            return
        saved = random.getstate(), np.random.get_state()
        random.setstate(self._states[0])
        np.random.set_state(self._states[1])
        try:
            yield
        finally:
            self._states = (random.getstate(), np.random.get_state())
            random.setstate(saved[0])
            np.random.set_state(saved[1])

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)  # type: ignore[misc]
        self.log.forget_unsaved(trial)  # type: ignore[attr-defined]

    def _checkpoint_or_exploit(self, *args: Any, **kwargs: Any) -> Any:
        with self._seeded():
            return super()._checkpoint_or_exploit(*args, **kwargs)  # type: ignore[misc]

    def _quantiles(self) -> Any:
        if self.reproducible:  # Ray's sort is stable: order the trials first
            state = self._trial_state  # type: ignore[attr-defined]
            self._trial_state = dict(sorted(state.items(),
                                            key=lambda kv: sampling_index(kv[0]) or 0))
        return super()._quantiles()  # type: ignore[misc]


class SpacePBT(_SeededChoices, PopulationBasedTraining):
    """Ray's PBT whose explore step follows the declared distributions (see module doc)."""

    def __init__(self, params: list[Param], log: PerturbationLog, seed: int,
                 reproducible: bool = False, **kwargs: Any) -> None:
        mutations = {p.path: list(p.args) if p.dist.categorical else _Draw(p) for p in params}
        super().__init__(hyperparam_mutations=mutations, synch=reproducible, **kwargs)
        self.params, self.log, self.rng = params, log, np.random.default_rng(seed)
        if reproducible:
            self._seed_choices(seed)

    def _get_new_config(self, trial: Any, trial_to_clone: Any) -> tuple[dict, dict]:
        new, ops = dict(trial_to_clone.config), {}
        for p in self.params:
            new[p.path], ops[p.path] = p.dist.perturb(new[p.path], self.rng,
                                                      self._resample_probability)
        self.log.add(trial, trial_to_clone, _epoch_of(self, trial_to_clone), new,
                     [p.path for p in self.params])
        return new, ops


class SpacePB2(_SeededChoices, PB2):
    """Ray's PB2 on the declared bounds; each exploit also goes to perturbations.csv."""

    def __init__(self, params: list[Param], log: PerturbationLog, seed: int = 0,
                 reproducible: bool = False, **kwargs: Any) -> None:
        self.bounds = {p.path: (p.args[0], p.args[1]) for p in params}
        super().__init__(hyperparam_bounds={k: list(b) for k, b in self.bounds.items()},
                         synch=reproducible, **kwargs)
        self.log = log
        if reproducible:
            self._seed_choices(seed)

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
        return self.p.dist.sample(np.random.default_rng())


def population_scheduler(space: Space, perturbations_csv: Path | str) -> Any:
    """PBT or PB2 (``search.scheduler``) on the search metric, time in epochs."""
    params = mutated_params(space)
    search, conf = space.base["search"], space.base["pbt"]
    common = dict(time_attr="epoch", metric=search["metric"], mode=search["mode"],
                  perturbation_interval=int(conf["perturbation_interval"]),
                  quantile_fraction=float(conf["quantile_fraction"]))
    log = PerturbationLog(perturbations_csv)
    seed, reproducible = int(search["seed"]), bool(search.get("reproducible"))
    if search["scheduler"] == "pb2":
        return SpacePB2(params, log, seed, reproducible, **common)
    return SpacePBT(params, log, seed, reproducible,
                    resample_probability=float(conf["resample_probability"]), **common)
