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
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from vpr_tune import metrics
from vpr_tune.analysis import Experiment, markdown_table, ranked, table_column
from vpr_tune.atomic import write_csv, write_text
from vpr_tune.errors import UserError
from vpr_tune.retest import CACHE_FILE, EvaluateFn, _load_cache, _test_splits, make_evaluator


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
            set_callbacks(tuner, [retention_callback()])
        else:
            from ray.tune.schedulers import FIFOScheduler
            from ray.tune.search import ConcurrencyLimiter

            alg = ConcurrencyLimiter(
                _points_searcher(points, *metrics.ranking(search)),
                max_concurrent=int(search["max_concurrent"]))
            tuner = tune.Tuner(fn, param_space={}, tune_config=tune.TuneConfig(
                search_alg=alg, scheduler=FIFOScheduler(), num_samples=len(points)),
                run_config=tune.RunConfig(name=folder.name, storage_path=str(folder.parent),
                                          verbose=0, callbacks=[retention_callback()],
                                          checkpoint_config=tune.CheckpointConfig(
                                              num_to_keep=None)))
        return tuner.fit()
    finally:
        if started:
            stop_ray()


def _run_rows(result: Any, metric: str, mode: str) -> tuple[dict[str, Any], str]:
    """(best val recalls of one Ray result, its best checkpoint path)."""
    from vpr_tune.tune.results import _best_checkpoint, read_result_rows

    rows = [r for r in read_result_rows(Path(result.path)) if "epoch" in r
            and not r.get("diverged")]
    best = {table_column(m): metrics.best_value([r.get(m) for r in rows], "max")
            for m in metrics.VAL_RECALLS}
    best["epochs"] = max((int(r["epoch"]) for r in rows), default=0)
    return best, _best_checkpoint(Path(result.path), rows, metric, mode)


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
    for result in grid:
        cfg = result.config or {}
        key = (str(cfg.get(SOURCE_KEY)), int(cfg.get("seed", -1)))
        if key not in wanted:
            continue  # a run of an earlier --repeat/--top that this call does not ask for
        if result.error is not None:
            log(f"repeat of {key[0]} seed {key[1]} failed: {str(result.error)[:200]}")
            continue
        val, ckpt = _run_rows(result, metric, mode)
        row: dict[str, Any] = {"trial_id": key[0], "seed": key[1], **val}
        if ckpt:
            ck = json.dumps(["repeat", key[0], key[1], ckpt, Path(ckpt).stat().st_mtime_ns,
                             str(root), tests])
            if ck not in cache:
                log(f"test {key[0]} seed {key[1]}")
                cache[ck] = evaluate_fn(Path(ckpt), root, tests)
            for set_name in tests:
                for r in metrics.RECALLS:
                    row[f"{set_name}_{r}"] = float(cache[ck][set_name][r])
        rows.append(row)
    write_text(cache_path, json.dumps(cache, indent=1, sort_keys=True))
    runs = pd.DataFrame(rows).sort_values(["trial_id", "seed"]).reset_index(drop=True)
    summary = summarize(runs, list(configs))
    changed = bool(len(summary)) and summary.iloc[0]["trial_id"] != next(iter(configs))
    write_repeats(exp, runs, summary, changed, seeds, metric)
    return runs, summary, changed


def summarize(runs: pd.DataFrame, search_order: list[str]) -> pd.DataFrame:
    """Mean and std over seeds per config, ranked by mean val R@1 (``search_rank``: its rank
    in the search).

    >>> runs = pd.DataFrame({"trial_id": ["a", "a", "b", "b"], "seed": [1, 2, 1, 2],
    ...                      "val_R@1": [10.0, 20.0, 14.0, 18.0]})
    >>> summarize(runs, ["a", "b"])[["trial_id", "search_rank", "val_R@1_mean"]].values.tolist()
    [['b', 2, 16.0], ['a', 1, 15.0]]
    """
    recalls = [c for c in runs.columns if "_R@" in c]
    grouped = runs.groupby("trial_id", sort=False)
    frame = pd.DataFrame({"trial_id": list(grouped.groups)})
    frame["search_rank"] = [search_order.index(t) + 1 for t in frame["trial_id"]]
    frame["runs"] = grouped.size().to_numpy()
    for col in recalls:
        frame[f"{col}_mean"] = grouped[col].mean().to_numpy()
        frame[f"{col}_std"] = grouped[col].std(ddof=1).to_numpy()  # NaN with one run
    key = f"{table_column(metrics.DEFAULT_METRIC)}_mean"
    frame = frame.sort_values([key, "search_rank"], ascending=[False, True], kind="mergesort")
    frame.insert(0, "rank", range(1, len(frame) + 1))
    return frame.reset_index(drop=True)


def display_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary with ``mean ± std`` text cells (val R@1/5, each test set's R@1/5)."""
    out = summary[["rank", "trial_id", "search_rank", "runs"]].copy()
    cols = [c.removesuffix("_mean") for c in summary.columns if c.endswith("_mean")]
    for col in cols:
        if not col.endswith(("_R@1", "_R@5")):
            continue
        mean, std = summary[f"{col}_mean"], summary[f"{col}_std"]
        out[col] = [f"{m:.2f} ± {s:.2f}" if not math.isnan(s) else f"{m:.2f}"
                    for m, s in zip(mean, std, strict=True)]
    return out


def verdict(summary: pd.DataFrame, changed: bool) -> str:
    """One sentence: did the search's winner stay first by mean val R@1?"""
    if summary.empty:
        return "no repeated run finished"
    first = summary.iloc[0]
    if changed:
        return (f"the winner changed: {first['trial_id']} (search rank "
                f"{first['search_rank']}) is first by mean val R@1 over seeds")
    return f"the winner held: {first['trial_id']} is still first by mean val R@1 over seeds"


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
        f"**Verdict:** {verdict(summary, changed)}.",
        "",
    ]
    write_text(md_path, "\n".join(lines))
    return csv_path, md_path

