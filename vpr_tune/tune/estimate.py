"""What a search will cost before it runs: ``vpr-tune run SPACE --estimate``.

:func:`estimate_search` runs four steps: the plan (trials, epochs, the scheduler's
trial-epochs: :mod:`vpr_tune.tune.estimate_model`), this machine's fixed costs (the data
check, a local Ray start, the trial workers started at once and how much slower they
compute together: :mod:`vpr_tune.tune.estimate_timing`), the space's smallest and largest
configurations timed with the real ``Trainer``, and the projection of the whole search from
those. :func:`format_estimate` writes the result as the lines ``run --estimate`` prints
(``--json`` prints the dict itself; its keys are a contract: docs/CONTRACTS.md).

Nothing is written under ``results/``: the timing trainer writes its checkpoint to a temp dir.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vpr_tune.durations import format_duration
from vpr_tune.schema import POPULATION_SCHEDULERS
from vpr_tune.tune.estimate_model import pbt_restarts, project, synchronous_wall_s, trial_epochs
from vpr_tune.tune.estimate_timing import (
    concurrent_workers,
    extreme_config,
    time_config,
    time_ray_start,
)

# Ray Tune's own work per trial besides what is timed (actor start, trial folder, checkpoint
# hand-over each epoch, result processing): a small allowance in seconds; the demo's trials
# on our 2-core machine spent a few seconds each outside the timed parts.
TUNE_TRIAL_S = 2.0


@dataclass
class _Plan:
    """The search as the space plans it: nothing timed yet."""

    trials: int
    max_epochs: int
    scheduler: str
    objectives: int
    epochs: dict[str, Any]  # trial_epochs(): fifo, trial_epochs, rungs
    population: bool  # PBT or PB2
    synch: bool  # synchronous PBT (search.reproducible)
    interval: int = 1  # PBT's perturbation_interval
    quantile_fraction: float = 0.0


@dataclass
class _Machine:
    """This machine's costs outside a trial's epochs, and how trials run on it."""

    data_s: float
    ray_s: float
    concurrency: int
    gpu: float  # resources.gpu: GPUs per trial
    device: str
    threads: int
    workers: dict[str, float]  # concurrent_workers()


def estimate_search(space: Any, data_root: Any, address: str | None = None,
                    batches: int = 4, log: Any = print) -> dict[str, Any]:
    """Time the space's smallest and largest trials here and project the whole search.

    Returns one JSON-ready dict: ``wall_s``, ``trial_epochs``, ``gpu_hours`` and the parts
    they come from (timings per config, overheads, concurrency, ASHA rungs)."""
    from vpr_tune.tune.searchers import plan_line

    plan = _plan(space)
    log(f"space {space.source}: {plan_line(space, plan.trials)}")
    machine = _measure_machine(space, data_root, address, plan.trials, log)
    timed = _time_configs(space, data_root, plan, machine, batches, log)
    return _project_search(plan, machine, timed)


def _plan(space: Any) -> _Plan:
    """Trials, epochs and the scheduler's expected trial-epochs of the space's search."""
    from vpr_tune.tune.sampling import count_trials, possible_values
    from vpr_tune.tune.searchers import rung_objectives

    sconf, asha = space.base["search"], space.base["asha"]
    trials = count_trials(space, int(sconf["num_samples"]))
    max_epochs = max(int(v) for v in possible_values(space, "budget.max_epochs"))
    objectives = len(rung_objectives(sconf, asha.get("metric")))
    epochs = trial_epochs(trials, max_epochs, sconf["scheduler"], float(asha["grace_period"]),
                          float(asha["reduction_factor"]), objectives=objectives)
    population = sconf["scheduler"] in POPULATION_SCHEDULERS
    plan = _Plan(trials, max_epochs, sconf["scheduler"], objectives, epochs, population,
                 synch=population and bool(sconf.get("reproducible")))
    if population:
        plan.interval = int(space.base["pbt"]["perturbation_interval"])
        plan.quantile_fraction = float(space.base["pbt"]["quantile_fraction"])
    return plan


def _measure_machine(space: Any, data_root: Any, address: str | None, trials: int,
                     log: Any) -> _Machine:
    """The data check and a Ray start timed, the trials that fit at once, the device and
    threads a trial gets, and that many trial workers started together."""
    import os
    import time

    from vpr_tune.device import pick_device
    from vpr_tune.tune.prepare import prepare_data

    sconf, res = space.base["search"], space.base["resources"]
    start = time.perf_counter()
    prepare_data(space, data_root, build_cache=True, log=log)  # what `run` does first
    data_s = time.perf_counter() - start
    cluster, ray_s = time_ray_start(address, log)
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
    workers = _start_workers(concurrency, cpu, threads, device, log)
    return _Machine(data_s, ray_s, concurrency, gpu, device, threads, workers)


def _start_workers(concurrency: int, cpu: float, threads: int, device: str,
                   log: Any) -> dict[str, float]:
    """:func:`concurrent_workers` for the trials that share this machine at once."""
    import os

    # as many as share one machine (a cluster spreads the rest over its nodes), at most 16
    together = max(1, min(concurrency, int((os.cpu_count() or 1) // max(cpu, 1e-9)), 16))
    # the CPU benchmark stands for a CPU trial's epoch only, and one worker has no rival
    bench = device == "cpu" and together > 1
    log(f"starting {together} trial worker(s) at once: their imports"
        + (f", then {together} x {threads} thread(s) computing together against one alone"
           if bench else "") + " ...")
    return concurrent_workers(together, threads, bench_s=2.0 if bench else 0)


def _configs_to_time(space: Any) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Label -> ``(config, chosen cost values)``: the smallest and the largest trial, or
    one ``every trial`` when they are the same."""
    configs: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for label, largest in (("smallest", False), ("largest", True)):
        cfg, chosen = extreme_config(space, largest)
        if any(cfg == c for c, _ in configs.values()):  # nothing cost-relevant varies
            configs["every trial"] = configs.pop("smallest")
            continue
        configs[label] = (cfg, chosen)
    return configs


def _time_configs(space: Any, data_root: Any, plan: _Plan, machine: _Machine, batches: int,
                  log: Any) -> list[dict[str, Any]]:
    """Each configuration's parts timed (:func:`time_config`), with the epoch, start-up
    and restart seconds of a trial running among the others (scaled by the slowdown)."""
    import torch

    imports, slowdown = machine.workers["import_s"], machine.workers["slowdown"]
    device, threads = machine.device, machine.threads
    timed = []
    saved_threads = torch.get_num_threads()
    try:
        for label, (cfg, chosen) in _configs_to_time(space).items():
            what = "the configuration every trial shares" if label == "every trial" else \
                f"the {label} configuration"
            log(f"timing {what} on {device} ({threads} thread(s)): "
                f"{batches} training batches, one val pass, one checkpoint ...")
            t = time_config(cfg, data_root, device, threads, batches)
            bpe = int(cfg["budget"]["batches_per_epoch"])
            warm_up = max(0.0, t["first_batch_s"] - t["batch_s"])
            # PBT checkpoints every perturbation interval only (the best model every epoch)
            ckpt = t["checkpoint_s"] / (plan.interval if plan.population else 1)
            t.update(label=label, chosen=chosen, batches_per_epoch=bpe,
                     epoch_s=(bpe * t["batch_s"] + t["val_s"] + ckpt) * slowdown,
                     start_s=imports + (t["build_s"] + warm_up) * slowdown,
                     restart_s=(t["rebuild_s"] + t["load_s"] + warm_up) * slowdown)
            timed.append(t)
    finally:
        torch.set_num_threads(saved_threads)
    return timed


def _project_search(plan: _Plan, machine: _Machine,
                    timed: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole search projected from the timings: the dict :func:`estimate_search`
    returns."""
    import os

    trials, concurrency = plan.trials, machine.concurrency
    imports, slowdown = machine.workers["import_s"], machine.workers["slowdown"]
    driver_imports = machine.workers["driver_import_s"]
    pbt = (pbt_restarts(trials, plan.max_epochs, plan.interval, plan.quantile_fraction,
                        plan.synch, concurrency)
           if plan.population else {"rounds": 0, "exploits": 0.0, "restarts": 0.0})
    # synchronous PBT: every round waits for the population's slowest trial
    pick = max if plan.synch else (lambda xs: sum(xs) / len(xs))
    epoch_s = pick([t["epoch_s"] for t in timed])
    start_s = sum(t["start_s"] for t in timed) / len(timed)
    # FIFO, PBT and PB2 reuse a finished trial's worker (no new process, no imports) for the
    # next trial: only the first `concurrency` trials import
    if plan.population or plan.scheduler == "fifo":
        start_s -= imports * (trials - min(trials, concurrency)) / trials
    restart_s = pick([t["restart_s"] for t in timed]) + TUNE_TRIAL_S
    # Asynchronous PBT: an exploiting trial goes on from its source's latest checkpoint,
    # which lags it by about one interval, so it trains those epochs again (measured on
    # tests/test_estimate_real's pbt case: 8 epochs again for 6 exploits at interval 1, 24
    # trial-epochs where 16 were projected). Synchronous rounds all stand at one epoch.
    rerun_epochs = pbt["exploits"] * plan.interval if plan.population and not plan.synch \
        else 0.0
    fixed_s = machine.ray_s + machine.data_s + driver_imports
    out = project(plan.epochs["trial_epochs"] + rerun_epochs, trials, epoch_s,
                  start_s + TUNE_TRIAL_S,
                  fixed_s, concurrency, machine.gpu, plan.max_epochs,
                  restarts=pbt["restarts"], restart_s=restart_s)
    if plan.synch and concurrency >= trials:
        out["wall_s"] = (fixed_s + start_s + TUNE_TRIAL_S
                         + synchronous_wall_s(trials, plan.max_epochs, plan.interval, epoch_s,
                                              restart_s, epoch_s / slowdown,
                                              (restart_s - TUNE_TRIAL_S) / slowdown
                                              + TUNE_TRIAL_S, imports))
    return {"wall_s": out["wall_s"], "trial_epochs": plan.epochs["trial_epochs"],
            "gpu_hours": out["gpu_hours"], "fifo_trial_epochs": plan.epochs["fifo"],
            "trials": trials, "max_epochs": plan.max_epochs, "scheduler": plan.scheduler,
            "objectives": plan.objectives, "rungs": plan.epochs["rungs"],
            "concurrency": concurrency, "device": machine.device, "threads": machine.threads,
            "gpus_per_trial": machine.gpu, "slowdown": slowdown, "epoch_s": epoch_s,
            "trial_start_s": start_s + TUNE_TRIAL_S, "trial_s": out["trial_s"],
            "synchronous": plan.synch, "perturbation_rounds": pbt["rounds"],
            "exploits": pbt["exploits"], "restarts": pbt["restarts"],
            "rerun_epochs": rerun_epochs, "restart_s": restart_s if plan.population else 0.0,
            "ray_start_s": machine.ray_s, "data_s": machine.data_s,
            "worker_import_s": imports, "driver_import_s": driver_imports,
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
