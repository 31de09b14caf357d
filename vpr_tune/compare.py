"""Experiments side by side (``vpr-tune compare NAME NAME...``).

One row per experiment: trials run, trial-epochs and time spent, the best trial's val
recalls and (when ``best --retest`` ran) its test recalls; then the hyperparameters on
which the experiments' best configs differ::

    from vpr_tune.analysis import load_experiment
    from vpr_tune.compare import compare_table, differing_hyperparameters

    exps = [load_experiment("optim"), load_experiment("losses")]
    compare_table(exps)               # DataFrame, one row per experiment
    differing_hyperparameters(exps)   # DataFrame, one row per differing key
    compare_winners(exps)             # the best trials, paired on the same val queries

Every recall carries its 95 % bootstrap interval over queries (``X_lo``, ``X_hi``). Two
winners measured on the same val queries (the same val split of the same data, the same
number of ranks) are compared with a paired bootstrap (:mod:`vpr_tune.noise`): ``separated``
is True when the 95 % interval of their R@N difference excludes 0.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from vpr_tune import metrics
from vpr_tune.analysis import (
    Experiment,
    best_so_far,
    failed_trials,
    hyperparameter_columns,
    ranked,
    table_column,
)
from vpr_tune.errors import UserError
from vpr_tune.noise import ValRanks, add_val_intervals, compared_n, paired
from vpr_tune.protocol import protocol_differences, read_protocols

# Keys of a resolved config that say where and how a run was launched, not what it trained.
NOT_HYPERPARAMETERS = ("name", "storage", "data.root", "search.", "asha.", "resources.cpu",
                       "resources.gpu")


def wall_time_s(exp: Experiment) -> float:
    """Seconds from the experiment's start (space.yaml written) to its last table update
    (trials.csv); a resumed experiment includes the time it was stopped."""
    start, end = exp.path / "space.yaml", exp.path / "trials.csv"
    if not start.exists() or not end.exists():
        return math.nan
    return max(0.0, end.stat().st_mtime - start.stat().st_mtime)


def compare_table(exps: list[Experiment], metric: str | None = None) -> pd.DataFrame:
    """One row per experiment: ``experiment, trials, finished`` (trained to max_epochs),
    ``stopped_early`` (cut by the scheduler, e.g. at an ASHA rung, or by the time budget),
    ``failed, trial_epochs, trial_time_h, wall_time_h, best_trial``, the best trial's
    ``val_R@N`` and, from retest.csv, its ``<set>_R@1/5``."""
    rows = []
    for exp in exps:
        m = metric or exp.metric
        frame = ranked(exp, m)
        status = exp.trials["status"].astype(str).str.upper()
        row: dict[str, Any] = {
            "experiment": exp.name,
            "trials": len(exp.trials),
            "finished": int((status == "TERMINATED").sum()),
            "stopped_early": int(status.isin(("STOPPED_EARLY", "STOPPED_BUDGET")).sum()),
            "failed": len(failed_trials(exp)),
            "trial_epochs": exp.trial_epochs,
            "trial_time_h": float(pd.to_numeric(exp.trials.get("time_s"),
                                                errors="coerce").sum()) / 3600,
            "wall_time_h": wall_time_s(exp) / 3600,
            "best_trial": frame.iloc[0]["trial_id"] if len(frame) else "",
        }
        for name in metrics.VAL_RECALLS:
            col = metrics.summary_column(name)
            row[table_column(name)] = (float(frame.iloc[0][col])
                                       if len(frame) and col in frame else math.nan)
        if len(frame):  # each val recall's 95 % interval over the val queries
            one = pd.DataFrame([{k: v for k, v in row.items() if k.startswith("val_")}])
            one.insert(0, "trial_id", row["best_trial"])
            one = add_val_intervals(one, exp, m, compare=False)
            row.update({k: float(v) for k, v in one.iloc[0].items() if k.startswith("val_")})
        retest = exp.retest
        if retest is not None and len(frame):
            hit = retest[retest["trial_id"].astype(str) == str(row["best_trial"])]
            for col in retest.columns:
                if "_R@" in col and not col.startswith("val_") and col.endswith(("@1", "@5")):
                    for c in (col, *metrics.interval_columns(col)):
                        if c in retest:
                            row[c] = float(hit.iloc[0][c]) if len(hit) else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def compare_winners(exps: list[Experiment], metric: str | None = None) -> list[dict[str, Any]]:
    """The first experiment's best trial against each other experiment's, on R@N (N: the
    ranking metric's when it is a recall, else 1), each at its best epoch by the ranking
    metric: ``separated`` True/False from a paired bootstrap over their val queries, None
    with the ``reason`` when they were not measured on the same queries."""
    first = exps[0]
    m0 = metric or first.metric
    n = compared_n(m0)
    a_id, a_ranks = _winner_ranks(first, m0)
    out = []
    for other in exps[1:]:
        m = metric or other.metric
        b_id, b_ranks = _winner_ranks(other, m)
        item: dict[str, Any] = {"a": first.name, "b": other.name, "trial_a": a_id,
                                "trial_b": b_id, "n": n, "separated": None, "reason": ""}
        reason = _not_paired(first, other, a_ranks, b_ranks)
        if reason:
            item["reason"] = reason
        else:
            p = paired(a_ranks, b_ranks, n)
            item.update({"queries": p.queries, f"a_R@{n}": p.a, f"b_R@{n}": p.b,
                         "difference": round(p.a - p.b, 4), "difference_lo": p.lo,
                         "difference_hi": p.hi, "separated": p.separated,
                         "words": p.words(f"{first.name}/{a_id}", f"{other.name}/{b_id}")})
        out.append(item)
    return out


def protocol_mismatches(exps: list[Experiment]) -> list[dict[str, Any]]:
    """Test sets of one name that the first experiment and another retested under different
    protocols (:mod:`vpr_tune.protocol`: other queries or database, positive radius or
    image size): their test recalls side by side are not comparable."""
    first = read_protocols(exps[0].path)
    out = []
    for other in exps[1:]:
        theirs = read_protocols(other.path)
        for set_name in sorted(set(first) & set(theirs)):
            differ = protocol_differences(first[set_name], theirs[set_name])
            if differ:
                out.append({"a": exps[0].name, "b": other.name, "test_set": set_name,
                            "differences": differ})
    return out


def mismatch_lines(mismatches: list[dict[str, Any]]) -> list[str]:
    """Each protocol mismatch in words."""
    return [f"warning: {m['test_set']} of {m['a']} and of {m['b']} were measured under "
            f"different protocols ({'; '.join(m['differences'])}): their {m['test_set']} "
            "recalls are not comparable" for m in mismatches]


def _winner_ranks(exp: Experiment, metric: str) -> tuple[str, Any]:
    frame = ranked(exp, metric)
    if frame.empty:
        return "", None
    tid = str(frame.iloc[0]["trial_id"])
    return tid, ValRanks(exp).at_best(tid, metric, exp.mode_for(metric))


def _not_paired(a: Experiment, b: Experiment, ra: Any, rb: Any) -> str:
    """Why two winners cannot be compared query by query ('' when they can)."""
    for exp, ranks in ((a, ra), (b, rb)):
        if ranks is None:
            return (f"{exp.name}: no per-query val ranks of its best trial (an experiment "
                    "from before vpr-tune kept them, or made by hand)")
    va, vb = (str(_space_get(e.space, "data.val") or "sf_xs/val") for e in (a, b))
    if va != vb:
        return f"different val splits ({va} vs {vb})"
    fa, fb = (_space_get(e.space, "resolved.data_fingerprint") for e in (a, b))
    ra_root, rb_root = (_space_get(e.space, "resolved.data_root") for e in (a, b))
    if fa and fb and fa != fb and ra_root != rb_root:
        return f"different data ({ra_root}: {fa}; {rb_root}: {fb})"
    if len(ra) != len(rb):
        return f"different val queries ({len(ra)} vs {len(rb)})"
    return ""


def _space_get(space: dict[str, Any], dotted: str) -> Any:
    node: Any = space or {}
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def comparison_lines(comparisons: list[dict[str, Any]]) -> list[str]:
    """Each paired comparison of two winners in words."""
    return [c.get("words") or f"{c['a']} vs {c['b']}: not compared query by query: "
            f"{c['reason']}" for c in comparisons]


def _flat(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        if isinstance(value, dict) and key != "test":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def best_config(exp: Experiment, metric: str | None = None) -> dict[str, Any]:
    """The resolved config of the experiment's best trial, from its checkpoint; when that
    cannot be read (moved or cleaned), its searched hyperparameters from trials.csv."""
    from vpr_tune.export import pick_trial, trial_config

    row = pick_trial(exp, None, metric)
    try:
        return trial_config(exp, row)
    except UserError:
        return {c: row[c] for c in hyperparameter_columns(exp.trials) if pd.notna(row[c])}


def differing_hyperparameters(exps: list[Experiment], metric: str | None = None,
                              configs: list[dict[str, Any]] | None = None) -> pd.DataFrame:
    """``key`` and one column per experiment, for every config key on which the best
    configs differ (launch settings such as ``search.*`` left out). ``configs`` overrides
    reading the best configs from the checkpoints."""
    configs = configs or [best_config(exp, metric) for exp in exps]
    flats = [_flat(c) for c in configs]
    keys = sorted(set().union(*flats))
    names = _unique_names(exps)
    rows = []
    for key in keys:
        if key.startswith(NOT_HYPERPARAMETERS) or key in NOT_HYPERPARAMETERS:
            continue
        values = [f.get(key, "") for f in flats]
        if any(v != values[0] for v in values[1:]):
            rows.append({"key": key, **{n: _show(v) for n, v in zip(names, values, strict=True)}})
    return pd.DataFrame(rows, columns=["key", *names])


def _show(value: Any) -> str:
    if isinstance(value, float):
        return format(value, ".3g")
    return "" if value is None else str(value)


def _unique_names(exps: list[Experiment]) -> list[str]:
    names = [e.name for e in exps]
    if len(set(names)) != len(names):
        raise UserError(f"compare needs different experiments, got {', '.join(names)}")
    return names


def best_so_far_overlay(exps: list[Experiment], metric: str | None = None) -> Any:
    """The Figure of :func:`plot_best_so_far_overlay`: one best-so-far step line per
    experiment, its epochs in the order they finished (metrics.csv ``timestamp``)."""
    import matplotlib.pyplot as plt

    metric = metric or exps[0].metric
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for exp in exps:
        curve = best_so_far(exp.reported, metric, exclude=failed_trials(exp),
                            mode=exp.mode_for(metric))
        ax.step(curve["trial_epochs"], curve["best"], where="post", label=exp.label)
    ax.set_xlabel("trial-epochs spent (in the order they finished)")
    ax.set_ylabel(f"best {metric} so far")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    return fig


def plot_best_so_far_overlay(exps: list[Experiment], out: str | Path,
                             metric: str | None = None) -> Path:
    """Every experiment's best-so-far curve (best metric vs trial-epochs) on one axis, written
    to ``out`` (a file in a folder that exists: none is created)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vpr_tune.atomic import atomic_path, check_output_file

    out = Path(out)
    check_output_file(out, "--plot", "compare.png")
    fig = best_so_far_overlay(exps, metric)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format=out.suffix.lstrip(".") or "png")
    plt.close(fig)
    return out
