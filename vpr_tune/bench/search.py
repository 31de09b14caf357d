"""Search benchmarks: ``asha`` (budget saved by early stopping) and ``search`` (core use).

Both run a search as ``vpr-tune run SPACE.yaml`` does (``vpr_tune.tune.run_experiment`` in
this process, its log sent where the benchmark's log goes), and read the documented outputs
``results/<name>/trials.csv`` (one row per trial: ``epochs``, ``time_s``, ``best_val/R@1``,
hyperparameters) and ``metrics.csv`` (one row per trial-epoch), so they measure exactly what
``run`` does.

- asha: the same space, random search with a fixed seed (so both runs sample the same
  configs and train the same curves; both checked), run once with ASHA (one trial at a
  time) and once with FIFO. Figure: trial-epochs used by ASHA / by FIFO, valid only when
  ASHA's best val R@1 is within 1 point of FIFO's. Also the Spearman correlation, over
  FIFO's trials, of val R@1 at the first rung (epoch ``grace_period``) with the final val
  R@1: how much the first rung can tell, and FIFO's curves (``fifo_curves``), on which any
  ASHA rule can be replayed offline.
- search: Σ trial busy time (``time_s``) / (wall of the whole ``run`` x cores) for a FIFO
  search with 2 concurrent 1-CPU trials on 2 cores.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from vpr_tune.bench.common import Bar, record
from vpr_tune.errors import UserError

ASHA_BAR = Bar(0.35, higher=False,
               figure="trial-epochs ASHA / FIFO (best val R@1 within 1 point)")
SEARCH_BAR = Bar(0.93, higher=True, figure="sum trial busy time / (wall x cores)")


# asha: 12 trials of up to 27 epochs of 15 batches; rungs at 3, 9 and 27 epochs, a ladder
# that ends at the budget (max_epochs = grace x factor^k). The first rung comes late because
# a random-init network on street-world ranks nothing in its first epochs: an earlier rung
# would promote by noise (docs/performance.md has the replays behind this choice).
ASHA = {"grace_period": 3, "reduction_factor": 3}
ASHA_SIZE = (12, 27, 15)  # trials, max epochs, batches per epoch
ASHA_QUICK = (3, 3, 1)


def _space(quick: bool, scheduler: str, samples: int, epochs: int, batches: int,
           synth_size: str = "demo") -> dict:
    """A small search space on street-world: the learning rate decides who learns."""
    return {
        "seed": 0,
        "data": {"synth_size": "tiny" if quick else synth_size,
                 "image_size": [32, 32] if quick else [48, 48]},
        "model": {"backbone": "resnet18", "pretrained": "none", "cut": "layer3",
                  "freeze_stages": 0, "aggregator": {"name": "gem"}},
        "loss": {"name": "multisimilarity"},
        "miner": {"name": "multisimilarity", "epsilon": 0.1},
        "optimizer": {"name": "adam", "lr": {"loguniform": [1.0e-5, 1.0e-2]},
                      "weight_decay": 0.0},
        "scheduler": {"name": "none"},
        "budget": {"max_epochs": epochs, "batches_per_epoch": batches,
                   "places_per_batch": 4 if quick else 16, "images_per_place": 4 if not quick
                   else 2, "eval_batch_size": 128},
        "search": {"algorithm": "random", "num_samples": samples, "seed": 0,
                   "max_concurrent": 2, "scheduler": scheduler, "metric": "val/R@1",
                   "mode": "max"},
        "asha": dict(ASHA),
        "resources": {"cpu": 1, "gpu": 0},
    }


def _run(space: dict, name: str, storage: Path, log: Any) -> tuple[float, Any, Any]:
    """``vpr-tune run`` through the library; returns (wall s, trials frame, metrics frame)."""
    import yaml

    from vpr_tune import tune
    from vpr_tune.tune.results import read_table

    path = storage / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    log(f"search benchmark: vpr-tune run {path.name} ({space['search']['scheduler']}) ...")
    # A private local Ray unless RAY_ADDRESS names one: never join a cluster that `ray start`
    # left running on this machine by accident.
    address = os.environ.get("RAY_ADDRESS") or "local"
    start = time.perf_counter()
    folder = tune.run_experiment(path, name=name, storage=str(storage), address=address,
                                 log=log)
    wall = time.perf_counter() - start
    if folder is None or not (folder / "trials.csv").is_file():
        raise UserError(f"the search {name!r} wrote no trials.csv in {storage / name}; "
                        "the search benchmarks read it")
    trials = read_table(folder / "trials.csv")
    metrics = read_table(folder / "metrics.csv") if (folder / "metrics.csv").is_file() \
        else None
    return wall, trials, metrics


def _configs(trials: Any) -> dict[str, tuple]:
    """The sampled hyperparameters of each trial, by trial id (ids differ between runs):
    numbers rounded, names as they are, a parameter that does not apply as None."""
    import pandas as pd

    cols = sorted(c for c in trials.columns if "." in c and not c.startswith(("best_", "last_")))

    def cell(v: Any) -> Any:
        if v is None or (isinstance(v, float) and pd.isna(v)):
            return None
        return round(float(v), 12) if isinstance(v, int | float) else str(v)

    return {str(t): tuple(cell(v) for v in row)
            for t, row in zip(trials["trial_id"], trials[cols].values, strict=True)}


def _params(trials: Any) -> list[tuple]:
    """The sampled hyperparameters of all trials, sorted (to compare two runs)."""
    return sorted(_configs(trials).values(), key=repr)


def _spearman_rung1(metrics: Any, rung: int = 1) -> float | None:
    """Spearman of val R@1 after epoch ``rung`` (ASHA's first rung) vs the last epoch, over
    trials (FIFO: all finished)."""
    from scipy.stats import spearmanr

    if metrics is None or metrics.empty:
        return None
    m = metrics[metrics["epoch"] >= 1].sort_values("epoch")
    first = m[m["epoch"] <= rung].groupby("trial_id")["val/R@1"].last()
    last = m.groupby("trial_id")["val/R@1"].last()
    if len(first) < 3 or first.nunique() < 2 or last.nunique() < 2:
        return None
    rho = float(spearmanr(first, last.loc[first.index]).statistic)
    return rho if math.isfinite(rho) else None


def _curves(metrics: Any) -> dict[str, list[float]]:
    """val R@1 per epoch of each trial (FIFO's: what any ASHA rule can be replayed on)."""
    if metrics is None or metrics.empty:
        return {}
    m = metrics[metrics["epoch"] >= 1].sort_values("epoch")
    return {str(t): [float(v) for v in g["val/R@1"]] for t, g in m.groupby("trial_id")}


def bench_asha(quick: bool = False, log: Any = print) -> dict[str, Any]:
    """Trial-epochs ASHA / FIFO on the same sampled configs and seeds."""
    samples, epochs, batches = ASHA_QUICK if quick else ASHA_SIZE
    # street-world `bench`: demo with 600 val queries, so close trials rank less noisily
    spaces = {sched: _space(quick, sched, samples, epochs, batches, "bench")
              for sched in ("asha", "fifo")}
    # ASHA's trials one at a time, as on the one GPU a course project has. Two at a time,
    # trials of equal cost reach each rung together, and which result Ray happens to process
    # first decides who is promoted, so the ratio would change between runs of the very same
    # curves (docs/performance.md). FIFO makes no decisions, so it keeps two at a time.
    spaces["asha"]["search"]["max_concurrent"] = 1
    with tempfile.TemporaryDirectory(prefix="vpr-bench-") as tmp:
        runs = {sched: _run(space, sched, Path(tmp), log) for sched, space in spaces.items()}
    (asha_wall, asha, asha_metrics), (fifo_wall, fifo, fifo_metrics) = runs["asha"], runs["fifo"]
    asha_epochs, fifo_epochs = int(asha["epochs"].sum()), int(fifo["epochs"].sum())
    best_asha = float(asha["best_val/R@1"].max())
    best_fifo = float(fifo["best_val/R@1"].max())
    ratio = asha_epochs / fifo_epochs if fifo_epochs else math.inf
    same_configs = _params(asha) == _params(fifo)
    # ... and trained the same curves (1 CPU thread per trial either way): each ASHA trial's
    # val R@1 per epoch is the start of its FIFO twin's.
    asha_config, fifo_config = _configs(asha), _configs(fifo)
    fifo_curves = _curves(fifo_metrics)
    fifo_curve = {fifo_config[t]: c for t, c in fifo_curves.items()}
    same_curves = all(fifo_curve.get(asha_config[t], [])[:len(c)] == c
                      for t, c in _curves(asha_metrics).items())
    within = abs(best_asha - best_fifo) <= 1.0
    result = record("asha", ratio, ASHA_BAR, quick, asha_trial_epochs=asha_epochs,
                    fifo_trial_epochs=fifo_epochs, trials=samples, max_epochs=epochs,
                    reduction_factor=ASHA["reduction_factor"],
                    grace_period=ASHA["grace_period"],
                    image_size=spaces["asha"]["data"]["image_size"][0],
                    batches_per_epoch=batches, best_val_r1_asha=best_asha,
                    best_val_r1_fifo=best_fifo, best_within_1_point=within,
                    same_configs=same_configs, same_curves=same_curves,
                    spearman_rung1_vs_final=_spearman_rung1(
                        fifo_metrics, ASHA["grace_period"]), asha_wall_s=round(asha_wall, 2),
                    fifo_wall_s=round(fifo_wall, 2),
                    asha_epochs_per_trial=[int(e) for e in asha["epochs"]],
                    fifo_curves=fifo_curves)
    # The budget saving only counts when ASHA found (nearly) what FIFO found.
    result["passed"] = bool(result["passed"] and within and same_configs and same_curves)
    return result


def bench_search(quick: bool = False, log: Any = print) -> dict[str, Any]:
    """Σ trial busy time / (wall x cores), 2 concurrent 1-CPU trials; also where the rest
    goes: start-up (data check + Ray start, until the experiment line), idle core-seconds
    while trials run (actor start-up, gaps, the tail), and the end (tables, Ray shutdown)."""
    # Three rounds of two trials: Ray's own fixed cost per search (start, first actors, stop;
    # docs/performance.md) weighs on a short search, and with two rounds it alone took the
    # bar's whole allowance.
    samples, epochs, batches = (2, 2, 1) if quick else (6, 5, 45)
    cores = 2  # the search runs 2 concurrent trials of 1 CPU each
    marks: dict[str, float] = {}  # seconds since `run` was called, as `wall` counts them
    origin = [time.perf_counter()]

    def watch(msg: str) -> None:
        text = str(msg)
        if text.startswith("search benchmark: "):  # _run logs it as it starts its clock
            origin[0] = time.perf_counter()
        for key, prefix in (("ready", "experiment "), ("finished", "best trial ")):
            if text.startswith(prefix):
                marks.setdefault(key, time.perf_counter() - origin[0])
        log(msg)

    with tempfile.TemporaryDirectory(prefix="vpr-bench-") as tmp:
        wall, trials, _ = _run(_space(quick, "fifo", samples, epochs, batches), "search",
                               Path(tmp), watch)
    busy = [float(t) for t in trials["time_s"]]
    ratio = sum(busy) / (wall * cores)
    ready, finished = marks.get("ready", 0.0), marks.get("finished", wall)
    return record("search", ratio, SEARCH_BAR, quick,
                  trial_busy_s=busy, wall_s=round(wall, 2), cores=cores,
                  machine_cores=os.cpu_count(), trials=samples, max_epochs=epochs,
                  trial_epochs=int(trials["epochs"].sum()), startup_s=round(ready, 2),
                  idle_core_s_while_running=round((finished - ready) * cores - sum(busy), 2),
                  end_s=round(wall - finished, 2))
