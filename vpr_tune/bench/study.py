"""``study``: does the search beat the hand-run study (seed 002's spreadsheet)?

The manual procedure a student runs, one factor at a time, each run at the full budget:

1. every optimizer (SGD, Adam, AdamW, ASGD) at round learning rates 1e-4, 1e-3, 1e-2,
   no scheduler (a grid of 12 runs);
2. the best of those with each scheduler (cosine, plateau, multistep): 3 more runs.

Against ``vpr-tune run`` with TPE (Optuna) + ASHA on the same space: optimizer x
log-uniform lr in [1e-4, 1e-2] x scheduler (none, cosine, plateau, multistep). All three
runs go through ``run_experiment`` on street-world ``bench`` (600 val queries) at 48 px,
ResNet-18 (layer3) + GeM from random init, MultiSimilarity loss + miner, 2 trials at a time.

Figures: the best val R@1 each reaches, the trial-epochs each spends, and the trial-epochs
the search needed to first come within 0.5 point of the manual study's best, counted in the
order epochs finished (Ray's ``timestamp`` of each report). Ratio = that / the manual
study's trial-epochs; bar <= 0.5. ``plot`` draws both best-so-far curves.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from vpr_tune.bench.common import Bar, record
from vpr_tune.bench.search import _run, _space

WITHIN = 0.5  # points of val R@1
STUDY_BAR = Bar(0.5, higher=False, figure=(
    f"trial-epochs TPE+ASHA needs to come within {WITHIN:g} point of the manual study's "
    "best val R@1 / the manual study's trial-epochs"))
OPTIMIZERS = ["sgd", "adam", "adamw", "asgd"]
LRS = [1.0e-4, 1.0e-3, 1.0e-2]
SCHEDULERS = ["cosine", "plateau", "multistep"]  # stage 2; "none" was stage 1
SIZE = {"epochs": 8, "batches": 15, "search_trials": 20}
# Judged at epochs 2 and 8 (a ladder ending at the 8-epoch budget).
STUDY_ASHA = {"grace_period": 2, "reduction_factor": 4}
QUICK = {"epochs": 2, "batches": 1, "search_trials": 3, "optimizers": ["sgd", "adam"],
         "lrs": [1.0e-3, 1.0e-2], "schedulers": ["cosine"]}


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


def bench_study(quick: bool = False, log: Any = print) -> dict[str, Any]:
    """Manual one-factor-at-a-time study vs TPE + ASHA: trial-epochs to the manual best."""
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
    manual_curve = best_so_far([r[4] for r in manual_rows])
    search_curve = best_so_far([r[4] for r in search_rows])
    manual_best = manual_curve[-1] if manual_curve else math.nan
    search_best = search_curve[-1] if search_curve else math.nan
    manual_epochs, search_epochs = len(manual_rows), len(search_rows)
    needed = first_reaching(search_curve, manual_best - WITHIN)
    ratio = needed / manual_epochs if needed and manual_epochs else math.inf
    return record("study", ratio, STUDY_BAR, quick, manual_best_val_r1=round(manual_best, 3),
                  search_best_val_r1=round(search_best, 3), manual_trial_epochs=manual_epochs,
                  search_trial_epochs=search_epochs, search_epochs_to_manual_best=needed,
                  manual_runs=int(len(stage1) + len(stage2)), search_trials=int(len(found)),
                  manual_stage1_best=chosen,
                  manual_best_run=_best_run(stage1, stage2),
                  search_best_run=_best_run(found),
                  manual_curve=[round(v, 3) for v in manual_curve],
                  search_curve=[round(v, 3) for v in search_curve],
                  manual_wall_s=round(wall1 + wall2, 1), search_wall_s=round(wall3, 1),
                  max_epochs=size["epochs"], batches_per_epoch=size["batches"],
                  image_size=search["data"]["image_size"][0], within_points=WITHIN,
                  data=f"street-world {search['data']['synth_size']}")


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
    """Both best-so-far curves against trial-epochs, the manual best and the search's first
    arrival marked; PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    manual, found = result["manual_curve"], result["search_curve"]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.step(range(1, len(manual) + 1), manual, where="post",
            label=f"manual study ({result['manual_runs']} runs x {result['max_epochs']} epochs)")
    ax.step(range(1, len(found) + 1), found, where="post",
            label=f"TPE + ASHA ({result['search_trials']} trials)")
    best = result["manual_best_val_r1"]
    ax.axhline(best - result["within_points"], color="grey", lw=0.8, ls="--",
               label=f"manual best - {result['within_points']:g} point")
    needed = result["search_epochs_to_manual_best"]
    if needed:
        ax.axvline(needed, color="C1", lw=0.8, ls=":")
        ax.annotate(f"{needed} trial-epochs", (needed, best - result["within_points"]),
                    xytext=(5, -15), textcoords="offset points", color="C1")
    ax.set_xlabel("trial-epochs spent (in the order they finished)")
    ax.set_ylabel("best val R@1 so far (%)")
    ax.set_title(f"{result.get('data', 'street-world')}: hand-run study vs vpr-tune run "
                 "(synthetic data)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
