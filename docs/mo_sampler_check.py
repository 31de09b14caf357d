"""Which Optuna sampler for multi-objective searches: NSGA-II or multi-objective TPE?

A test problem shaped like a recall-vs-descriptor-size search (aggregator GeM 256-d or
GeM + FC to 32/64/128, optimizer, lr and weight decay; recall peaks at one lr per optimizer
family and grows with log descriptor size, plus noise). Each sampler runs 10 seeds at 12,
24 and 48 trials; the figure is the mean (± std) hypervolume of the (recall max, size min)
front, reference point (0, 300). docs/performance.md has the numbers.

    .venv/bin/python docs/mo_sampler_check.py       # ~1 min on one core
"""

from __future__ import annotations

import math

import numpy as np
import optuna

from vpr_tune.tune.pareto import hypervolume

optuna.logging.set_verbosity(optuna.logging.WARNING)


def objective(trial: optuna.Trial) -> tuple[float, int]:
    agg = trial.suggest_categorical("agg", ["gem", "cosplace"])
    dim = trial.suggest_categorical("dim", [32, 64, 128]) if agg == "cosplace" else 256
    lr = trial.suggest_float("lr", 5e-4, 2e-2, log=True)
    wd = trial.suggest_float("wd", 1e-6, 1e-3, log=True)
    opt = trial.suggest_categorical("opt", ["adam", "adamw", "sgd"])
    best_lr = 1e-2 if opt == "sgd" else 3e-3
    recall = 70 - 60 * math.log10(lr / best_lr) ** 2 + 5 * math.log2(dim / 32) - 2e3 * wd
    recall += np.random.default_rng(trial.number).normal(0, 2)
    return max(recall, 0.0), dim


def front_hypervolume(sampler: optuna.samplers.BaseSampler, trials: int) -> float:
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=trials)
    points = np.array([[-t.values[0], t.values[1]] for t in study.trials])
    return hypervolume(points, [0.0, 300.0])


SAMPLERS = {
    "NSGA-II (population 50, Optuna's default)": lambda s: optuna.samplers.NSGAIISampler(seed=s),
    "NSGA-II (population 8)": lambda s: optuna.samplers.NSGAIISampler(seed=s, population_size=8),
    "multi-objective TPE": lambda s: optuna.samplers.TPESampler(seed=s),
    "random": lambda s: optuna.samplers.RandomSampler(seed=s),
}

if __name__ == "__main__":
    for trials in (12, 24, 48):
        for name, make in SAMPLERS.items():
            hv = [front_hypervolume(make(seed), trials) for seed in range(10)]
            print(f"{trials:3d} trials  {name:42s} {np.mean(hv):7.0f} ± {np.std(hv):4.0f}")
