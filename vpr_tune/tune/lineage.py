"""What a PBT/PB2 trial really trained with: its lineage through ``perturbations.csv``.

After an exploit at epoch ``p`` a trial continues from another trial's weights, so its
epochs up to ``p`` are that trial's (recursively). ``lineage`` follows those links back and
returns one row per epoch: which trial ran it, the metrics it reported, and the mutated
hyperparameters it trained with -- the schedule PBT found.

>>> exp = load_experiment("pbt-demo")
>>> lineage(exp.path, "9aa1f_00001")  # epoch, ran_in, trained_lr, val/R@1, optimizer.lr
>>> fig = plot_lr_schedules(exp.path)      # lr per epoch, exploits marked
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from vpr_tune.tune.results import read_table

FILE = "perturbations.csv"


def read_perturbations(exp_dir: Path | str) -> pd.DataFrame | None:
    """``perturbations.csv`` of a PBT/PB2 experiment, or None for other searches."""
    path = Path(exp_dir) / FILE
    return read_table(path) if path.exists() else None


def exploits(moves: pd.DataFrame) -> pd.DataFrame:
    """One row per exploit (``perturbations.csv`` has one per mutated key): ``trial_id``,
    ``epoch``, ``source_trial_id`` and ``params``, the keys it changed (``a, b``)."""
    if moves.empty:
        return pd.DataFrame(columns=["trial_id", "epoch", "source_trial_id", "params"])
    keys = ["trial_id", "epoch", "source_trial_id"]
    # two exploits of one trial at one epoch from one source are told apart by a repeated key
    seq = moves.groupby([*keys, "param"], sort=False).cumcount()
    grouped = moves.assign(_n=seq).groupby([*keys, "_n"], sort=False)["param"]
    out = grouped.agg(lambda p: ", ".join(p)).reset_index().drop(columns="_n")
    return out.rename(columns={"param": "params"})


def lineage(exp_dir: Path | str, trial_id: str) -> pd.DataFrame:
    """One row per epoch of ``trial_id``'s lineage: ``epoch``, ``ran_in`` (the trial that
    trained that epoch), ``trained_lr`` (its lr in metrics.csv), ``val/R@1`` and every
    mutated parameter's value."""
    exp_dir = Path(exp_dir)
    moves = read_perturbations(exp_dir)
    trials = read_table(exp_dir / "trials.csv").set_index("trial_id")
    curves = read_table(exp_dir / "metrics.csv").set_index(["trial_id", "epoch"])
    params = sorted(moves["param"].unique()) if moves is not None else []
    end = int(trials.loc[trial_id, "epochs"])
    rows: list[dict[str, Any]] = []
    _walk(trial_id, end, moves, trials, params, rows)
    out = []
    for epoch, ran_in, config in rows:
        metrics = curves.loc[(ran_in, epoch)] if (ran_in, epoch) in curves.index else {}
        out.append({"epoch": epoch, "ran_in": ran_in, "trained_lr": metrics.get("lr"),
                    "val/R@1": metrics.get("val/R@1"), **config})
    return pd.DataFrame(out)


def _walk(trial_id: str, end: int, moves: pd.DataFrame | None, trials: pd.DataFrame,
          params: list[str], rows: list) -> None:
    mine = moves[moves["trial_id"] == trial_id] if moves is not None else pd.DataFrame()
    before = mine[mine["epoch"] < end]
    if before.empty:  # no exploit below `end`: the trial's own first config
        first = {p: (mine.loc[mine["param"] == p, "old"].iloc[0]
                     if (mine["param"] == p).any() else trials.loc[trial_id].get(p))
                 for p in params} if not mine.empty else {
                     p: trials.loc[trial_id].get(p) for p in params}
        rows += [(e, trial_id, first) for e in range(1, end + 1)]
        return
    last = before[before["epoch"] == before["epoch"].max()]
    last = last.groupby("param").tail(1)  # twice at one epoch: the later exploit
    p = int(last["epoch"].iloc[0])
    _walk(str(last["source_trial_id"].iloc[0]), p, moves, trials, params, rows)
    config = dict(zip(last["param"], last["new"], strict=True))
    rows += [(e, trial_id, config) for e in range(p + 1, end + 1)]


def plot_lr_schedules(exp_dir: Path | str, best: str | None = None) -> Any:
    """lr per epoch of every trial, the exploits marked where the new lr starts; ``best``
    (a trial id) drawn along its whole lineage."""
    import matplotlib.pyplot as plt

    exp_dir = Path(exp_dir)
    curves = read_table(exp_dir / "metrics.csv").dropna(subset=["lr"])
    moves = read_perturbations(exp_dir)
    fig, ax = plt.subplots(figsize=(8, 4.8), layout="constrained")
    for trial_id, group in curves.groupby("trial_id", sort=False):
        group = group.sort_values("epoch")
        ax.plot(group["epoch"], group["lr"], marker="o", ms=3, lw=1, alpha=0.6, label=trial_id)
    if moves is not None and not moves.empty:
        lr = moves[moves["param"] == "optimizer.lr"]
        ax.scatter(lr["epoch"] + 1, lr["new"], marker="*", s=120, color="red", zorder=4,
                   label="exploit: new lr from here")
    if best is not None:
        path = lineage(exp_dir, best)
        ax.plot(path["epoch"], path["trained_lr"], color="black", lw=2.5, zorder=3,
                label=f"best: {best} (lineage)")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("lr")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    ax.set_title(f"{exp_dir.name}: lr per epoch (PBT exploits marked)")
    return fig
