"""The measurements of ``run --estimate``: what one trial's parts take on this machine.

Which configurations to time (:func:`extreme_config`: the space's smallest and largest
trial), then the real ``Trainer`` on them (:func:`time_config`: build, training batches,
one val pass, one checkpoint save and load), a local Ray start, and as many fresh trial
workers as run at once (:func:`concurrent_workers`: their imports, and how much slower they
compute together than one alone). :mod:`vpr_tune.tune.estimate` projects the search from
these with :mod:`vpr_tune.tune.estimate_model`.

Nothing is written under ``results/``: the timing trainer writes its checkpoint to a temp dir.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from vpr_tune.components import BACKBONES, CUTS
from vpr_tune.errors import UserError
from vpr_tune.leaf_values import CATEGORICAL

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
from vpr_tune.tune.estimate_timing import _bench_rate
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


def time_ray_start(address: str | None, log: Any) -> tuple[dict[str, float], float]:
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
