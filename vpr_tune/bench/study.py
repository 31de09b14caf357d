"""``study``: does the search beat the hand-run study (seed 002's spreadsheet)?

The manual procedure a student runs, one factor at a time, each run at the full budget:

1. every optimizer (SGD, Adam, AdamW, ASGD) at round learning rates 1e-4, 1e-3, 1e-2,
   no scheduler (a grid of 12 runs);
2. the best of those with each scheduler (cosine, plateau, multistep): 3 more runs.

Against ``vpr-tune run`` with TPE (Optuna) + ASHA on the same space: optimizer x
log-uniform lr in [1e-4, 1e-2] x scheduler (none, cosine, plateau, multistep). All runs go
through ``run_experiment`` on street-world ``bench`` (600 val queries) at 48 px, ResNet-18
(layer3) + GeM from random init, MultiSimilarity loss + miner, 2 trials at a time.

One maximum over many noisy runs says little (the winner of 15 runs is partly the luckiest
seed), so both winners, the study's and the search's, are trained again with
``RETRAIN_SEEDS`` (new seeds, FIFO, the full budget; one grid search over ``seed`` each)
and compared on those runs' best val R@1: each winner's mean with its 95 % t-interval, and
Welch's 95 % t-interval of the difference (search - study). Verdict: ``better`` / ``worse``
when the interval excludes 0, else ``no difference resolved`` with the interval's width
as the uncertainty. Figure: the search's trial-epochs / the study's (bar <= 0.5), passing
only when the search's winner is not worse (the interval's upper end >= 0).

Sizes: 8 epochs x 15 batches; the study is 15 runs = 120 trial-epochs; the search 10 trials
judged at epochs 2 and 8 (grace 2, factor 4). Asynchronous ASHA lets more than a quarter
through (the first arrivals at a rung go on): 12 trials spent 54 trial-epochs in one run
(5 to the end), 0.45 of the study, so a draw with 7 through would cross 0.5; 10 trials
spend ~44 (4 through) to 56 (6 through). The retraining is 2 x 4 seeds x 8 epochs = 64
trial-epochs (4 seeds cost what 3 do with two trials at a time: two rounds). ~8 min of the
45-minute ``bench all`` on 2 cores.
``plot`` draws both best-so-far curves and the retrained runs.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from vpr_tune.bench.common import Bar, record
from vpr_tune.bench.search import _run, _space

WITHIN = 0.5  # points of val R@1 (the informational "first came within" count)
CONFIDENCE = 0.95
STUDY_BAR = Bar(0.5, higher=False, figure=(
    "trial-epochs TPE+ASHA / the manual study's (its winner, retrained with new seeds, not "
    f"worse than the study's by Welch's {CONFIDENCE:.0%} interval)"))
OPTIMIZERS = ["sgd", "adam", "adamw", "asgd"]
LRS = [1.0e-4, 1.0e-3, 1.0e-2]
SCHEDULERS = ["cosine", "plateau", "multistep"]  # stage 2; "none" was stage 1
SIZE = {"epochs": 8, "batches": 15, "search_trials": 10, "seeds": [1, 2, 3, 4]}
# Judged at epochs 2 and 8 (a ladder ending at the 8-epoch budget).
STUDY_ASHA = {"grace_period": 2, "reduction_factor": 4}
QUICK = {"epochs": 2, "batches": 1, "search_trials": 3, "optimizers": ["sgd", "adam"],
         "lrs": [1.0e-3, 1.0e-2], "schedulers": ["cosine"], "seeds": [1, 2, 3]}
CONFIG_KEYS = ("optimizer.name", "optimizer.lr", "scheduler.name")


def _study_space(quick: bool) -> dict[str, Any]:
    size = QUICK if quick else SIZE
    space = _space(quick, "fifo", 1, size["epochs"], size["batches"], "bench")
    # Each optimizer and scheduler keeps its own defaults (multistep: epochs 6 and 8).
    space["optimizer"] = {"name": "adam", "lr": 1.0e-3}
    space["scheduler"] = {"name": "none"}
    space["search"].update(algorithm="grid", num_samples=1)
    space["asha"] = dict(STUDY_ASHA)
    return space


def _epoch_rows(folder: Path) -> list[tuple[float, float, str, int, float]]:
    """(timestamp, seconds into the trial, trial id, epoch, val R@1) of every reported epoch
    of an experiment, in the order they finished."""
    from vpr_tune.tune.results import read_result_rows

    rows = []
    for result in folder.glob("*/result.json"):
        for r in read_result_rows(result.parent):
            if "epoch" in r and r.get("val/R@1") is not None and not r.get("diverged"):
                rows.append((float(r.get("timestamp", 0)), float(r.get("time_total_s", 0)),
                             str(r.get("trial_id", result.parent.name)), int(r["epoch"]),
                             float(r["val/R@1"])))
    return sorted(rows)


def best_so_far(values: list[float]) -> list[float]:
    """Running maximum: the best val R@1 seen after each trial-epoch."""
    out: list[float] = []
    for v in values:
        out.append(max(v, out[-1]) if out else v)
    return out


def first_reaching(curve: list[float], target: float) -> int | None:
    """Trial-epochs (1-based) after which ``curve`` first reaches ``target``; None: never."""
    return next((i + 1 for i, v in enumerate(curve) if v >= target), None)


def _winner(*frames: Any) -> dict[str, Any]:
    """The best trial's optimizer, lr and scheduler over ``frames`` (finished trials)."""
    import pandas as pd

    frame = pd.concat(frames, ignore_index=True)
    frame = frame[frame["status"].isin(["TERMINATED", "STOPPED_EARLY"])
                  & frame["best_val/R@1"].notna()]
    row = frame.loc[frame["best_val/R@1"].idxmax()]
    return {"optimizer.name": str(row["optimizer.name"]),
            "optimizer.lr": float(row["optimizer.lr"]),
            "scheduler.name": str(row.get("scheduler.name", "none"))}


def _retrain(config: dict[str, Any], seeds: list[int], name: str, storage: Path, quick: bool,
             log: Any) -> tuple[list[float], float]:
    """``config`` trained again with each of ``seeds`` (FIFO, full budget): the runs' best
    val R@1 in seed order, and the wall seconds."""
    space = _study_space(quick)
    space["seed"] = {"grid": list(seeds)}
    space["optimizer"] = {"name": config["optimizer.name"], "lr": config["optimizer.lr"]}
    space["scheduler"]["name"] = config["scheduler.name"]
    wall, trials, _ = _run(space, name, storage, log)
    trials = trials.sort_values("seed") if "seed" in trials else trials
    return [float(v) for v in trials["best_val/R@1"]], wall


def mean_interval(values: list[float]) -> dict[str, Any]:
    """Mean, sample sd and the 95 % t-interval of the mean (scipy)."""
    import numpy as np
    from scipy import stats

    a = np.asarray(values, dtype=float)
    mean = float(a.mean())
    sd = float(a.std(ddof=1)) if len(a) > 1 else math.nan
    if len(a) < 2 or sd == 0:
        lo = hi = mean if len(a) > 1 else math.nan
    else:
        lo, hi = (float(x) for x in stats.t.interval(CONFIDENCE, len(a) - 1, loc=mean,
                                                     scale=sd / math.sqrt(len(a))))
    return {"runs": [round(float(v), 3) for v in a], "mean": round(mean, 3),
            "sd": round(sd, 3), "lo": round(lo, 3), "hi": round(hi, 3)}


def difference(search: list[float], manual: list[float]) -> dict[str, Any]:
    """Welch's 95 % t-interval of mean(search) - mean(manual) and the verdict it gives."""
    import warnings

    import numpy as np
    from scipy import stats

    a, b = np.asarray(search, dtype=float), np.asarray(manual, dtype=float)
    diff = float(a.mean() - b.mean())
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        lo = hi = diff
    else:
        with warnings.catch_warnings():  # one side without spread: scipy warns, CI is right
            warnings.simplefilter("ignore", RuntimeWarning)
            ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(CONFIDENCE)
        lo, hi = float(ci.low), float(ci.high)
    if lo > 0:
        verdict = "search's winner better"
    elif hi < 0:
        verdict = "search's winner worse"
    else:
        verdict = "no difference resolved"
    text = (f"{verdict}: search - study = {diff:+.2f} points of val R@1, {CONFIDENCE:.0%} "
            f"interval [{lo:+.2f}, {hi:+.2f}] (Welch, {len(a)} vs {len(b)} seeds)")
    return {"mean": round(diff, 3), "lo": round(lo, 3), "hi": round(hi, 3),
            "verdict": verdict, "not_worse": bool(hi >= 0), "text": text}


def bench_study(quick: bool = False, log: Any = print) -> dict[str, Any]:
    """Manual one-factor-at-a-time study vs TPE + ASHA: both winners retrained with new
    seeds, compared by interval; the search's cost / the study's."""
    size = QUICK if quick else SIZE
    optimizers, lrs = size.get("optimizers", OPTIMIZERS), size.get("lrs", LRS)
    schedulers = size.get("schedulers", SCHEDULERS)
    with tempfile.TemporaryDirectory(prefix="vpr-bench-") as tmp:
        storage = Path(tmp)
        grid = _study_space(quick)
        grid["optimizer"] = {"name": {"grid": optimizers}, "lr": {"grid": lrs}}
        wall1, stage1, _ = _run(grid, "manual-1", storage, log)
        ok = stage1[stage1["status"].isin(["TERMINATED", "STOPPED_EARLY"])]
        top = ok.loc[ok["best_val/R@1"].idxmax()]
        chosen = {"name": str(top["optimizer.name"]), "lr": float(top["optimizer.lr"])}
        log(f"study: manual stage 1 best {chosen} (val R@1 {top['best_val/R@1']:.2f})")
        second = _study_space(quick)
        second["optimizer"] = dict(chosen)
        second["scheduler"]["name"] = {"grid": schedulers}
        wall2, stage2, _ = _run(second, "manual-2", storage, log)

        search = _study_space(quick)
        search["optimizer"] = {"name": {"choice": optimizers},
                               "lr": {"loguniform": [min(lrs), max(lrs)]}}
        search["scheduler"]["name"] = {"choice": ["none", *schedulers]}
        search["search"].update(algorithm="optuna", scheduler="asha",
                                num_samples=size["search_trials"])
        wall3, found, _ = _run(search, "search", storage, log)
        manual_rows = _epoch_rows(storage / "manual-1") + _epoch_rows(storage / "manual-2")
        search_rows = _epoch_rows(storage / "search")

        # trials.csv has a column per searched value only: stage 1 ran no scheduler, stage 2
        # the chosen optimizer
        winners = {"manual": _winner(
            stage1.assign(**{"scheduler.name": "none"}),
            stage2.assign(**{"optimizer.name": chosen["name"], "optimizer.lr": chosen["lr"]})),
            "search": _winner(found)}
        same_config = winners["manual"] == winners["search"]
        retrained, wall4 = {}, 0.0
        for side in ("manual", "search"):
            if side == "search" and same_config:  # the same config and seeds: the same runs
                retrained[side] = retrained["manual"]
                continue
            log(f"study: retraining the {side} winner {winners[side]} with seeds "
                f"{size['seeds']}")
            retrained[side], wall = _retrain(winners[side], size["seeds"], f"retrain-{side}",
                                             storage, quick, log)
            wall4 += wall
    manual_curve = best_so_far([r[4] for r in manual_rows])
    search_curve = best_so_far([r[4] for r in search_rows])
    manual_best = manual_curve[-1] if manual_curve else math.nan
    search_best = search_curve[-1] if search_curve else math.nan
    manual_epochs, search_epochs = len(manual_rows), len(search_rows)
    needed = first_reaching(search_curve, manual_best - WITHIN)
    ratio = search_epochs / manual_epochs if manual_epochs else math.inf
    diff = difference(retrained["search"], retrained["manual"])
    log(f"study: {diff['text']}")
    result = record(
        "study", ratio, STUDY_BAR, quick, verdict=diff["verdict"], verdict_text=diff["text"],
        search_not_worse=diff["not_worse"], difference=diff,
        retrained={side: {**winners[side], **mean_interval(v)} for side, v in
                   retrained.items()}, retrain_seeds=list(size["seeds"]),
        same_winner_config=same_config, confidence=CONFIDENCE,
        manual_best_val_r1=round(manual_best, 3), search_best_val_r1=round(search_best, 3),
        manual_trial_epochs=manual_epochs, search_trial_epochs=search_epochs,
        search_epochs_to_manual_best=needed, manual_runs=int(len(stage1) + len(stage2)),
        search_trials=int(len(found)), manual_stage1_best=chosen,
        manual_best_run=_best_run(stage1, stage2), search_best_run=_best_run(found),
        manual_curve=[round(v, 3) for v in manual_curve],
        search_curve=[round(v, 3) for v in search_curve],
        manual_wall_s=round(wall1 + wall2, 1), search_wall_s=round(wall3, 1),
        retrain_wall_s=round(wall4, 1), max_epochs=size["epochs"],
        batches_per_epoch=size["batches"], image_size=search["data"]["image_size"][0],
        within_points=WITHIN, data=f"street-world {search['data']['synth_size']}")
    # Half the budget only counts when the winner it found holds up against the study's.
    result["passed"] = bool(result["passed"] and diff["not_worse"])
    return result


def _best_run(*frames: Any) -> dict[str, Any]:
    """The hyperparameters and best val R@1 of the best trial over ``frames``."""
    import pandas as pd

    frame = pd.concat(frames, ignore_index=True)
    frame = frame[frame["best_val/R@1"].notna()]
    if frame.empty:
        return {}
    row = frame.loc[frame["best_val/R@1"].idxmax()]
    out = {c: row[c] for c in frame.columns if "." in c and not c.startswith(("best_", "last_"))
           and pd.notna(row[c])}
    out = {k: (v.item() if hasattr(v, "item") else v) for k, v in out.items()}
    return {**out, "best_val/R@1": float(row["best_val/R@1"]), "epochs": int(row["epochs"])}


def plot(result: dict[str, Any], path: Path) -> Path:
    """Left: both best-so-far curves against trial-epochs, the search's whole spend marked.
    Right (when the record has them): each winner's retrained runs, mean and interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    manual, found = result["manual_curve"], result["search_curve"]
    retrained = result.get("retrained")
    fig, axes = plt.subplots(1, 2 if retrained else 1, figsize=(10 if retrained else 7, 4),
                             dpi=110, squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1.3]} if retrained else None)
    ax = axes[0][0]
    ax.step(range(1, len(manual) + 1), manual, where="post",
            label=f"manual study ({result['manual_runs']} runs x {result['max_epochs']} epochs)")
    ax.step(range(1, len(found) + 1), found, where="post",
            label=f"TPE + ASHA ({result['search_trials']} trials)")
    if found:
        ax.axvline(len(found), color="C1", lw=0.8, ls=":")
        ax.annotate(f"search: {len(found)} trial-epochs", (len(found), max(found + manual)),
                    xytext=(5, -12), textcoords="offset points", color="C1", fontsize=8)
    ax.set_xlabel("trial-epochs spent (in the order they finished)")
    ax.set_ylabel("best val R@1 so far (%)")
    ax.set_title(f"{result.get('data', 'street-world')}: hand-run study vs vpr-tune run "
                 "(synthetic)", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    if retrained:
        ax = axes[0][1]
        for i, side in enumerate(("manual", "search")):
            r = retrained[side]
            ax.scatter([i] * len(r["runs"]), r["runs"], color=f"C{i}", s=14, alpha=0.7)
            if math.isfinite(r["lo"]):
                ax.errorbar(i + 0.15, r["mean"], yerr=[[r["mean"] - r["lo"]],
                                                       [r["hi"] - r["mean"]]],
                            fmt="o", color=f"C{i}", capsize=4)
        ax.set_xticks([0, 1], ["study's\nwinner", "search's\nwinner"])
        ax.set_xlim(-0.5, 1.6)
        ax.set_ylabel("best val R@1, retrained (%)")
        ax.set_title(result.get("verdict", ""), fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
