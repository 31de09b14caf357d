"""What a search will cost before it runs: ``vpr-tune run SPACE --estimate``.

Two halves:

- arithmetic (no torch): how many trial-epochs a search runs under FIFO, ASHA or MO-ASHA
  (:func:`trial_epochs`; the rung schedulers simulated on random results), PBT/PB2's
  perturbation rounds, exploits and restarts (:func:`pbt_restarts`), and the projection of
  wall time and GPU hours from per-epoch timings (:func:`project`,
  :func:`synchronous_wall_s`);
- timing (:func:`estimate_search`): build the space's smallest and largest configurations,
  time a few training batches, one val pass, one checkpoint save and load with the real
  ``Trainer`` on this machine, time a local Ray start, start as many trial workers as run
  at once (their imports, and how much slower they compute together than one alone:
  :func:`concurrent_workers`), and project the whole search.

>>> round(trial_epochs(12, 4, "asha", grace_period=1, reduction_factor=3)["trial_epochs"], 1)
26.3
>>> project(trial_epochs=26.3, trials=12, epoch_s=7.0, trial_start_s=4.0, ray_start_s=5.0,
...         concurrency=2, gpus_per_trial=0, max_epochs=4)["wall_s"]
121.05

Nothing is written under ``results/``: the timing trainer writes its checkpoint to a temp dir.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np

from vpr_tune.components import BACKBONES, CUTS
from vpr_tune.durations import format_duration
from vpr_tune.errors import UserError
from vpr_tune.leaf_values import CATEGORICAL
from vpr_tune.rungs import REDUCTION_FACTOR, milestones
from vpr_tune.schema import POPULATION_SCHEDULERS

# Ray Tune's own work per trial besides what is timed (actor start, trial folder, checkpoint
# hand-over each epoch, result processing): a small allowance in seconds; the demo's trials
# on our 2-core machine spent a few seconds each outside the timed parts.
TUNE_TRIAL_S = 2.0


# ---------------------------------------------------------------------------- arithmetic
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


# ------------------------------------------------------------------ smallest / largest
# How a value of a cost-relevant key ranks (bigger = slower); keys not listed do not change
# the time of an epoch much (optimizer, lr, loss margins) and keep their sampled value.
_AGGREGATOR_COST = ("avg", "gem", "cosplace", "convap", "mixvpr", "netvlad", "salad",
                    "boq")  # cheap first


def _rank(order: tuple[str, ...]) -> Any:
    return lambda v: order.index(v) if v in order else len(order)  # unknown: dearest


def _area(size: Any) -> int:
    return int(size) ** 2 if isinstance(size, (int, float)) else int(size[0]) * int(size[1])


_COST: dict[str, Any] = {
    "data.image_size": _area,
    "model.backbone": _rank(tuple(BACKBONES)),  # registry order: resnet18, ..., dinov2_vitl14
    "model.cut": _rank(CUTS),
    "model.freeze_stages": lambda v: -int(v),  # fewer frozen stages: more backward work
    "model.train_blocks": int,  # ViTs: more trained blocks, more backward work
    "model.aggregator.name": _rank(_AGGREGATOR_COST),
    "budget.places_per_batch": float,
    "budget.images_per_place": float,
    "budget.batches_per_epoch": float,
}


def _cost_key(path: str) -> Any:
    if path in _COST:
        return _COST[path]
    if path.startswith("model.aggregator."):  # dim, clusters, out_channels, ...
        return lambda v: float(v) if isinstance(v, (int, float)) else 0.0
    return None


def extreme_config(space: Any, largest: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(config, chosen cost values)`` of the space's smallest or largest trial: every
    cost-relevant parameter at its cheapest or dearest value, the others as sampled."""
    from vpr_tune.config import materialize
    from vpr_tune.tune.sampling import sample_param

    rng = np.random.default_rng(int(space.base["search"]["seed"]))
    gating = {s for p in space.params.values() for s in p.when}
    params = sorted(space.params.values(), key=lambda p: 0 if p.path in gating else 1)
    chosen: dict[str, Any] = {}
    extremes: dict[str, Any] = {}
    for p in params:
        if not p.applies(chosen):
            continue
        key = _cost_key(p.path)
        if key is None or p.kind == "value":
            chosen[p.path] = sample_param(p, rng) if p.kind != "grid" else p.args[0]
            continue
        if p.kind in CATEGORICAL:
            value = (max if largest else min)(p.args, key=key)
        else:  # numeric range: its ends (int stays int)
            value = p.args[1] if largest else p.args[0]
        chosen[p.path] = extremes[p.path] = value
    return materialize(space.base, chosen), extremes


# ----------------------------------------------------------------------------- timing
class _EnoughBatches(Exception):
    pass


def time_config(cfg: dict[str, Any], data_root: Any, device: str, threads: int,
                batches: int = 4, max_steady_s: float = 20.0) -> dict[str, float]:
    """Seconds of one trial's parts for ``cfg`` with the real ``Trainer`` on ``device``:
    ``build_s`` (data lists, model, optimizer), ``first_batch_s`` and steady ``batch_s`` of
    training (``batches`` batches, fewer once the steady ones took ``max_steady_s``),
    ``val_s`` (one val pass), ``checkpoint_s`` (checkpoint + best model) and ``load_s``
    (loading that checkpoint), ``rebuild_s`` (a second ``Trainer`` in the same process:
    what a PBT restart on a reused worker builds; the first build also pays for first-use
    imports and caches)."""
    import copy
    import tempfile
    import time
    from pathlib import Path

    from vpr_tune.train import Trainer

    cfg = copy.deepcopy(cfg)
    cfg["budget"]["batches_per_epoch"] = max(2, int(batches))
    cfg["model"]["pretrained"] = "none"  # same time as loaded weights, and no download
    start = time.perf_counter()
    trainer = Trainer(cfg, Path(data_root), device=device, num_threads=threads,
                      log=lambda *_a, **_k: None)
    build = time.perf_counter() - start
    stamps: list[float] = []

    def on_batch(_b: int, _loss: float) -> None:
        stamps.append(time.perf_counter())
        if len(stamps) >= 2 and stamps[-1] - stamps[0] > max_steady_s:
            raise _EnoughBatches  # slow batches (a big config on a CPU): two are enough

    start = time.perf_counter()
    with contextlib.suppress(_EnoughBatches):
        trainer.train_epoch(on_batch=on_batch)
    trainer.epoch += 1
    first = stamps[0] - start
    steady = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    start = time.perf_counter()
    trainer.validate()
    val = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="vpr-estimate-") as tmp:
        start = time.perf_counter()
        trainer.save_checkpoint(Path(tmp) / "checkpoint.pt")
        trainer.save_model(Path(tmp) / "best.pt")
        ckpt = time.perf_counter() - start
        start = time.perf_counter()
        trainer.load_checkpoint(Path(tmp) / "checkpoint.pt")
        load = time.perf_counter() - start
    start = time.perf_counter()
    Trainer(cfg, Path(data_root), device=device, num_threads=threads, log=lambda *_a, **_k: None)
    rebuild = time.perf_counter() - start
    return {"build_s": build, "first_batch_s": first, "batch_s": steady,
            "timed_batches": len(stamps), "val_s": val,
            "val_images": len(trainer.val_split.db_paths) + len(trainer.val_split.q_paths),
            "checkpoint_s": ckpt, "load_s": load, "rebuild_s": rebuild}


# A trial worker: imports ray (Ray starts its workers with ray imported, in parallel with
# the driver), then what a trial imports (both timed), waits for "go" on stdin, then runs a
# small conv forward + backward with THREADS threads for SECONDS and prints its rate.
_WORKER = r"""
import sys, time
start = time.perf_counter()
import ray
mid = time.perf_counter()
import ray.tune, vpr_tune.train, vpr_tune.evaluate
print("imported", mid - start, time.perf_counter() - mid, flush=True)
sys.stdin.readline()
from vpr_tune.tune.estimate import _bench_rate
print("rate", _bench_rate(int(sys.argv[1]), float(sys.argv[2])), flush=True)
"""


def _bench_rate(threads: int, seconds: float) -> float:
    """Steps per second of a small conv net's forward + backward on the CPU with
    ``threads`` threads (a stand-in for a trial's epoch: only its ratio is used)."""
    import time

    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
                                  torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(),
                                  torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        x = torch.randn(8, 3, 32, 32)
        net(x).sum().backward()  # warm-up
        steps, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            net(x).sum().backward()
            steps += 1
        return steps / elapsed
    finally:
        torch.set_num_threads(saved)


def concurrent_workers(n: int, threads: int, bench_s: float = 2.0) -> dict[str, float]:
    """Start ``n`` fresh Python processes, as a search starts its first ``n`` trials, and
    time: ``import_s`` (the seconds the first took to import what a trial imports on top
    of ``ray``, alone: Ray's workers start with ``ray`` imported, and real trial workers
    importing together took about that, where ``n`` bare processes importing at once
    measured 2-4x more), ``driver_import_s`` (the first's ``ray`` and the rest: what the
    search's own process imports) and ``slowdown`` (how much slower each of them computes
    with ``threads`` threads while all ``n`` compute, against this process alone just before
    and after; 1 when ``bench_s`` is 0). On a CPU, ``n * threads`` above the free cores is
    oversubscription: 4 one-thread trials on 2 idle cores each run at about half speed."""
    import subprocess
    import sys

    def start() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", _WORKER, str(threads), str(bench_s)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)

    procs = [start()]
    try:
        imports, totals = [], []
        for k in range(max(1, n)):
            proc = procs[k]
            line = proc.stdout.readline().split()  # type: ignore[union-attr]
            if not line or line[0] != "imported":
                raise RuntimeError("a trial worker's imports failed: try "
                                   "`python -c 'import ray.tune, vpr_tune.train'`")
            imports.append(float(line[2]))
            totals.append(float(line[1]) + float(line[2]))
            if k == 0:  # the first imported alone; the others now, together
                procs += [start() for _ in range(max(1, n) - 1)]
        alone: list[float] = []
        rates: list[float] = []
        if bench_s > 0:
            alone.append(_bench_rate(threads, bench_s))
        for proc in procs:
            proc.stdin.write("go\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
        for proc in procs:
            out, _ = proc.communicate(timeout=600)
            rates += [float(line.split()[1]) for line in out.splitlines()
                      if line.startswith("rate ")]
        if bench_s > 0:
            alone.append(_bench_rate(threads, bench_s))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    slowdown = 1.0
    if bench_s > 0 and rates and min(rates) > 0:
        # parallel work is never faster than alone: a ratio below 1 is the load moving
        slowdown = max(1.0, float(np.mean(alone)) / float(np.mean(rates)))
    return {"import_s": imports[0], "driver_import_s": totals[0],
            "slowdown": slowdown, "workers": len(procs)}


def worker_import_s() -> float:
    """Seconds a fresh Python process takes to import what a trial worker imports."""
    return concurrent_workers(1, 1, bench_s=0)["driver_import_s"]


def _time_ray_start(address: str | None, log: Any) -> tuple[dict[str, float], float]:
    """The cluster's resources and the seconds a Ray start (and stop) took here."""
    import time

    from vpr_tune.tune.ray_session import init_ray, stop_ray

    log("timing a local Ray start ...")
    start = time.perf_counter()
    try:
        started = init_ray(address)
    except UserError:
        raise
    except Exception as exc:  # raylet/GCS start-up timeout on an overloaded machine
        raise UserError(f"could not start Ray here ({str(exc).splitlines()[0]}); a search "
                        "would fail the same way: retry when the machine is less busy") from exc
    import ray

    cluster = ray.cluster_resources()
    if started:
        stop_ray()
    return cluster, time.perf_counter() - start


def estimate_search(space: Any, data_root: Any, address: str | None = None,
                    batches: int = 4, log: Any = print) -> dict[str, Any]:
    """Time the space's smallest and largest trials here and project the whole search.

    Returns one JSON-ready dict: ``wall_s``, ``trial_epochs``, ``gpu_hours`` and the parts
    they come from (timings per config, overheads, concurrency, ASHA rungs)."""
    import os
    import time

    import torch

    from vpr_tune.device import pick_device
    from vpr_tune.tune.prepare import prepare_data
    from vpr_tune.tune.sampling import count_trials, possible_values
    from vpr_tune.tune.searchers import plan_line, rung_objectives

    sconf, res, asha = space.base["search"], space.base["resources"], space.base["asha"]
    trials = count_trials(space, int(sconf["num_samples"]))
    max_epochs = max(int(v) for v in possible_values(space, "budget.max_epochs"))
    objectives = len(rung_objectives(sconf, asha.get("metric")))
    epochs = trial_epochs(trials, max_epochs, sconf["scheduler"], float(asha["grace_period"]),
                          float(asha["reduction_factor"]), objectives=objectives)

    log(f"space {space.source}: {plan_line(space, trials)}")
    start = time.perf_counter()
    prepare_data(space, data_root, build_cache=True, log=log)  # what `run` does first
    data_s = time.perf_counter() - start
    cluster, ray_s = _time_ray_start(address, log)
    gpu, cpu = float(res["gpu"]), float(res["cpu"])
    fits = [int(sconf["max_concurrent"]), trials, int(cluster.get("CPU", 1) // max(cpu, 1e-9))]
    if gpu > 0:
        fits.append(int(cluster.get("GPU", 0) // gpu))
    concurrency = max(1, min(fits))
    device = pick_device(gpu > 0)
    if gpu > 0 and device == "cpu":
        log(f"note: resources.gpu {gpu:g} but torch sees no GPU here: timed on the CPU, "
            "so the times are far above a GPU's")
    threads = max(1, min(int(cpu), os.cpu_count() or 1))
    if cpu > (os.cpu_count() or 1):
        log(f"note: resources.cpu {cpu:g} > {os.cpu_count()} cores here: timed with "
            f"{threads} thread(s)")
    population = sconf["scheduler"] in POPULATION_SCHEDULERS
    synch = population and bool(sconf.get("reproducible"))
    pbt = (pbt_restarts(trials, max_epochs, int(space.base["pbt"]["perturbation_interval"]),
                        float(space.base["pbt"]["quantile_fraction"]), synch, concurrency)
           if population else {"rounds": 0, "exploits": 0.0, "restarts": 0.0})
    # as many as share one machine (a cluster spreads the rest over its nodes), at most 16
    together = max(1, min(concurrency, int((os.cpu_count() or 1) // max(cpu, 1e-9)), 16))
    log(f"starting {together} trial worker(s) at once: their imports"
        + (f", then {together} x {threads} thread(s) computing together against one alone"
           if device == "cpu" and together > 1 else "") + " ...")
    workers = concurrent_workers(together, threads,
                                 bench_s=2.0 if device == "cpu" and together > 1 else 0)
    imports, slowdown = workers["import_s"], workers["slowdown"]
    driver_imports = workers["driver_import_s"]

    configs = {}
    for label, largest in (("smallest", False), ("largest", True)):
        cfg, chosen = extreme_config(space, largest)
        if any(cfg == c for c, _ in configs.values()):  # nothing cost-relevant varies
            configs["every trial"] = configs.pop("smallest")
            continue
        configs[label] = (cfg, chosen)
    timed = []
    saved_threads = torch.get_num_threads()
    try:
        for label, (cfg, chosen) in configs.items():
            log(f"timing the {label} configuration on {device} ({threads} thread(s)): "
                f"{batches} training batches, one val pass, one checkpoint ...")
            t = time_config(cfg, data_root, device, threads, batches)
            bpe = int(cfg["budget"]["batches_per_epoch"])
            warm_up = max(0.0, t["first_batch_s"] - t["batch_s"])
            # PBT checkpoints every perturbation interval only (the best model every epoch)
            ckpt = t["checkpoint_s"] / (int(space.base["pbt"]["perturbation_interval"])
                                        if population else 1)
            t.update(label=label, chosen=chosen, batches_per_epoch=bpe,
                     epoch_s=(bpe * t["batch_s"] + t["val_s"] + ckpt) * slowdown,
                     start_s=imports + (t["build_s"] + warm_up) * slowdown,
                     restart_s=(t["rebuild_s"] + t["load_s"] + warm_up) * slowdown)
            timed.append(t)
    finally:
        torch.set_num_threads(saved_threads)
    # synchronous PBT: every round waits for the population's slowest trial
    pick = max if synch else (lambda xs: sum(xs) / len(xs))
    epoch_s = pick([t["epoch_s"] for t in timed])
    start_s = sum(t["start_s"] for t in timed) / len(timed)
    # FIFO, PBT and PB2 reuse a finished trial's worker (no new process, no imports) for the
    # next trial: only the first `concurrency` trials import
    if population or sconf["scheduler"] == "fifo":
        start_s -= imports * (trials - min(trials, concurrency)) / trials
    restart_s = pick([t["restart_s"] for t in timed]) + TUNE_TRIAL_S
    out = project(epochs["trial_epochs"], trials, epoch_s, start_s + TUNE_TRIAL_S,
                  ray_s + data_s + driver_imports, concurrency, gpu, max_epochs,
                  restarts=pbt["restarts"], restart_s=restart_s)
    if synch and concurrency >= trials:
        interval = int(space.base["pbt"]["perturbation_interval"])
        out["wall_s"] = (ray_s + data_s + driver_imports + start_s + TUNE_TRIAL_S
                         + synchronous_wall_s(trials, max_epochs, interval, epoch_s,
                                              restart_s, epoch_s / slowdown,
                                              (restart_s - TUNE_TRIAL_S) / slowdown
                                              + TUNE_TRIAL_S, imports))
    return {"wall_s": out["wall_s"], "trial_epochs": epochs["trial_epochs"],
            "gpu_hours": out["gpu_hours"], "fifo_trial_epochs": epochs["fifo"],
            "trials": trials, "max_epochs": max_epochs, "scheduler": sconf["scheduler"],
            "objectives": objectives, "rungs": epochs["rungs"], "concurrency": concurrency,
            "device": device, "threads": threads, "gpus_per_trial": gpu,
            "slowdown": slowdown, "epoch_s": epoch_s,
            "trial_start_s": start_s + TUNE_TRIAL_S, "trial_s": out["trial_s"],
            "synchronous": synch, "perturbation_rounds": pbt["rounds"],
            "exploits": pbt["exploits"], "restarts": pbt["restarts"],
            "restart_s": restart_s if population else 0.0,
            "ray_start_s": ray_s, "data_s": data_s, "worker_import_s": imports,
            "driver_import_s": driver_imports,
            "cpu_cores": os.cpu_count(), "configs": timed}


def format_estimate(e: dict[str, Any]) -> list[str]:
    """The human-readable lines ``run --estimate`` prints."""
    lines = []
    for t in e["configs"]:
        chosen = ", ".join(f"{k}={v}" for k, v in t["chosen"].items()) or "as in the space"
        lines.append(f"{t['label']}: {chosen}")
        lines.append(f"  {t['batches_per_epoch']} batches x {t['batch_s']:.2f}s + val "
                     f"{t['val_s']:.1f}s ({t['val_images']} images) + checkpoint "
                     f"{t['checkpoint_s']:.1f}s = {t['epoch_s']:.1f}s per epoch; "
                     f"start-up {t['start_s']:.1f}s")
    sched = e["scheduler"]
    if e["rungs"]:
        reach = ", ".join(f"{r['reach']:.1f} reach epoch {r['epoch']}" for r in e["rungs"])
        sched = (f"MO-ASHA on {e['objectives']} objectives" if e.get("objectives", 1) > 1
                 else "ASHA") + f" ({reach})"
    lines += [
        f"trial-epochs: {e['fifo_trial_epochs']:.0f} under FIFO ({e['trials']} trials x "
        f"{e['max_epochs']} epochs); expected {e['trial_epochs']:.1f} with {sched}",
        *([f"{e['scheduler']}: {e['perturbation_rounds']} perturbation round(s), "
           f"{e['exploits']:.1f} exploit(s) expected, {e['restarts']:.1f} restart(s) from a "
           f"checkpoint at {e['restart_s']:.1f}s each"
           + (" (synchronous: all pause each round, the slowest sets the pace)"
              if e["synchronous"] else "")] if e.get("perturbation_rounds") else []),
        *([f"concurrency: {e['concurrency']} trials x {e['threads']} thread(s) computed "
           f"{e['slowdown']:.2f}x slower together than one alone here "
           f"({e['cpu_cores']} cores): epochs and start-ups scaled by that"]
          if e.get("slowdown", 1.0) > 1.0 else []),
        f"overheads: Ray start {e['ray_start_s']:.1f}s, data {e['data_s']:.1f}s, per trial "
        f"{e['trial_start_s']:.1f}s (worker imports {e['worker_import_s']:.1f}s)"
        + (f", driver imports {e['driver_import_s']:.1f}s" if "driver_import_s" in e else ""),
        f"projected wall time: {format_duration(e['wall_s'], 'short')} ({e['wall_s']:.0f}s) "
        f"at {e['concurrency']} trial(s) at a time on {e['device']}; trials "
        f"{e['trial_s'] / 3600:.2f} h in all",
        f"GPU hours: {e['gpu_hours']:.2f} ({e['gpus_per_trial']:g} GPU per trial"
        + (", timed on the CPU: a GPU is faster)" if e["device"] == "cpu" and
           e["gpus_per_trial"] > 0 else ")"),
    ]
    return lines
