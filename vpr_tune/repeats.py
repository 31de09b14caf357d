"""Is the winner real? Retrain the top configs with new seeds (``best NAME --repeat N``).

Each of the top K trials' configs (read from its checkpoint) is trained again with N new
seeds (``seed + 1 ... seed + N``) at the full epoch budget, as Ray trials with the search's
resources and FIFO (no early stopping), in ``results/<name>/repeats-top<K>-seeds<N>/`` (a
Ray experiment: the same command again continues where an interrupted one stopped). Every
run's best checkpoint is then tested like ``--retest``. Writes ``repeats.csv`` (one row per
config and seed) and ``repeats.md`` (mean ± std per config, ranked by mean val R@1)::

    from vpr_tune.analysis import load_experiment
    from vpr_tune.repeats import repeat

    runs, summary, changed = repeat(load_experiment("demo"), seeds=3, top=3)

Two kinds of noise are reported side by side (:data:`METHOD`): the spread over seeds (sd of a
config's runs) and the noise over queries (a run's R@1 95 % bootstrap interval over the val
queries, as an sd: half-width / 1.96, mean over the runs); ``noise`` says which is larger.
The winner *held* only when it is still first by mean val R@1 and its lead over the second
is separated on both: Welch's t interval over seeds and a paired bootstrap over the same val
queries of the seed-averaged hits both exclude 0 (``summary.attrs["comparison"]``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vpr_tune import metrics
from vpr_tune.analysis import Experiment, markdown_table, ranked, table_column
from vpr_tune.atomic import write_csv, write_text
from vpr_tune.errors import UserError
from vpr_tune.noise import mean_difference_interval, save_set_ranks
from vpr_tune.retest import (
    CACHE_FILE,
    EvaluateFn,
    _load_cache,
    _test_splits,
    kept_ranks,
    make_evaluator,
    split_ranks,
)
from vpr_tune.uncertainty import RANKS_DIR, decode, hits_at, recall_interval

METHOD = ("mean ± sd over seeds, next to the sd over queries (a run's 95 % bootstrap "
          "interval over the val queries: half-width / 1.96, mean over the runs); noise: "
          "the larger of the two. The winner held when it is still first by mean val R@1 "
          "and its lead over the second is separated on both: Welch's t 95 % interval over "
          "the seeds' R@1 and a 95 % paired bootstrap over the same val queries of the "
          "seed-averaged hits both exclude 0")


def folder_name(top: int, seeds: int) -> str:
    """The Ray experiment of one ``--repeat N --top K`` request, under the experiment folder."""
    return f"repeats-top{top}-seeds{seeds}"


SOURCE_KEY = "repeat_of"  # trial config key: which search trial a run repeats


def repeat_seeds(seed: int, n: int) -> list[int]:
    """The ``n`` new seeds of a config first run with ``seed``.

    >>> repeat_seeds(0, 3)
    [1, 2, 3]
    """
    if n < 1:
        raise UserError(f"--repeat must be at least 1, got {n}")
    return [int(seed) + i for i in range(1, n + 1)]


def repeat_trial(config: dict[str, Any], configs: dict[str, dict[str, Any]], data_root: str,
                 trainer_factory: Any = None) -> None:
    """Ray function trainable: the config of search trial ``config[SOURCE_KEY]`` with seed
    ``config["seed"]`` (one ``train_trial``)."""
    from vpr_tune.tune.trainable import train_trial

    train_trial({"seed": int(config["seed"])}, configs[config[SOURCE_KEY]], data_root,
                trainer_factory)


def _run_ray(folder: Path, configs: dict[str, dict[str, Any]], points: list[dict[str, Any]],
             root: Path, log: Callable[[str], Any]) -> Any:
    """Start or continue the Ray experiment of the repeats; returns its ResultGrid."""
    from ray import tune

    from vpr_tune.tune import trainable
    from vpr_tune.tune.checkpoints import retention_callback
    from vpr_tune.tune.ray_internals import set_callbacks
    from vpr_tune.tune.ray_session import init_ray, stop_ray
    from vpr_tune.tune.searchers import _points_searcher

    first = next(iter(configs.values()))
    search, res = first["search"], first["resources"]
    fn = tune.with_resources(
        tune.with_parameters(repeat_trial, configs=configs, data_root=str(root),
                             trainer_factory=trainable.TRAINER_FACTORY),
        {"cpu": res["cpu"], "gpu": res["gpu"]})
    started = init_ray(None)
    try:
        if tune.Tuner.can_restore(str(folder)):
            log(f"repeats: continuing {folder}")
            tuner = tune.Tuner.restore(str(folder), fn, resume_unfinished=True,
                                       resume_errored=True)
            set_callbacks(tuner, [retention_callback(keep_finished=None)])
        else:
            from ray.tune.schedulers import FIFOScheduler
            from ray.tune.search import ConcurrencyLimiter

            alg = ConcurrencyLimiter(
                _points_searcher(points, *metrics.ranking(search)),
                max_concurrent=int(search["max_concurrent"]))
            tuner = tune.Tuner(fn, param_space={}, tune_config=tune.TuneConfig(
                search_alg=alg, scheduler=FIFOScheduler(), num_samples=len(points)),
                run_config=tune.RunConfig(
                    name=folder.name, storage_path=str(folder.parent), verbose=0,
                    callbacks=[retention_callback(keep_finished=None)],
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=None)))
        return tuner.fit()
    finally:
        if started:
            stop_ray()


def _run_rows(result: Any, metric: str, mode: str
              ) -> tuple[dict[str, Any], str, np.ndarray | None]:
    """(val recalls of one Ray result at the epoch the search metric chose — the epoch
    ``best`` reports and ``best.pt`` keeps — with their 95 % intervals over the val
    queries, its best checkpoint path, its val ranks at that epoch)."""
    from vpr_tune.tune.results import _best_checkpoint, read_result_rows

    rows = [r for r in read_result_rows(Path(result.path)) if "epoch" in r
            and not r.get("diverged")]
    best: dict[str, Any] = {}
    at_r1 = None
    i = metrics.best_index([r.get(metric) for r in rows], mode)  # one epoch for every K
    for m, n in zip(metrics.VAL_RECALLS, metrics.RECALL_NS, strict=True):
        col = table_column(m)
        best[col] = None if i is None else float(rows[i][m])
        text = rows[i].get(metrics.RANKS) if i is not None else None
        ranks = decode(text) if isinstance(text, str) and text else None
        best[f"{col}_lo"], best[f"{col}_hi"] = _interval(ranks, n)
        at_r1 = ranks if n == 1 else at_r1
    best["epochs"] = max((int(r["epoch"]) for r in rows), default=0)
    return best, _best_checkpoint(Path(result.path), rows, metric, mode), at_r1


def _interval(ranks: np.ndarray | None, n: int) -> tuple[float, float]:
    if ranks is None or not len(ranks):
        return math.nan, math.nan
    lo, hi = recall_interval(ranks, n)
    return round(lo, 4), round(hi, 4)


def repeat(exp: Experiment, seeds: int, top: int = 3, metric: str | None = None,
           data: str | None = None, log: Callable[[str], Any] = print,
           evaluate_fn: EvaluateFn | None = None) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """Run (or continue) the repeats; returns ``(runs, summary, winner_changed)`` and writes
    ``repeats.csv`` / ``repeats.md`` in the experiment folder."""
    from vpr_tune.export import trial_config
    from vpr_tune.retest import resolve_root

    metric = metric or exp.metric
    best = ranked(exp, metric).head(top)
    if best.empty:
        raise UserError(f"experiment {exp.name}: no finished trial to repeat")
    configs = {str(row["trial_id"]): trial_config(exp, row) for _, row in best.iterrows()}
    points = [{SOURCE_KEY: tid, "seed": s} for tid, cfg in configs.items()
              for s in repeat_seeds(int(cfg["seed"]), seeds)]
    root = resolve_root(exp, data, log)
    folder = exp.path / folder_name(top, seeds)
    log(f"repeats: {len(configs)} configs x {seeds} seeds = {len(points)} runs of "
        f"{next(iter(configs.values()))['budget']['max_epochs']} epochs in {folder}")
    grid = _run_ray(folder, configs, points, root, log)
    wanted = {(p[SOURCE_KEY], p["seed"]) for p in points}

    tests = _test_splits(exp.space)
    cache_path = exp.path / CACHE_FILE
    cache = _load_cache(cache_path)
    evaluate_fn = evaluate_fn or make_evaluator(log)
    mode = exp.mode_for(metric)
    rows = []
    val_ranks: dict[tuple[str, int], np.ndarray] = {}
    for result in grid:
        cfg = result.config or {}
        key = (str(cfg.get(SOURCE_KEY)), int(cfg.get("seed", -1)))
        if key not in wanted:
            continue  # a run of an earlier --repeat/--top that this call does not ask for
        if result.error is not None:
            log(f"repeat of {key[0]} seed {key[1]} failed: {str(result.error)[:200]}")
            continue
        val, ckpt, ranks = _run_rows(result, metric, mode)
        if ranks is not None:
            val_ranks[key] = ranks
        row: dict[str, Any] = {"trial_id": key[0], "seed": key[1], **val}
        if ckpt:
            ck = json.dumps(["repeat", key[0], key[1], ckpt, Path(ckpt).stat().st_mtime_ns,
                             str(root), tests])
            ranks_file = exp.path / RANKS_DIR / REPEATS_DIR / f"{key[0]}.seed{key[1]}.npz"
            kept = kept_ranks(cache[ck], ranks_file) if ck in cache else None
            if kept is None:
                log(f"test {key[0]} seed {key[1]}")
                cache[ck], kept = split_ranks(evaluate_fn(Path(ckpt), root, tests))
                if kept:
                    save_set_ranks(ranks_file, kept)
            for set_name in tests:
                for r, n in zip(metrics.RECALLS, metrics.RECALL_NS, strict=True):
                    col = f"{set_name}_{r}"
                    row[col] = float(cache[ck][set_name][r])
                    if kept.get(set_name) is not None:
                        row[f"{col}_lo"], row[f"{col}_hi"] = _interval(kept[set_name], n)
        rows.append(row)
    write_text(cache_path, json.dumps(cache, indent=1, sort_keys=True))
    runs = pd.DataFrame(rows).sort_values(["trial_id", "seed"]).reset_index(drop=True)
    summary = summarize(runs, list(configs))
    summary.attrs["comparison"] = compare_first_two(runs, summary, val_ranks)
    changed = bool(len(summary)) and summary.iloc[0]["trial_id"] != next(iter(configs))
    write_repeats(exp, runs, summary, changed, seeds, metric)
    return runs, summary, changed


REPEATS_DIR = "repeats"  # <experiment>/ranks/repeats/<trial_id>.seed<S>.npz: test ranks


def compare_first_two(runs: pd.DataFrame, summary: pd.DataFrame,
                      val_ranks: dict[tuple[str, int], np.ndarray] | None = None
                      ) -> dict[str, Any] | None:
    """Is the first config by mean val R@1 separated from the second? ``seeds``: Welch's t
    95 % interval of the difference of their runs' mean val R@1 (None with fewer than two
    runs each); ``queries``: 95 % paired bootstrap over the same val queries of the
    difference of their seed-averaged hits (None without every run's ranks);
    ``separated``: every available interval lies above 0 (and one is available)."""
    if len(summary) < 2:
        return None
    first, second = (str(t) for t in summary["trial_id"].iloc[:2])
    col = table_column(metrics.DEFAULT_METRIC)
    values = [runs.loc[runs["trial_id"].astype(str) == t, col].dropna().astype(float)
              .to_numpy() for t in (first, second)]
    out: dict[str, Any] = {"first": first, "second": second,
                           "difference": float(values[0].mean() - values[1].mean()),
                           "seeds": _welch(*values), "queries": None}
    ranks = val_ranks or {}
    hits = []
    for t in (first, second):
        seeds_of = runs.loc[runs["trial_id"].astype(str) == t, "seed"].astype(int)
        got = [ranks.get((t, s)) for s in seeds_of]
        if not got or any(r is None for r in got) or len({len(r) for r in got}) != 1:
            break
        hits.append(np.mean([hits_at(r, 1) for r in got], axis=0))
    if len(hits) == 2 and len(hits[0]) == len(hits[1]):
        out["queries"] = [round(v, 4) for v in mean_difference_interval(*hits)]
        out["val_queries"] = len(hits[0])
    tested = [iv for iv in (out["seeds"], out["queries"]) if iv is not None]
    out["separated"] = bool(tested) and all(iv[0] > 0 for iv in tested)
    return out


def _welch(a: np.ndarray, b: np.ndarray) -> list[float] | None:
    """Welch's t 95 % interval of ``mean(a) - mean(b)`` (scipy); None with < 2 runs each."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return None
    diff = float(a.mean() - b.mean())
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return [diff, diff]  # no spread over seeds at all
    import warnings

    with warnings.catch_warnings():  # one config without spread: scipy warns, the CI is right
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    return [round(float(ci.low), 4), round(float(ci.high), 4)]


def summarize(runs: pd.DataFrame, search_order: list[str]) -> pd.DataFrame:
    """Mean and std over seeds per config, ranked by mean val R@1 (``search_rank``: its rank
    in the search).

    >>> runs = pd.DataFrame({"trial_id": ["a", "a", "b", "b"], "seed": [1, 2, 1, 2],
    ...                      "val_R@1": [10.0, 20.0, 14.0, 18.0]})
    >>> summarize(runs, ["a", "b"])[["trial_id", "search_rank", "val_R@1_mean"]].values.tolist()
    [['b', 2, 16.0], ['a', 1, 15.0]]
    """
    recalls = [c for c in runs.columns if "_R@" in c and not c.endswith(("_lo", "_hi"))]
    grouped = runs.groupby("trial_id", sort=False)
    frame = pd.DataFrame({"trial_id": list(grouped.groups)})
    frame["search_rank"] = [search_order.index(t) + 1 for t in frame["trial_id"]]
    frame["runs"] = grouped.size().to_numpy()
    for col in recalls:
        frame[f"{col}_mean"] = grouped[col].mean().to_numpy()
        frame[f"{col}_std"] = grouped[col].std(ddof=1).to_numpy()  # NaN with one run
        if f"{col}_lo" in runs and f"{col}_hi" in runs:  # the noise over queries, as an sd
            half = (runs[f"{col}_hi"] - runs[f"{col}_lo"]) / 2 / 1.96
            frame[f"{col}_query_sd"] = half.groupby(runs["trial_id"], sort=False).mean() \
                .reindex(frame["trial_id"]).to_numpy()
    r1 = table_column(metrics.DEFAULT_METRIC)
    if f"{r1}_query_sd" in frame:
        frame["noise"] = [_dominant(s, q) for s, q in zip(frame[f"{r1}_std"],
                                                          frame[f"{r1}_query_sd"], strict=True)]
    key = f"{table_column(metrics.DEFAULT_METRIC)}_mean"
    frame = frame.sort_values([key, "search_rank"], ascending=[False, True], kind="mergesort")
    frame.insert(0, "rank", range(1, len(frame) + 1))
    return frame.reset_index(drop=True)


def _dominant(seed_sd: float, query_sd: float) -> str:
    """Which noise is larger: ``seeds`` or ``queries`` (empty when one is unknown)."""
    if math.isnan(seed_sd) or math.isnan(query_sd):
        return ""
    return "seeds" if seed_sd > query_sd else "queries"


def display_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary with ``mean ± std`` text cells (val R@1/5, each test set's R@1/5); an R@N
    with its noise over queries reads ``mean ± sd seeds, ± sd queries``; ``noise``: which
    of the two is larger for val R@1."""
    out = summary[["rank", "trial_id", "search_rank", "runs"]].copy()
    cols = [c.removesuffix("_mean") for c in summary.columns if c.endswith("_mean")]
    for col in cols:
        if not col.endswith(("_R@1", "_R@5")):
            continue
        mean, std = summary[f"{col}_mean"], summary[f"{col}_std"]
        query = summary.get(f"{col}_query_sd", pd.Series(math.nan, index=summary.index))
        out[col] = [_mean_cell(m, s, q) for m, s, q in zip(mean, std, query, strict=True)]
    if "noise" in summary:
        out["noise"] = summary["noise"]
    return out


def _mean_cell(mean: float, std: float, query_sd: float) -> str:
    text = f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"
    if math.isnan(query_sd):
        return text
    return f"{text} seeds, ± {query_sd:.2f} queries"


def winner_held(summary: pd.DataFrame, changed: bool) -> bool:
    """The search's winner is still first by mean val R@1 and separated from the second (by
    every test :func:`compare_first_two` could make); one config alone: it is first."""
    if summary.empty or changed:
        return False
    comparison = summary.attrs.get("comparison")
    return comparison is None or bool(comparison.get("separated"))


def verdict(summary: pd.DataFrame, changed: bool) -> str:
    """One sentence: did the search's winner stay first by mean val R@1, and is its lead
    over the second larger than the noise over seeds and over queries?"""
    if summary.empty:
        return "no repeated run finished"
    first = summary.iloc[0]
    comparison = summary.attrs.get("comparison")
    noise = _noise_words(comparison)
    if changed:
        head = (f"the winner changed: {first['trial_id']} (search rank "
                f"{first['search_rank']}) is first by mean val R@1 over seeds")
        if comparison is not None and not comparison["separated"]:
            return f"{head}, but within noise of {comparison['second']} ({noise})"
        return f"{head}" + (f", separated from {comparison['second']} ({noise})"
                            if comparison is not None else "")
    if comparison is None:
        return f"the winner held: {first['trial_id']} is still first by mean val R@1 over seeds"
    if comparison["separated"]:
        return (f"the winner held: {first['trial_id']} is still first by mean val R@1 over "
                f"seeds, separated from {comparison['second']} ({noise})")
    return (f"the winner is not confirmed: {first['trial_id']} is still first by mean val R@1 "
            f"over seeds, but within noise of {comparison['second']} ({noise})")


def _noise_words(comparison: dict[str, Any] | None) -> str:
    if comparison is None:
        return ""
    parts = [f"lead {comparison['difference']:+.2f} points"]
    for key, what in (("seeds", "Welch's t over seeds"),
                      ("queries", "paired bootstrap over val queries")):
        iv = comparison.get(key)
        parts.append(f"{what}: " + (f"{iv[0]:+.2f} to {iv[1]:+.2f}" if iv is not None
                                    else "not available"))
    return "; ".join(parts) + " (95 %)"


def noise_line(summary: pd.DataFrame) -> str:
    """Which noise dominates val R@1: the spread over seeds or over the val queries."""
    r1 = table_column(metrics.DEFAULT_METRIC)
    if summary.empty or f"{r1}_query_sd" not in summary:
        return ("noise over queries unknown: the runs reported no per-query ranks; "
                "noise over seeds: the ± in the table")
    seeds = float(summary[f"{r1}_std"].mean())
    queries = float(summary[f"{r1}_query_sd"].mean())
    if math.isnan(seeds):
        return (f"val R@1 noise over queries: sd {queries:.2f} points; over seeds unknown "
                "(one run per config)")
    more = ("the val queries dominate: more val queries, not more seeds, would make the "
            "ranking surer" if queries >= seeds else
            "the seeds dominate: more seeds per config would make the ranking surer")
    return (f"val R@1 noise (mean over configs): sd {seeds:.2f} points over seeds, "
            f"sd {queries:.2f} over queries; {more}")


def write_repeats(exp: Experiment, runs: pd.DataFrame, summary: pd.DataFrame, changed: bool,
                  seeds: int, metric: str) -> tuple[Path, Path]:
    """``repeats.csv`` (one row per config and seed) and ``repeats.md`` (mean ± std)."""
    from vpr_tune.retest import SYNTHETIC_MD

    csv_path, md_path = exp.path / "repeats.csv", exp.path / "repeats.md"
    write_csv(runs, csv_path)
    lines = [f"# Repeats of {exp.label}", ""]
    if exp.synthetic:
        lines += [SYNTHETIC_MD, ""]
    lines += [
        f"The top {len(summary)} configs by best {metric}, each retrained with {seeds} new "
        "seed(s) at the full epoch budget; best checkpoint of each run tested like retest. "
        "Recall@N in percent, mean ± std over seeds.",
        "",
        markdown_table(display_table(summary)),
        "",
        f"- {noise_line(summary)}",
        f"- Method: {METHOD}.",
        "",
        f"**Verdict:** {verdict(summary, changed)}.",
        "",
    ]
    write_text(md_path, "\n".join(lines))
    return csv_path, md_path

