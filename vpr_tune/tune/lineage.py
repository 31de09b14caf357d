"""What a PBT/PB2 trial really trained with: its lineage through ``perturbations.csv``.

After an exploit at epoch ``p`` a trial continues from another trial's weights, so its
epochs up to ``p`` are that trial's (recursively). ``lineage`` follows those links back and
returns one row per epoch: which trial ran it, the metrics it reported, and the mutated
hyperparameters it trained with -- the schedule PBT found. A PBT trial's ``best_`` columns in
trials.csv are over the same epochs (:func:`lineage_epochs`): the weights, and the best.pt,
the trial goes on from.

>>> exp = load_experiment("pbt-demo")
>>> lineage(exp.path, "9aa1f_00001")  # epoch, ran_in, trained_lr, val/R@1, optimizer.lr
>>> fig = plot_lr_schedules(exp.path)      # lr per epoch, exploits marked
"""

from __future__ import annotations

from bisect import bisect_left
from pathlib import Path
from typing import Any

import pandas as pd

from vpr_tune.schema import POPULATION_SCHEDULERS
from vpr_tune.tune.space_record import recorded_space
from vpr_tune.tune.tables import read_table

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
    params = sorted(set(mutated_keys(exp_dir))
                    | set(moves["param"].unique() if moves is not None else []))
    end = int(trials.loc[trial_id, "epochs"])
    index = _Exploits(moves)
    out = []
    for ran_in, first, last, config in _segments(index, trial_id, end):
        if config is None:  # before its first exploit: the trial's own first config
            config = {p: index.first.get(ran_in, {}).get(p, trials.loc[ran_in].get(p))
                      for p in params}
        for epoch in range(first, last + 1):
            metrics = curves.loc[(ran_in, epoch)] if (ran_in, epoch) in curves.index else {}
            out.append({"epoch": epoch, "ran_in": ran_in, "trained_lr": metrics.get("lr"),
                        "val/R@1": metrics.get("val/R@1"), **config})
    return pd.DataFrame(out)


def mutated_keys(exp_dir: Path) -> list[str]:
    """``pbt.mutate`` of the experiment's space.yaml ([] without one, or for other searches):
    a lineage shows them even when no exploit stayed in the log (one a killed driver never
    saved is dropped on --resume, and a short search may have none)."""
    path = exp_dir / "space.yaml"
    if not path.is_file():
        return []
    space = recorded_space(exp_dir)
    if space.base["search"]["scheduler"] not in POPULATION_SCHEDULERS:
        return []
    return list(space.base["pbt"]["mutate"])


def lineage_epochs(moves: pd.DataFrame | None, ends: dict[str, int]
                   ) -> dict[str, list[tuple[int, str]]]:
    """``(epoch, ran_in)`` for epochs 1..end of each trial's lineage (``ends``: trial id ->
    its last epoch; ``moves``: ``perturbations.csv``, None for other searches): whose
    reported row each epoch of the weights it ends with is. A trial's own epochs up to its
    last exploit are not among them."""
    index = _Exploits(moves)
    return {trial_id: [(epoch, ran_in) for ran_in, first, last, _ in
                       _segments(index, trial_id, end) for epoch in range(first, last + 1)]
            for trial_id, end in ends.items()}


class _Exploits:
    """``perturbations.csv`` indexed for walking lineages back: each trial's exploit epochs
    (sorted), the source and new values of the exploit at each (twice at one epoch: the
    later one), and each mutated key's value before the trial's first exploit."""

    def __init__(self, moves: pd.DataFrame | None) -> None:
        self.epochs: dict[str, list[int]] = {}
        self.at: dict[tuple[str, int], tuple[str, dict[str, Any]]] = {}
        self.first: dict[str, dict[str, Any]] = {}
        groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for row in ([] if moves is None else moves.to_dict("records")):
            trial = str(row["trial_id"])
            groups.setdefault((trial, int(row["epoch"])), []).append(row)
            self.first.setdefault(trial, {}).setdefault(row["param"], row["old"])
        for (trial, epoch), rows in groups.items():
            later = {row["param"]: i for i, row in enumerate(rows)}  # each key's later row
            kept = [rows[i] for i in sorted(later.values())]
            self.at[(trial, epoch)] = (str(kept[0]["source_trial_id"]),
                                       {row["param"]: row["new"] for row in kept})
            self.epochs.setdefault(trial, []).append(epoch)
        for epochs in self.epochs.values():
            epochs.sort()


def _segments(index: _Exploits, trial_id: str, end: int
              ) -> list[tuple[str, int, int, dict[str, Any] | None]]:
    """``trial_id``'s lineage over epochs 1..``end`` as ``(ran_in, first, last, config)``
    runs of epochs, oldest first: after an exploit at epoch ``p`` (the epoch of the
    checkpoint it copied) the trial ran ``p+1..`` with the exploit's new values; up to ``p``
    its weights are the source's, whose lineage up to ``p`` is followed the same way.
    ``config`` None: a trial's own first config (before its first exploit)."""
    runs: list[tuple[str, int, int, dict[str, Any] | None]] = []
    while True:
        epochs = index.epochs.get(trial_id, [])
        below = bisect_left(epochs, end)  # exploits at epochs < end
        if not below:
            runs.append((trial_id, 1, end, None))
            return runs[::-1]
        p = epochs[below - 1]
        source, config = index.at[(trial_id, p)]
        runs.append((trial_id, p + 1, end, config))
        trial_id, end = source, p


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
