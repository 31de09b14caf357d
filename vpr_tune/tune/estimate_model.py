"""The cost model of ``run --estimate``: what a search trains and how long that takes.

Arithmetic only (no torch, no timing): how many trial-epochs a search runs under FIFO, ASHA
or MO-ASHA (:func:`trial_epochs`; the rung schedulers simulated on random results), PBT/PB2's
perturbation rounds, exploits and restarts (:func:`pbt_restarts`), and the projection of
wall time and GPU hours from per-epoch timings (:func:`project`, :func:`synchronous_wall_s`).
The timings come from :mod:`vpr_tune.tune.estimate_timing`; :mod:`vpr_tune.tune.estimate`
puts the two together.

>>> round(trial_epochs(12, 4, "asha", grace_period=1, reduction_factor=3)["trial_epochs"], 1)
26.3
>>> project(trial_epochs=26.3, trials=12, epoch_s=7.0, trial_start_s=4.0, ray_start_s=5.0,
...         concurrency=2, gpus_per_trial=0, max_epochs=4)["wall_s"]
121.05
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vpr_tune.rungs import REDUCTION_FACTOR, milestones


def _asha_reach(trials: int, rungs: list[float], reduction_factor: float,
                rng: np.random.Generator) -> list[int]:
    """One simulated search under Ray's async rule: how many trials pass each rung.

    Trials arrive one after another; a trial's result keeps its rank at every rung (ASHA's
    own premise); it continues past a rung unless it is below the ``1 - 1/rf`` percentile
    (numpy's linear interpolation, as Ray computes it) of the results already recorded
    there. The first trial at a rung always passes."""
    import bisect

    q = 1.0 - 1.0 / reduction_factor
    recorded: list[list[float]] = [[] for _ in rungs]
    passed = [0] * len(rungs)
    for quality in rng.random(trials):
        for k, seen in enumerate(recorded):
            if seen:
                h = (len(seen) - 1) * q
                lo = int(h)
                hi = min(lo + 1, len(seen) - 1)
                if quality < seen[lo] + (h - lo) * (seen[hi] - seen[lo]):
                    bisect.insort(seen, quality)
                    break
            bisect.insort(seen, quality)
            passed[k] += 1
    return passed


def _rung_reach(trials: int, objectives: int, max_t: int, grace_period: float,
                reduction_factor: float, rng: np.random.Generator) -> list[int]:
    """One simulated search under the rung scheduler a search really uses
    (:func:`vpr_tune.tune.searchers.rung_scheduler`: Ray's ASHA on one objective,
    :class:`~vpr_tune.tune.moasha.MultiObjectiveASHA` on several): the epochs each trial
    trains. Trials arrive one after another, each with a random vector of objective values
    that it keeps at every rung (ASHA's premise: a trial keeps its rank)."""
    from vpr_tune.tune.searchers import rung_scheduler

    class _Trial:
        def __init__(self, trial_id: str) -> None:
            self.trial_id = trial_id

    names = [f"o{k}" for k in range(objectives)]
    scheduler = rung_scheduler([(n, "max") for n in names], max_t, int(grace_period),
                               reduction_factor)
    trained = []
    for i, values in enumerate(rng.random((trials, objectives))):
        trial = _Trial(str(i))
        scheduler.on_trial_add(None, trial)
        for epoch in range(1, max_t + 1):
            result = {"epoch": epoch, **dict(zip(names, values, strict=True))}
            if epoch == max_t or scheduler.on_trial_result(None, trial, result) == "STOP":
                scheduler.on_trial_complete(None, trial, result)
                trained.append(epoch)
                break
    return trained


def trial_epochs(trials: int, max_epochs: int, scheduler: str, grace_period: float = 1,
                 reduction_factor: float = REDUCTION_FACTOR, runs: int = 200,
                 objectives: int = 1) -> dict[str, Any]:
    """Trial-epochs the search trains: ``trials * max_epochs`` under FIFO, PBT and PB2
    (every member of the population trains to the end). Under ASHA every trial trains to the
    first rung and the expected survivors of each rung to the next one (the last rung's
    survivors to ``max_epochs``): about ``1/rf`` of a rung's trials pass it, more in a small
    search, where the first trials at a rung pass for lack of rivals; the expectation is the
    mean of ``runs`` seeded simulations of Ray's rule. With several ``objectives`` (MO-ASHA)
    a trial passes a rung when it ranks in the top ``1/rf`` by non-dominated sorting, which
    on independent objectives keeps far more than ``1/rf``: the real scheduler is simulated
    (:func:`_rung_reach`; ``runs // 2`` runs, fewer above 20 trials: it is slower).

    Returns ``{"fifo": ..., "trial_epochs": ..., "rungs": [{"epoch", "reach"}, ...]}``;
    ``reach`` is the expected number of trials that train up to that epoch."""
    fifo = float(trials * max_epochs)
    if scheduler != "asha":
        return {"fifo": fifo, "trial_epochs": fifo, "rungs": []}
    rungs = [r for r in milestones(grace_period, reduction_factor, max_epochs) if r < max_epochs]
    rng = np.random.default_rng(0)
    if rungs and objectives > 1:
        # each decision sorts the rung's results into fronts (quadratic): fewer runs for a
        # big search, whose fractions vary less from run to run anyway
        mo_runs = max(2, min(runs // 2, 40_000 // trials ** 2))
        sims = [np.array(_rung_reach(trials, objectives, max_epochs, grace_period,
                                     reduction_factor, rng)) for _ in range(mo_runs)]
        # passing rung k = training past it
        passed = np.array([np.mean([np.sum(t > math.ceil(m)) for t in sims]) for m in rungs])
    else:
        passed = np.mean([_asha_reach(trials, rungs, reduction_factor, rng)
                          for _ in range(runs)], axis=0) if rungs else np.zeros(0)
    total, done, reach, out = 0.0, 0, float(trials), []
    for milestone, survivors in zip(rungs, passed, strict=True):
        epochs = math.ceil(milestone)  # a trial reports whole epochs: stops at the first >= rung
        total += reach * (epochs - done)
        out.append({"epoch": epochs, "reach": reach})
        done, reach = epochs, float(survivors)
    total += reach * (max_epochs - done)
    out.append({"epoch": max_epochs, "reach": reach})
    return {"fifo": fifo, "trial_epochs": total, "rungs": out}


def _pbt_exploits(trials: int, rounds: int, quantile_fraction: float, synch: bool,
                  rng: np.random.Generator, noise: float = 0.1) -> int:
    """One simulated population under Ray's PBT rule: how many exploits it makes.

    Each trial has a quality (random; an exploit copies its source's); at a perturbation
    epoch it reports quality + noise. Ray ranks the trials that have reported at a
    perturbation epoch (fewer than two: no ranking), takes ``ceil(n * quantile_fraction)``
    (at most ``n // 2``) from each end; a trial in the top keeps a checkpoint, one in the
    bottom clones a random top trial if that one kept a checkpoint at its own last report.
    Asynchronous: trials report a round in random order, each decided on arrival;
    synchronous: the whole population at once, the top checkpointed first."""

    def ends(scored: list[int], last: list[float]) -> tuple[list[int], list[int]]:
        scored = sorted(scored, key=lambda i: last[i])
        if len(scored) <= 1:
            return [], []
        n = math.ceil(len(scored) * quantile_fraction)
        n = min(n, len(scored) // 2)
        return scored[:n], scored[len(scored) - n:] if n else []

    quality = rng.random(trials)
    last = [0.0] * trials
    scored: list[int] = []
    kept = [False] * trials
    exploits = 0
    for _ in range(rounds):
        order = list(range(trials)) if synch else list(rng.permutation(trials))
        if synch:
            for i in order:
                last[i] = quality[i] + noise * rng.standard_normal()
            scored = order
            lower, upper = ends(scored, last)
            kept = [i in upper for i in range(trials)]
            for i in lower:
                source = upper[int(rng.integers(len(upper)))]
                exploits += 1
                quality[i] = quality[source]
            continue
        for i in order:
            last[i] = quality[i] + noise * rng.standard_normal()
            if i not in scored:
                scored.append(i)
            lower, upper = ends(scored, last)
            kept[i] = i in upper
            if i in lower:
                source = upper[int(rng.integers(len(upper)))]
                if kept[source]:
                    exploits += 1
                    quality[i] = quality[source]
    return exploits


def pbt_restarts(trials: int, max_epochs: int, perturbation_interval: int,
                 quantile_fraction: float, synch: bool, concurrency: int,
                 runs: int = 200) -> dict[str, float]:
    """What PBT/PB2 adds to a population's ``trials * max_epochs``: perturbation ``rounds``
    (every ``perturbation_interval`` epochs, the last epoch included: Ray sees that report
    before the trial returns), expected ``exploits`` (mean of ``runs`` seeded simulations
    of Ray's rule, :func:`_pbt_exploits`), and ``restarts``: the times a trial is paused and
    started again from a checkpoint. Asynchronous PBT pauses only the exploiting trials
    when the whole population runs at once; synchronous PBT (``search.reproducible``) pauses
    every trial at every round, and so does asynchronous PBT when the population does not
    fit (``concurrency < trials``: Ray pauses a trial at its perturbation epoch while
    another waits).

    >>> pbt_restarts(4, 8, 2, 0.5, synch=True, concurrency=4)
    {'rounds': 4, 'exploits': 8.0, 'restarts': 16.0}
    """
    rounds = max(0, int(max_epochs) // max(1, int(perturbation_interval)))
    rng = np.random.default_rng(0)
    exploits = float(np.mean([_pbt_exploits(trials, rounds, quantile_fraction, synch, rng)
                              for _ in range(runs)])) if rounds and trials > 1 else 0.0
    pause_all = trials > 1 and (synch or concurrency < trials)
    restarts = float(rounds * trials) if pause_all else exploits
    return {"rounds": rounds, "exploits": exploits, "restarts": restarts}


def project(trial_epochs: float, trials: int, epoch_s: float, trial_start_s: float,
            ray_start_s: float, concurrency: int, gpus_per_trial: float,
            max_epochs: int, restarts: float = 0.0, restart_s: float = 0.0) -> dict[str, float]:
    """Wall time and GPU hours of a search from its per-epoch and start-up costs.

    Trials run ``concurrency`` at a time; the search takes at least one full-length trial
    (with its share of the ``restarts``, PBT's pauses, ``restart_s`` each). ``epoch_s`` and
    the start-up costs are those of a trial running among ``concurrency`` others (see
    :func:`concurrent_workers`). GPU hours are what the trials book: their time times
    ``gpus_per_trial``."""
    trial_s = trial_epochs * epoch_s + trials * trial_start_s + restarts * restart_s
    longest = trial_start_s + max_epochs * epoch_s + restarts / max(1, trials) * restart_s
    wall = ray_start_s + max(trial_s / max(1, concurrency), longest)
    return {"trial_s": trial_s, "wall_s": wall, "gpu_hours": trial_s * gpus_per_trial / 3600}


def synchronous_wall_s(trials: int, max_epochs: int, perturbation_interval: int,
                       epoch_s: float, restart_s: float, alone_epoch_s: float,
                       alone_restart_s: float, import_s: float) -> float:
    """Seconds of a synchronous PBT population from its first epoch to its end (add Ray's
    start and one trial start-up). Every ``perturbation_interval`` epochs (the last epoch
    included) all trials pause; each round waits for the slowest (pass the slowest
    configuration's times). Ray then resumes the population on the one worker it kept
    (one trial after another, each running alone: ``alone_*``) while it starts new workers
    for the others (``import_s``, then the trials in parallel): a round takes whichever is
    shorter. Measured on 4 tiny trials: after two rounds every trial ran on one worker.

    >>> synchronous_wall_s(4, 4, 2, epoch_s=10, restart_s=3, alone_epoch_s=5,
    ...                    alone_restart_s=1, import_s=30)
    68.0
    """
    interval = max(1, int(perturbation_interval))
    first = min(interval, max_epochs)
    wall, done = first * epoch_s, first
    while done < max_epochs or done % interval == 0:  # a round at `done`, then the rest
        nxt = min(done + interval, max_epochs) if done < max_epochs else done
        epochs = nxt - done
        serial = trials * (alone_restart_s + epochs * alone_epoch_s)
        parallel = import_s + restart_s + epochs * epoch_s
        wall += min(serial, parallel)
        if done == max_epochs:
            break
        done = nxt
    return float(wall)
