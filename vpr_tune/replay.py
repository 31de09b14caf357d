"""``vpr-tune replay``: an early-stopping scheduler's settings tried on a FIFO pilot's curves.

A pilot search whose trials all ran to the end (``search.scheduler: fifo``) recorded every
trial's curve. ASHA (or MO-ASHA) with a given grace period and reduction factor would have
stopped some of those trials; which ones depends on the order their results arrive. So
each setting is simulated over many random arrival orders, driving the *real* scheduler
objects (Ray's ``ASHAScheduler``, our ``MultiObjectiveASHA``) with the recorded results:

    >>> table = sweep(load_experiment("pilot"), grace_periods=[1, 2], reduction_factors=[3])
    >>> table[["grace_period", "ratio_median", "p_best_kept"]]       # doctest: +SKIP

- ``ratio``: trial-epochs the scheduler ran ÷ FIFO's (median, 10th and 90th percentile);
- ``p_best_kept``: the share of orders whose best (by ``search.metric``) stays within
  ``TOLERANCE`` points of FIFO's best;
- MO-ASHA: ``hypervolume`` of the kept front ÷ FIFO's, and the share of orders >= 0.98.

An order is simulated as ``concurrency`` workers taking trials in sampling order, each
epoch of a trial lasting a random time (log-normal around 1): what varies from run to run
on a real machine. :func:`replay_arrivals` instead feeds one recorded arrival order (a
real ASHA run's ``epochs.jsonl``) and returns the decisions, which must equal the run's.

:func:`rung_signals` measures how well each early signal (R@1, R@5, MRR, ...) at the first
rungs ranks the trials as their final best R@1 does (Spearman), the basis for choosing
``asha.metric``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vpr_tune import metrics
from vpr_tune.errors import UserError

TOLERANCE = 1.0  # points of R@1: "the best is kept"
HYPERVOLUME_OK = 0.98
EPOCH_JITTER = 0.3  # sigma of log epoch duration: how unevenly trials progress


@dataclass
class Pilot:
    """The recorded curves of a FIFO search, in sampling order."""

    trial_ids: list[str]
    curves: dict[str, pd.DataFrame]  # trial id -> one row per epoch (epoch 1..), reported columns
    max_epochs: int
    metric: str  # what the search ranks by (the winner)
    mode: str
    objectives: list[tuple[str, str]]  # several for a multi-objective search
    concurrency: int
    rung_metric: str | None = None  # the search's asha.metric (what its rungs judge on)

    def value(self, trial_id: str, column: str, epoch: int) -> float:
        return float(self.curves[trial_id][column].iloc[epoch - 1])


@dataclass
class _Trial:
    trial_id: str  # Ray's schedulers only read the id


def pilot_of(exp: Any, complete: bool = True) -> Pilot:
    """The :class:`Pilot` of a loaded experiment (``analysis.load_experiment``); refused,
    with one line, when its trials did not all run every epoch (unless not ``complete``:
    replaying a real ASHA run's own arrivals)."""
    search = exp.search or {}
    max_epochs = int(pd.to_numeric(exp.curves["epoch"]).max())
    frame = exp.curves
    if metrics.MEAN_RECALL not in frame and set(metrics.VAL_RECALLS) <= set(frame):
        # an experiment from before val/R@mean was reported: the same mean, from its recalls
        frame = frame.assign(**{metrics.MEAN_RECALL: frame[list(metrics.VAL_RECALLS)].mean(1)})
    curves = {tid: rows.sort_values("epoch").reset_index(drop=True)
              for tid, rows in frame.groupby("trial_id", sort=False)}
    order = [t for t in exp.trials["trial_id"] if t in curves]
    short = [t for t in order if len(curves[t]) < max_epochs]
    short += [t for t in exp.trials["trial_id"] if t not in curves]  # never reported
    if not order or (short and complete):
        raise UserError(f"{exp.path}: replay needs a pilot whose trials all ran {max_epochs} "
                        f"epochs (search.scheduler: fifo); {len(short)} of {len(order)} did not")
    metric, mode = metrics.ranking(search)
    from vpr_tune.config import DEFAULTS

    asha = exp.space.get("asha") if isinstance(exp.space, dict) else None
    rung_metric = (asha or {}).get("metric", DEFAULTS["asha"]["metric"])
    return Pilot(order, curves, max_epochs, metric, mode,
                 [tuple(o) for o in metrics.objectives_of(search)] if search.get("objectives")
                 else [], int(search.get("max_concurrent") or 1), rung_metric)


def make_scheduler(kind: str, pilot: Pilot, grace_period: int, reduction_factor: float,
                   metric: str | None = None) -> Any:
    """The scheduler a search with these settings uses (``searchers.rung_scheduler``);
    ``metric``: ``asha.metric``, what rungs are judged on (default: the pilot's)."""
    from vpr_tune.tune.searchers import rung_objectives, rung_scheduler

    if kind not in ("asha", "moasha"):
        raise UserError(f"--scheduler {kind}: allowed asha, moasha")
    if kind == "moasha" and not pilot.objectives:
        raise UserError("--scheduler moasha needs a multi-objective pilot (search.objectives)")
    search = ({"objectives": [{"metric": m, "mode": md} for m, md in pilot.objectives]}
              if kind == "moasha" else {"metric": pilot.metric, "mode": pilot.mode})
    return rung_scheduler(rung_objectives(search, metric or pilot.rung_metric),
                          pilot.max_epochs, grace_period,
                          reduction_factor)


def _result(pilot: Pilot, trial_id: str, epoch: int) -> dict[str, Any]:
    row = pilot.curves[trial_id].iloc[epoch - 1]
    return {**{k: v for k, v in row.items() if k != "trial_id"}, "epoch": epoch,
            "training_iteration": epoch}


def simulate(pilot: Pilot, scheduler: Any, rng: np.random.Generator,
             concurrency: int | None = None) -> dict[str, int]:
    """Epochs each trial runs under ``scheduler`` for one random arrival order."""
    from ray.tune.schedulers import TrialScheduler

    workers = concurrency or pilot.concurrency
    waiting = list(pilot.trial_ids)
    reached: dict[str, int] = {}
    events: list[tuple[float, int, str, int]] = []  # (time, tie-break, trial, epoch)
    counter = 0

    def start(now: float) -> None:
        nonlocal counter
        trial_id = waiting.pop(0)
        scheduler.on_trial_add(None, _Trial(trial_id))
        counter += 1
        heapq.heappush(events, (now + rng.lognormal(0, EPOCH_JITTER), counter, trial_id, 1))

    for _ in range(min(workers, len(waiting))):
        start(0.0)
    trials = {t: _Trial(t) for t in pilot.trial_ids}
    while events:
        now, _, trial_id, epoch = heapq.heappop(events)
        reached[trial_id] = epoch
        result = _result(pilot, trial_id, epoch)
        decision = scheduler.on_trial_result(None, trials[trial_id], result)
        if decision == TrialScheduler.STOP or epoch >= pilot.max_epochs:
            scheduler.on_trial_complete(None, trials[trial_id], result)
            if waiting:
                start(now)
        else:
            counter += 1
            heapq.heappush(events, (now + rng.lognormal(0, EPOCH_JITTER), counter, trial_id,
                                    epoch + 1))
    return reached


def arrivals_of(exp_dir: Path) -> list[tuple[str, int]]:
    """``(trial_id, epoch)`` of every result in the order the driver received it (the
    experiment's ``epochs.jsonl``)."""
    from vpr_tune.tune.results import EPOCH_LOG, read_result_rows

    return [(str(r["trial_id"]), int(r["epoch"]))
            for r in read_result_rows(Path(exp_dir), EPOCH_LOG) if "epoch" in r]


def replay_arrivals(pilot: Pilot, scheduler: Any, arrivals: Sequence[tuple[str, int]]
                    ) -> dict[str, int | None]:
    """Feed recorded ``(trial_id, epoch)`` results in their recorded order; returns, per
    trial, the epoch at which the scheduler said STOP (None: it never did)."""
    from ray.tune.schedulers import TrialScheduler

    trials: dict[str, _Trial] = {}
    stopped: dict[str, int | None] = {}
    for trial_id, epoch in arrivals:
        if trial_id not in trials:
            trials[trial_id] = _Trial(trial_id)
            scheduler.on_trial_add(None, trials[trial_id])
            stopped[trial_id] = None
        result = _result(pilot, trial_id, epoch)
        if scheduler.on_trial_result(None, trials[trial_id], result) == TrialScheduler.STOP:
            stopped[trial_id] = stopped[trial_id] or epoch
            scheduler.on_trial_complete(None, trials[trial_id], result)
    return stopped


def _best(pilot: Pilot, reached: dict[str, int]) -> float:
    values = [pilot.curves[t][pilot.metric].iloc[:e] for t, e in reached.items()]
    best = [metrics.best_value(v, pilot.mode) for v in values]
    return float(metrics.best_value(best, pilot.mode))


def _front_frame(pilot: Pilot, reached: dict[str, int]) -> pd.DataFrame:
    rows = []
    for t, e in reached.items():
        curve = pilot.curves[t].iloc[:e]
        rows.append({m: metrics.best_value(curve[m], mode) for m, mode in pilot.objectives})
    return pd.DataFrame(rows).assign(status="TERMINATED")


def outcomes(pilot: Pilot, make: Callable[[], Any], orders: int, seed: int = 0
             ) -> pd.DataFrame:
    """One row per simulated arrival order: ``ratio``, ``best``, ``best_kept`` and, for a
    multi-objective pilot, ``hypervolume`` (÷ FIFO's)."""
    full = {t: pilot.max_epochs for t in pilot.trial_ids}
    fifo_best = _best(pilot, full)
    hv = None
    if pilot.objectives:
        from vpr_tune.tune.pareto import front_hypervolume, reference_point

        fifo_front = _front_frame(pilot, full)
        reference = reference_point([fifo_front], pilot.objectives)
        hv = (front_hypervolume, reference, front_hypervolume(fifo_front, pilot.objectives,
                                                              reference))
    rows = []
    for i in range(orders):
        reached = simulate(pilot, make(), np.random.default_rng([seed, i]))
        best = _best(pilot, reached)
        row = {"ratio": sum(reached.values()) / sum(full.values()), "best": best,
               "best_kept": abs(best - fifo_best) <= TOLERANCE
               or metrics.is_better(best, fifo_best, pilot.mode)}
        if hv is not None:
            fn, reference, fifo_hv = hv
            row["hypervolume"] = fn(_front_frame(pilot, reached), pilot.objectives,
                                    reference) / fifo_hv if fifo_hv else 1.0
        rows.append(row)
    return pd.DataFrame(rows)


def sweep(exp: Any, scheduler: str = "asha", grace_periods: Sequence[int] = (1, 2, 3),
          reduction_factors: Sequence[float] = (2, 3, 4), metric: str | None = None,
          orders: int = 200, seed: int = 0) -> pd.DataFrame:
    """One row per (grace period, reduction factor): the cost and the chance of keeping
    the best over ``orders`` simulated arrival orders."""
    pilot = pilot_of(exp)
    if metric is not None and metric not in pilot.curves[pilot.trial_ids[0]]:
        raise UserError(f"--metric {metric}: not a column of {exp.path}/metrics.csv")
    rows = []
    for grace in grace_periods:
        if not 0 < int(grace) <= pilot.max_epochs:
            raise UserError(f"--grace-period {grace}: allowed 1..{pilot.max_epochs}")
        for factor in reduction_factors:
            if float(factor) <= 1:
                raise UserError(f"--reduction-factor {factor}: must be > 1")
            runs = outcomes(pilot, lambda g=int(grace), f=float(factor): make_scheduler(
                scheduler, pilot, g, f, metric), orders, seed)
            row = {"scheduler": scheduler,
                   "metric": metric or pilot.rung_metric or pilot.metric,
                   "grace_period": int(grace), "reduction_factor": float(factor),
                   "ratio_median": runs["ratio"].median(),
                   "ratio_p10": runs["ratio"].quantile(0.1),
                   "ratio_p90": runs["ratio"].quantile(0.9),
                   "p_best_kept": runs["best_kept"].mean(), "orders": orders}
            if "hypervolume" in runs:
                row["hypervolume_median"] = runs["hypervolume"].median()
                row["p_hypervolume_ok"] = (runs["hypervolume"] >= HYPERVOLUME_OK).mean()
            rows.append(row)
    return pd.DataFrame(rows).round(4)


# ------------------------------------------------------------------ early signals
SIGNALS: dict[str, Callable[[pd.DataFrame], pd.Series]] = {
    "val/R@1": lambda c: c["val/R@1"],
    "val/R@5": lambda c: c["val/R@5"],
    "val/MRR": lambda c: c[metrics.MRR],
    metrics.MEAN_RECALL: lambda c: c[list(metrics.VAL_RECALLS)].mean(axis=1),
    "val/R@1 best so far": lambda c: c["val/R@1"].cummax(),
    "-train/loss": lambda c: -c[metrics.LOSS],
}


def rung_signals(exp: Any, rungs: Sequence[int] = (1, 2)) -> pd.DataFrame:
    """Spearman correlation, over a pilot's trials, between each early signal at each rung
    epoch and the trial's final best val R@1 (one row per signal)."""
    from scipy.stats import spearmanr

    pilot = pilot_of(exp)
    final = pd.Series({t: pilot.curves[t]["val/R@1"].max() for t in pilot.trial_ids})
    rows = []
    for name, signal in SIGNALS.items():
        row: dict[str, Any] = {"signal": name}
        for rung in rungs:
            try:
                at = pd.Series({t: signal(pilot.curves[t]).iloc[rung - 1]
                                for t in pilot.trial_ids})
            except KeyError:
                break  # a pilot recorded before the column existed
            constant = at.nunique() < 2 or final.nunique() < 2  # no ranking to compare
            row[f"spearman_epoch_{rung}"] = (None if constant
                                             else float(spearmanr(at, final).statistic))
        rows.append(row)
    return pd.DataFrame(rows).round(3)


def plot_sweep(table: pd.DataFrame, path: Path) -> Path:
    """Cost against the chance of keeping the best, one point per setting (a PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vpr_tune.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(6, 4))
    for row in table.itertuples(index=False):
        ax.errorbar(row.ratio_median, row.p_best_kept,
                    xerr=[[row.ratio_median - row.ratio_p10], [row.ratio_p90 - row.ratio_median]],
                    fmt="o", capsize=3)
        ax.annotate(f"grace {row.grace_period}, factor {row.reduction_factor:g}",
                    (row.ratio_median, row.p_best_kept), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    ax.set_xlabel("trial-epochs / FIFO's (median, 10th-90th percentile)")
    ax.set_ylabel(f"P(best within {TOLERANCE:g} point of FIFO's)")
    ax.set_title(f"replay: {table['scheduler'].iloc[0]} judging on {table['metric'].iloc[0]}")
    ax.set_ylim(-0.05, 1.05)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path
