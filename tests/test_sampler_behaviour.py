"""Each sampler does what only it does, driven through the Ray searcher a search builds
(``build_search_alg``) with results of a known objective (the peak: lr 10^-2.5, wd 0.03):

- qmc: after Optuna's first (independent) trial, the points are scipy's scrambled Sobol
  sequence with the search seed;
- cmaes: keeps CMA-ES generations and moves its proposals towards the peak;
- gp: after its random start-up trials, proposes at the peak, where random does not;
- nsga2: keeps a population: trial n belongs to generation n // population size.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.helpers import tiny_space
from vpr_tune.config import space_from_dict
from vpr_tune.tune.samplers import build_sampler
from vpr_tune.tune.searchers import build_search_alg

TRIALS, SEED = 24, 3
LR, WD = (1e-4, 1e-1), (0.0, 0.1)
PEAK = 50.0


def _objective(lr: float, wd: float) -> float:
    return PEAK - 10 * (math.log10(lr) + 2.5) ** 2 - 300 * (wd - 0.03) ** 2


def _search(sampler: str, objectives: list | None = None):
    raw = tiny_space(optimizer={"name": "adam", "lr": {"loguniform": list(LR)},
                                "weight_decay": {"uniform": list(WD)}},
                     search={"algorithm": "optuna", "sampler": sampler, "num_samples": TRIALS,
                             "seed": SEED, "max_concurrent": 1, "scheduler": "fifo"})
    if objectives:
        raw["search"]["objectives"] = objectives
    alg, n = build_search_alg(space_from_dict(raw), TRIALS, 1)
    points = []
    for i in range(n):
        config = alg.suggest(f"t{i}")
        lr, wd = config["optimizer.lr"], config["optimizer.weight_decay"]
        value = _objective(lr, wd)
        alg.on_trial_complete(f"t{i}", {"val/R@1": value, "descriptor_dim": 100 + 1000 * wd,
                                        "epoch": 1})
        points.append((lr, wd, value))
    return alg.searcher._ot_study, np.array(points)


def _unit(points: np.ndarray) -> np.ndarray:
    lr = (np.log(points[:, 0]) - math.log(LR[0])) / (math.log(LR[1]) - math.log(LR[0]))
    return np.stack([lr, points[:, 1] / WD[1]], axis=1)


@pytest.mark.filterwarnings("ignore")
def test_qmc_points_are_the_seeded_sobol_sequence():
    from scipy.stats import qmc

    _, points = _search("qmc")
    sobol = qmc.Sobol(d=2, scramble=True, seed=SEED).random(TRIALS)
    assert np.allclose(_unit(points)[1:], sobol[: TRIALS - 1], atol=1e-9)


@pytest.mark.filterwarnings("ignore")
def test_cmaes_adapts_its_mean_towards_the_peak():
    study, points = _search("cmaes")
    generations = [t.system_attrs.get("cma:generation") for t in study.trials]
    assert generations[-1] is not None and generations[-1] >= 2
    peak = np.array([[(-2.5 - math.log10(LR[0])) / 3, 0.3]])
    distance = np.linalg.norm(_unit(points) - peak, axis=1)
    assert distance[-8:].mean() < 0.5 * distance[:8].mean()


@pytest.mark.filterwarnings("ignore")
def test_gp_proposes_at_the_peak_after_its_start_up_and_random_does_not():
    _, gp = _search("gp")
    _, rand = _search("random")
    assert (gp[-8:, 2] > PEAK - 0.5).all()
    assert not (rand[-8:, 2] > PEAK - 0.5).all()


@pytest.mark.filterwarnings("ignore")
def test_nsga2_keeps_a_population():
    study, _ = _search("nsga2", [{"metric": "val/R@1", "mode": "max"},
                                 {"metric": "descriptor_dim", "mode": "min"}])
    size = build_sampler("nsga2", SEED, TRIALS)._population_size
    assert [t.system_attrs.get("NSGAIISampler:generation") for t in study.trials] == [
        t.number // size for t in study.trials]
    assert study.trials[-1].system_attrs["NSGAIISampler:generation"] >= 2
