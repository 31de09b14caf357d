"""Search benchmarks: ``asha`` (budget saved by early stopping) and ``search`` (core use).

Both run searches as ``vpr-tune run SPACE.yaml`` does (``vpr_tune.tune.run_experiment`` in
this process, its log sent where the benchmark's log goes), and read the documented outputs
``results/<name>/trials.csv`` (one row per trial: ``epochs``, ``time_s``, ``best_val/R@1``,
hyperparameters), ``metrics.csv`` (one row per trial-epoch) and ``epochs.jsonl`` (every
result in the order the driver received it), so they measure exactly what ``run`` does.

- asha: measures the method, not one draw. Which trials ASHA keeps depends on the order
  results arrive, so one ASHA run is one draw. Instead: FIFO searches of the same space
  with ``ASHA_SEEDS`` (``seed`` and ``search.seed`` both: other configs, other inits) record
  every trial's full curve, and ASHA (grace 3, factor 3, as a search builds it:
  ``replay.make_scheduler``) is replayed on each over ``ASHA_ORDERS`` random arrival
  orders (``replay.outcomes``: two workers, uneven epoch times). Figure: the median over
  all orders of trial-epochs ASHA / FIFO; the record keeps ``ratio_p10``/``ratio_p90`` and
  ``p_best_kept``, the share of orders whose best val R@1 is within 1 point of FIFO's.
  Passes at median <= 0.35 with ``p_best_kept`` >= 0.9. One real ASHA run (seed 0, two
  trials at a time) proves the replay: its own arrivals fed to ``replay_arrivals`` must
  stop every trial where the run stopped it (``replay_matches_real``), it must sample the
  configs of the FIFO run of its seed and train the start of the same curves. The record
  also keeps ``vpr-tune replay``'s sweep of other ladders on the same pilots
  (``settings_sweep``: grace 1/2/3/6 x factor 2/3/4), the data for choosing ``ASHA``.
  Sizes: 10 trials x 27 epochs x 15 batches per seed (rungs 3, 9, 27; the first after 45
  batches, where a random-init network on street-world has begun to separate). Two seeds
  at that size cost ~15 min of the 45-minute ``bench all`` on 2 cores (the FIFO arms
  ~3 s per trial-epoch per core, two at a time), the real ASHA run ~2.5 min; 10 trials per
  seed rather than 12 keep that inside the bar next to ``pareto`` and ``study``. The
  replays themselves take seconds.
- search: sum trial busy time (``time_s``) / (wall of the whole ``run`` x cores) for a FIFO
  search with 2 concurrent 1-CPU trials on 2 cores, its data and image caches prepared
  before the clock starts (as a second search finds them); the same search is run again with
  ``search.reproducible`` and its ratio recorded (``reproducible_ratio``), not barred.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from vpr_tune.bench.common import Bar, precision, record
from vpr_tune.config import DEFAULTS
from vpr_tune.errors import UserError
from vpr_tune.replay import TOLERANCE

P_KEPT = 0.9  # share of arrival orders that must keep the best (asha) / the front (pareto)
ASHA_BAR = Bar(0.35, higher=False, figure=(
    "median over replayed arrival orders of trial-epochs ASHA / FIFO (best val R@1 within "
    f"{TOLERANCE:g} point of FIFO's in >= {P_KEPT:.0%} of orders)"))
SEARCH_BAR = Bar(0.93, higher=True, figure="sum trial busy time / (wall x cores)")


# asha: 10 trials per seed of up to 27 epochs of 15 batches; rungs at 3, 9 and 27 epochs, a
# ladder that ends at the budget (max_epochs = grace x factor^k). The first rung comes late
# because a random-init network on street-world ranks nothing in its first epochs: an
# earlier rung would promote by noise (docs/performance.md has the replays behind this).
ASHA = {"grace_period": 3, "reduction_factor": 3}
ASHA_SIZE = (10, 27, 15)  # trials, max epochs, batches per epoch
ASHA_QUICK = (3, 3, 1)
# other ladders replayed on the same pilots (the record's settings_sweep)
SWEEP_GRACE_PERIODS = (1, 2, 3, 6)
SWEEP_REDUCTION_FACTORS = (2, 3, 4)
ASHA_SEEDS = (0, 1)  # FIFO pilots: seed and search.seed
ASHA_ORDERS = 200  # replayed arrival orders per seed
ASHA_ORDERS_QUICK = 5


def _space(quick: bool, scheduler: str, samples: int, epochs: int, batches: int,
           synth_size: str = "demo", seed: int = 0) -> dict:
    """A small search space on street-world: the learning rate decides who learns. ``seed``
    is both ``seed`` (inits, batches) and ``search.seed`` (the sampled configs)."""
    return {
        "seed": seed,
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
        "search": {"algorithm": "random", "num_samples": samples, "seed": seed,
                   "max_concurrent": 2, "scheduler": scheduler, "metric": "val/R@1",
                   "mode": "max"},
        # the product's rung metric, written out: the replays read it from this dict
        "asha": {**ASHA, "metric": DEFAULTS["asha"]["metric"]},
        "resources": {"cpu": 1, "gpu": 0, "precision": precision()},
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


def _prepare(space: dict, log: Any) -> None:
    """Generate the space's street-world data and build its image caches, as ``run`` does
    first: timed searches compared with each other then all start with them on disk."""
    from vpr_tune.config import space_from_dict
    from vpr_tune.data.splits import resolve_data_root
    from vpr_tune.tune.prepare import prepare_data

    parsed = space_from_dict(space, "bench")
    data = parsed.base["data"]
    root = resolve_data_root(data["root"], size=data["synth_size"], log=log)
    prepare_data(parsed, root, build_cache=True, log=log)


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


def replayed(folders: dict[int, Path], kind: str, asha: dict[str, Any], orders: int
             ) -> tuple[Any, dict[str, Any]]:
    """``replay.outcomes`` of ``kind`` (asha, moasha) with ``asha``'s settings on each FIFO
    pilot (seed -> experiment folder), ``orders`` arrival orders each: all rows (a ``seed``
    column added) and the summary (median, 10th / 90th percentile of the ratio, share of
    orders keeping the best; per seed too)."""
    import pandas as pd

    from vpr_tune.analysis import load_experiment
    from vpr_tune.replay import HYPERVOLUME_OK, make_scheduler, outcomes, pilot_of

    frames = []
    for seed, folder in folders.items():
        pilot = pilot_of(load_experiment(folder))
        frames.append(outcomes(pilot, lambda p=pilot: make_scheduler(
            kind, p, int(asha["grace_period"]), float(asha["reduction_factor"]),
            asha.get("metric")), orders, seed=seed).assign(seed=seed))
    runs = pd.concat(frames, ignore_index=True)

    def summary(frame: Any) -> dict[str, Any]:
        out = {"ratio_median": round(float(frame["ratio"].median()), 4),
               "ratio_p10": round(float(frame["ratio"].quantile(0.1)), 4),
               "ratio_p90": round(float(frame["ratio"].quantile(0.9)), 4),
               "p_best_kept": round(float(frame["best_kept"].mean()), 4),
               "orders": int(len(frame))}
        if "hypervolume" in frame:
            out["hypervolume_median"] = round(float(frame["hypervolume"].median()), 4)
            out["hypervolume_p10"] = round(float(frame["hypervolume"].quantile(0.1)), 4)
            out["p_hypervolume_ok"] = round(float((frame["hypervolume"] >= HYPERVOLUME_OK)
                                                  .mean()), 4)
        return out

    return runs, {**summary(runs), "per_seed": {str(s): summary(g)
                                                for s, g in runs.groupby("seed")}}


def settings_sweep(folders: dict[int, Path], metric: str | None, orders: int, quick: bool
                   ) -> list[dict[str, Any]]:
    """``vpr-tune replay``'s sweep of other grace periods and reduction factors on each FIFO
    pilot (seed -> folder): what a cheaper ladder would cost and keep, the data for
    choosing the benchmark's settings (``ASHA``), rather than one setting's verdict.
    Settings chosen on these pilots want confirming on new seeds."""
    from vpr_tune.analysis import load_experiment
    from vpr_tune.replay import sweep

    graces = (1,) if quick else SWEEP_GRACE_PERIODS
    rows = []
    for seed, folder in folders.items():
        table = sweep(load_experiment(folder), "asha", graces, SWEEP_REDUCTION_FACTORS,
                      metric, orders, seed)
        rows += [{"seed": seed, **row} for row in table.to_dict("records")]
    return rows


def replay_check(folder: Path, kind: str, asha: dict[str, Any]) -> dict[str, Any]:
    """Replay a real ASHA / MO-ASHA run's own arrival order (``epochs.jsonl``) through the
    scheduler a search builds: ``matches`` when it stops every trial at the epoch the run
    did (a trial it never stops runs to the budget)."""
    from vpr_tune.analysis import load_experiment
    from vpr_tune.replay import arrivals_of, make_scheduler, pilot_of, replay_arrivals

    exp = load_experiment(folder)
    pilot = pilot_of(exp, complete=False)
    arrivals = arrivals_of(folder)
    stopped = replay_arrivals(pilot, make_scheduler(
        kind, pilot, int(asha["grace_period"]), float(asha["reduction_factor"]),
        asha.get("metric")), arrivals)
    replay = {t: int(e) if e is not None else pilot.max_epochs for t, e in stopped.items()}
    real = {str(t): int(e) for t, e in zip(exp.trials["trial_id"], exp.trials["epochs"],
                                           strict=True)}
    return {"matches": bool(arrivals) and replay == real, "arrivals": len(arrivals),
            "epochs_real": [real[t] for t in sorted(real)],
            "epochs_replayed": [replay.get(t) for t in sorted(real)]}


def bench_asha(quick: bool = False, log: Any = print) -> dict[str, Any]:
    """ASHA's trial-epochs / FIFO's and its chance of keeping the best, replayed over many
    arrival orders on FIFO curves of several seeds; one real ASHA run checks the replay."""
    samples, epochs, batches = ASHA_QUICK if quick else ASHA_SIZE
    orders = ASHA_ORDERS_QUICK if quick else ASHA_ORDERS
    # street-world `bench`: demo with 600 val queries, so close trials rank less noisily
    fifo_spaces = {seed: _space(quick, "fifo", samples, epochs, batches, "bench", seed)
                   for seed in ASHA_SEEDS}
    real_space = _space(quick, "asha", samples, epochs, batches, "bench", ASHA_SEEDS[0])
    asha = dict(real_space["asha"])
    with tempfile.TemporaryDirectory(prefix="vpr-bench-") as tmp:
        fifo = {seed: _run(space, f"fifo-seed{seed}", Path(tmp), log)
                for seed, space in fifo_spaces.items()}
        real = _run(real_space, "asha", Path(tmp), log)
        runs, summary = replayed({seed: Path(tmp) / f"fifo-seed{seed}" for seed in fifo},
                                 "asha", asha, orders)
        check = replay_check(Path(tmp) / "asha", "asha", asha)
        alternatives = settings_sweep({seed: Path(tmp) / f"fifo-seed{seed}" for seed in fifo},
                                      asha.get("metric"), orders, quick)
    real_wall, real_trials, real_metrics = real
    _, fifo0, fifo0_metrics = fifo[ASHA_SEEDS[0]]
    # The real run sampled the configs of its seed's FIFO pilot and trained the start of
    # the same curves (1 CPU thread per trial in both): what the replay assumes.
    asha_config, fifo_config = _configs(real_trials), _configs(fifo0)
    fifo_curve = {fifo_config[t]: c for t, c in _curves(fifo0_metrics).items()}
    same_configs = _params(real_trials) == _params(fifo0)
    same_curves = all(fifo_curve.get(asha_config[t], [])[:len(c)] == c
                      for t, c in _curves(real_metrics).items())
    real_epochs, fifo0_epochs = int(real_trials["epochs"].sum()), int(fifo0["epochs"].sum())
    kept = summary["p_best_kept"] >= P_KEPT
    result = record(
        "asha", summary["ratio_median"], ASHA_BAR, quick,
        ratio_p10=summary["ratio_p10"], ratio_p90=summary["ratio_p90"],
        p_best_kept=summary["p_best_kept"], p_best_kept_bar=P_KEPT,
        best_kept_within_points=TOLERANCE, orders=summary["orders"],
        orders_per_seed=orders, seeds=list(ASHA_SEEDS), per_seed=summary["per_seed"],
        trials=samples, max_epochs=epochs, batches_per_epoch=batches,
        reduction_factor=ASHA["reduction_factor"], grace_period=ASHA["grace_period"],
        asha_metric=asha.get("metric") or real_space["search"]["metric"],
        image_size=real_space["data"]["image_size"][0],
        fifo_trial_epochs={str(s): int(f[1]["epochs"].sum()) for s, f in fifo.items()},
        best_val_r1_fifo={str(s): float(f[1]["best_val/R@1"].max()) for s, f in fifo.items()},
        spearman_rung1_vs_final={str(s): _spearman_rung1(f[2], ASHA["grace_period"])
                                 for s, f in fifo.items()},
        replay_matches_real=check["matches"], real_asha={
            "seed": ASHA_SEEDS[0], "max_concurrent": real_space["search"]["max_concurrent"],
            "trial_epochs": real_epochs,
            "ratio": round(real_epochs / fifo0_epochs, 4) if fifo0_epochs else None,
            "best_val_r1": float(real_trials["best_val/R@1"].max()),
            "wall_s": round(real_wall, 2), **check},
        same_configs=same_configs, same_curves=same_curves,
        fifo_wall_s={str(s): round(f[0], 2) for s, f in fifo.items()},
        replay_ratios=[round(float(r), 4) for r in runs["ratio"]],
        settings_sweep=alternatives,
        fifo_curves={str(s): _curves(f[2]) for s, f in fifo.items()})
    # The saving only counts when the best is (nearly) always kept and the replay is the
    # scheduler a real run uses on the curves it trains.
    result["passed"] = bool(result["passed"] and kept and check["matches"] and same_configs
                            and same_curves)
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

    space = _space(quick, "fifo", samples, epochs, batches)
    _prepare(space, log)  # off the clock, or the first search pays the cache build alone
    with tempfile.TemporaryDirectory(prefix="vpr-bench-") as tmp:
        wall, trials, _ = _run(space, "search", Path(tmp), watch)
        # the same search with search.reproducible (issue 33: what the mode costs); FIFO
        # makes no rung decisions, so what it can cost here is the sampler's ordering
        space["search"]["reproducible"] = True
        wall_r, trials_r, _ = _run(space, "search-reproducible", Path(tmp), log)
    busy = [float(t) for t in trials["time_s"]]
    ratio = sum(busy) / (wall * cores)
    ready, finished = marks.get("ready", 0.0), marks.get("finished", wall)
    return record("search", ratio, SEARCH_BAR, quick,
                  trial_busy_s=busy, wall_s=round(wall, 2), cores=cores,
                  machine_cores=os.cpu_count(), trials=samples, max_epochs=epochs,
                  trial_epochs=int(trials["epochs"].sum()), startup_s=round(ready, 2),
                  idle_core_s_while_running=round((finished - ready) * cores - sum(busy), 2),
                  end_s=round(wall - finished, 2),
                  reproducible_ratio=round(sum(map(float, trials_r["time_s"]))
                                           / (wall_r * cores), 4),
                  reproducible_wall_s=round(wall_r, 2))
