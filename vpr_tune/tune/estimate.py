"""What a search will cost before it runs: ``vpr-tune run SPACE --estimate``.

Two halves:

- arithmetic (pure, no torch): how many trial-epochs a search runs under FIFO or ASHA
  (:func:`trial_epochs`), and the projection of wall time and GPU hours from per-epoch
  timings (:func:`project`);
- timing (:func:`estimate_search`): build the space's smallest and largest configurations, time a
  few training batches, one val pass and one checkpoint with the real ``Trainer`` on this
  machine, time a local Ray start and a worker's imports, and project the whole search.

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


def trial_epochs(trials: int, max_epochs: int, scheduler: str, grace_period: float = 1,
                 reduction_factor: float = REDUCTION_FACTOR, runs: int = 200) -> dict[str, Any]:
    """Trial-epochs the search trains: ``trials * max_epochs`` under FIFO. Under ASHA every
    trial trains to the first rung and the expected survivors of each rung to the next one
    (the last rung's survivors to ``max_epochs``): about ``1/rf`` of a rung's trials pass
    it, more in a small search, where the first trials at a rung pass for lack of rivals;
    the expectation is the mean of ``runs`` seeded simulations of Ray's rule.

    Returns ``{"fifo": ..., "trial_epochs": ..., "rungs": [{"epoch", "reach"}, ...]}``;
    ``reach`` is the expected number of trials that train up to that epoch."""
    fifo = float(trials * max_epochs)
    if scheduler != "asha":
        return {"fifo": fifo, "trial_epochs": fifo, "rungs": []}
    rungs = [r for r in milestones(grace_period, reduction_factor, max_epochs) if r < max_epochs]
    rng = np.random.default_rng(0)
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


def project(trial_epochs: float, trials: int, epoch_s: float, trial_start_s: float,
            ray_start_s: float, concurrency: int, gpus_per_trial: float,
            max_epochs: int) -> dict[str, float]:
    """Wall time and GPU hours of a search from its per-epoch and start-up costs.

    Trials run ``concurrency`` at a time; the search takes at least one full-length trial.
    GPU hours are what the trials book: their time times ``gpus_per_trial``."""
    trial_s = trial_epochs * epoch_s + trials * trial_start_s
    longest = trial_start_s + max_epochs * epoch_s
    wall = ray_start_s + max(trial_s / max(1, concurrency), longest)
    return {"trial_s": trial_s, "wall_s": wall, "gpu_hours": trial_s * gpus_per_trial / 3600}


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
    ``val_s`` (one val pass) and ``checkpoint_s`` (checkpoint + best model)."""
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
    return {"build_s": build, "first_batch_s": first, "batch_s": steady,
            "timed_batches": len(stamps), "val_s": val,
            "val_images": len(trainer.val_split.db_paths) + len(trainer.val_split.q_paths),
            "checkpoint_s": ckpt}


def worker_import_s() -> float:
    """Seconds a fresh Python process takes to import what a trial worker imports."""
    import subprocess
    import sys
    import time

    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import ray.tune, vpr_tune.train, vpr_tune.evaluate"],
                   check=True, capture_output=True)
    return time.perf_counter() - start


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
    from vpr_tune.tune.searchers import plan_line

    sconf, res, asha = space.base["search"], space.base["resources"], space.base["asha"]
    trials = count_trials(space, int(sconf["num_samples"]))
    max_epochs = max(int(v) for v in possible_values(space, "budget.max_epochs"))
    epochs = trial_epochs(trials, max_epochs, sconf["scheduler"], float(asha["grace_period"]),
                          float(asha["reduction_factor"]))

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
    imports = worker_import_s()

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
            t.update(label=label, chosen=chosen, batches_per_epoch=bpe,
                     epoch_s=bpe * t["batch_s"] + t["val_s"] + t["checkpoint_s"],
                     start_s=imports + t["build_s"] + max(0.0, t["first_batch_s"] - t["batch_s"]))
            timed.append(t)
    finally:
        torch.set_num_threads(saved_threads)
    epoch_s = sum(t["epoch_s"] for t in timed) / len(timed)
    start_s = sum(t["start_s"] for t in timed) / len(timed)
    out = project(epochs["trial_epochs"], trials, epoch_s, start_s + TUNE_TRIAL_S,
                  ray_s + data_s + imports, concurrency, gpu, max_epochs)
    return {"wall_s": out["wall_s"], "trial_epochs": epochs["trial_epochs"],
            "gpu_hours": out["gpu_hours"], "fifo_trial_epochs": epochs["fifo"],
            "trials": trials, "max_epochs": max_epochs, "scheduler": sconf["scheduler"],
            "rungs": epochs["rungs"], "concurrency": concurrency, "device": device,
            "threads": threads, "gpus_per_trial": gpu, "epoch_s": epoch_s,
            "trial_start_s": start_s + TUNE_TRIAL_S, "trial_s": out["trial_s"],
            "ray_start_s": ray_s, "data_s": data_s, "worker_import_s": imports,
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
        sched = f"ASHA ({reach})"
    lines += [
        f"trial-epochs: {e['fifo_trial_epochs']:.0f} under FIFO ({e['trials']} trials x "
        f"{e['max_epochs']} epochs); expected {e['trial_epochs']:.1f} with {sched}",
        f"overheads: Ray start {e['ray_start_s']:.1f}s, data {e['data_s']:.1f}s, per trial "
        f"{e['trial_start_s']:.1f}s (worker imports {e['worker_import_s']:.1f}s)",
        f"projected wall time: {format_duration(e['wall_s'], 'short')} ({e['wall_s']:.0f}s) "
        f"at {e['concurrency']} trial(s) at a time on {e['device']}; trials "
        f"{e['trial_s'] / 3600:.2f} h in all",
        f"GPU hours: {e['gpu_hours']:.2f} ({e['gpus_per_trial']:g} GPU per trial"
        + (", timed on the CPU: a GPU is faster)" if e["device"] == "cpu" and
           e["gpus_per_trial"] > 0 else ")"),
    ]
    return lines
