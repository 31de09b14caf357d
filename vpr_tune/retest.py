"""Re-evaluate the best trials of a search on the test sets (``vpr-tune best --retest``).

For each of the top K finished trials, load its best checkpoint and measure Recall@N on every
split of the config's ``data.test`` (SF-XS test and Tokyo-XS test by default), at the
config's eval size (``data.eval_image_size``, else ``data.image_size``). Writes
``results/<name>/retest.csv`` and ``retest.md`` atomically; results are cached in
``.retest_cache.json`` keyed by trial id + checkpoint path + mtime + data, so a second run
reuses them unless ``force``::

    from vpr_tune.analysis import load_experiment
    from vpr_tune.retest import retest

    table = retest(load_experiment("demo"), top=5)      # DataFrame, also written to disk
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vpr_tune import SYNTHETIC_NOTE, metrics
from vpr_tune.analysis import (
    SYNTHETIC_LABEL,
    Experiment,
    data_root_of,
    front_rows,
    front_table,
    markdown_table,
    ranked,
    top_table,
)
from vpr_tune.atomic import write_csv, write_text
from vpr_tune.config import DEFAULTS, eval_image_size, normalize_config
from vpr_tune.data.fingerprint import data_fingerprint
from vpr_tune.device import pick_device
from vpr_tune.errors import UserError
from vpr_tune.noise import (
    INTERVAL_NOTE,
    add_set_intervals,
    add_val_intervals,
    compared_n,
    display,
    load_set_ranks,
    noise_lines,
    retest_ranks_path,
    save_set_ranks,
)
from vpr_tune.protocol import describe, is_path, merged, split_protocol, write_protocols

CACHE_FILE = ".retest_cache.json"
# An evaluator's per-set result may carry the per-query ranks under this key (an array: kept
# in <experiment>/ranks/retest/<trial_id>.npz, not in the JSON cache, which keeps its sha1).
RANKS_KEY = "ranks"
RANKS_SHA1 = "ranks_sha1"
PROTOCOL_KEY = "protocol"  # what the set was measured under (vpr_tune.protocol)
# What evaluate reports about a split besides recalls (the same for every config).
SPLIT_COUNTS = ("queries", "database", "queries_without_positive")
SYNTHETIC_MD = f"> **Note.** {SYNTHETIC_NOTE}"

# (checkpoint path, data root, {set name: rel split}) -> {set name: metrics}; injectable in tests.
EvaluateFn = Callable[[Path, Path, dict[str, str]], dict[str, dict[str, Any]]]


def checkpoint_of(exp: Experiment, row: pd.Series) -> Path:
    """The trial's best checkpoint; re-rooted under the experiment folder if it was moved.

    Raises :class:`UserError` naming the trial and path when it does not exist.
    """
    raw = row.get("checkpoint")
    if not isinstance(raw, str) or not raw.strip():
        raise UserError(
            f"{exp.path / 'trials.csv'}: trial {row['trial_id']} has no checkpoint recorded"
        )
    if "://" in raw:  # the search ran on an object store: download it once
        from vpr_tune.tune.storage import fetch_checkpoint

        like = (exp.space.get("resolved") or {}).get("storage")
        return fetch_checkpoint(raw.strip(), exp.path, str(row["trial_id"]), like)
    path = Path(raw)
    if path.exists():
        return path
    parts = path.parts
    if exp.name in parts:  # the experiment folder was copied or moved elsewhere
        moved = exp.path.joinpath(*parts[len(parts) - parts[::-1].index(exp.name):])
        if moved.exists():
            return moved
    keep = ((exp.space.get("search") or {}) if isinstance(exp.space, dict) else {}).get(
        "keep_checkpoints")
    raise UserError(
        f"trial {row['trial_id']}: checkpoint {path} does not exist "
        f"(listed in {exp.path / 'trials.csv'}; the search keeps the checkpoints of its "
        f"{keep or 'search.keep_checkpoints'} best finished trials only, or the experiment "
        "was moved or cleaned): retest fewer trials (--top) or raise search.keep_checkpoints"
    )


def _test_splits(cfg: dict[str, Any] | None, extra: dict[str, str] | None = None
                 ) -> dict[str, str]:
    """The test sets to evaluate: the config's ``data.test`` (name -> split under the data
    root, or a folder by absolute path), then ``extra`` (``--test-set NAME=PATH``)."""
    tests = ((cfg or {}).get("data") or {}).get("test") or DEFAULTS["data"]["test"]
    if not isinstance(tests, dict) or not tests:
        raise UserError(f"data.test must map a set name to a split path, got {tests!r}")
    return {**{str(k): str(v) for k, v in tests.items()}, **(extra or {})}


def find_test_split(root: Path, rel: str) -> Path:
    """A test set's folder: ``rel`` under the data root, or ``rel`` itself when it is a path
    (a split folder, or a dataset folder holding ``test/``)."""
    from vpr_tune.data.splits import find_split

    if is_path(rel):
        return find_split(Path(rel).expanduser(), "test")
    return find_split(root, rel)


def make_evaluator(log: Callable[[str], None] = print) -> EvaluateFn:
    """The real evaluator: load the checkpoint's model, Recall@N on each test split."""
    splits: dict[Path, Any] = {}  # each test split is read once for all trials

    def run(checkpoint: Path, root: Path, tests: dict[str, str]) -> dict[str, dict[str, Any]]:
        import torch

        from vpr_tune.checkpoint import load_model_from_checkpoint
        from vpr_tune.data.splits import load_eval_split
        from vpr_tune.evaluate import evaluate_split
        from vpr_tune.uncertainty import first_hit_ranks

        torch.manual_seed(0)  # evaluation is deterministic; a seed keeps any stray RNG fixed
        device = pick_device()
        model, cfg = _load_with_fallback(load_model_from_checkpoint, checkpoint, device, log)
        data = normalize_config(cfg).get("data", {})
        image_size = eval_image_size(cfg)  # data.eval_image_size, else data.image_size
        out = {}
        for set_name, rel in tests.items():
            path = find_test_split(root, rel)
            if path not in splits:
                splits[path] = load_eval_split(path, skip_bad_files=data.get("skip_bad_files",
                                                                             False))
            with torch.no_grad():
                out[set_name], predictions = evaluate_split(
                    model, splits[path], image_size,
                    int(cfg.get("budget", {}).get("eval_batch_size", 64)), device,
                    precision=str(cfg.get("resources", {}).get("precision", "auto")),
                )
            # per query: the rank of its first positive (intervals, paired comparisons)
            out[set_name][RANKS_KEY] = first_hit_ranks(predictions, splits[path].positives)
            out[set_name][PROTOCOL_KEY] = split_protocol(splits[path], image_size)
            log(f"  {set_name}: R@1 {out[set_name]['R@1']:.2f}  R@5 {out[set_name]['R@5']:.2f}")
        return out

    return run


def _load_with_fallback(load: Callable[..., Any], checkpoint: Path, device: str,
                        log: Callable[[str], None]) -> Any:
    """``load(checkpoint)``; a truncated or corrupt file falls back to the best model of the
    trial's previous kept checkpoint folder (Ray keeps two), else one clear error."""
    folder = checkpoint.parent
    older = sorted((p for p in folder.parent.glob("checkpoint_*") if p.name < folder.name),
                   reverse=True)
    candidates = [checkpoint, *(p / checkpoint.name for p in older)]
    problems = []
    for path in candidates:
        if not path.is_file():
            continue
        try:
            loaded = load(path, device=device)
        except UserError as exc:
            problems.append(str(exc))
            continue
        if problems:
            log(f"warning: {problems[0]}; using {path} instead")
        return loaded
    raise UserError(f"{'; '.join(problems)}; no earlier kept checkpoint of this trial to "
                    "fall back to")


def _load_cache(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # no cache or a damaged one: recompute


def resolve_root(exp: Experiment, data: str | None, log: Callable[[str], None]) -> Path:
    """The data root for retesting: ``--data``, else the experiment's (space.yaml / env /
    street-world of the experiment's ``data.synth_size``)."""
    from vpr_tune.data.splits import resolve_data_root

    size = (exp.space.get("data") or {}).get("synth_size", DEFAULTS["data"]["synth_size"])
    return Path(resolve_data_root(data or data_root_of(exp.space), size=size, log=log))


def retest(
    exp: Experiment,
    top: int = 5,
    metric: str | None = None,
    data: str | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
    evaluate_fn: EvaluateFn | None = None,
    front: bool = False,
    test_sets: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Retest the top ``top`` trials by ``metric`` (default: the search's) on the test sets,
    or with ``front`` every trial on the Pareto front of a multi-objective search; returns
    and writes the retest table.

    Columns: ``rank``, ``trial_id``, the varying hyperparameters, ``val_R@1``, ``val_R@5``
    (and the ranking metric's column; with ``front`` every objective), then ``<set>_R@N``
    for each N of ``metrics.RECALLS`` and each set of ``data.test`` (``sf_test``,
    ``tokyo``) and of ``test_sets`` (``--test-set NAME=PATH``). ``table.attrs["test_sets"]``
    holds each set's query, database and no-positive counts and its ``protocol``
    (:mod:`vpr_tune.protocol`), also written to ``retest_sets.json``.
    """
    metric = metric or exp.metric
    if front:
        table, best = front_table(exp), front_rows(exp)
    else:
        table = top_table(exp, top, metric)  # raises when no trial finished
        best = ranked(exp, metric).head(top)
    checkpoints = [checkpoint_of(exp, row) for _, row in best.iterrows()]
    tests = _test_splits(exp.space, test_sets)
    for set_name, rel in tests.items():  # a set named by path: refused before any evaluation
        if is_path(rel):
            try:
                find_test_split(Path(rel), rel)
            except UserError as exc:
                raise UserError(f"test set {set_name}: {exc}") from None
    cache_path = exp.path / CACHE_FILE
    cache = {} if force else _load_cache(cache_path)
    root: Path | None = None
    evaluate_fn = evaluate_fn or make_evaluator(log)
    results: list[dict[str, dict[str, Any]]] = []
    test_ranks: list[dict[str, Any]] = []
    fingerprint = ""
    for (_, row), ckpt in zip(best.iterrows(), checkpoints, strict=True):
        if root is None:
            root = resolve_root(exp, data, log)
            fingerprint = data_fingerprint(root)
        key = json.dumps([row["trial_id"], str(ckpt.resolve()), ckpt.stat().st_mtime_ns,
                          str(root), tests, fingerprint])
        ranks_file = retest_ranks_path(exp.path, str(row["trial_id"]))
        kept = kept_ranks(cache[key], ranks_file) if key in cache else None
        if kept is None:
            shown = ckpt.relative_to(exp.path) if ckpt.is_relative_to(exp.path) else ckpt
            log(f"retest #{row['rank']} {row['trial_id']} ({shown})")
            cache[key], kept = split_ranks(evaluate_fn(ckpt, root, tests))
            if kept:
                save_set_ranks(ranks_file, kept)
        else:
            log(f"retest #{row['rank']} {row['trial_id']}: reused (use --force to recompute)")
        results.append(cache[key])
        test_ranks.append(kept)
    write_text(cache_path, json.dumps(cache, indent=1, sort_keys=True))

    table = add_val_intervals(table.drop(columns="epochs"), exp, metric, compare=not front)
    for set_name in tests:
        for r in metrics.RECALLS:
            table[f"{set_name}_{r}"] = [float(res[set_name][r]) for res in results]
    n = compared_n(metric)
    for set_name in tests:
        table = add_set_intervals(table, set_name, [k.get(set_name) for k in test_ranks], n)
    table.attrs["test_sets"] = {
        s: {**{k: results[0][s].get(k) for k in SPLIT_COUNTS},
            PROTOCOL_KEY: merged([res[s].get(PROTOCOL_KEY) for res in results])}
        for s in tests}
    write_protocols(exp.path, {s: c[PROTOCOL_KEY] for s, c in table.attrs["test_sets"].items()})
    write_retest(exp.path, table, _root_is_synthetic(root), metric,
                 _data_note(exp, root, fingerprint, log), front)
    exp.retest = table
    return table


def _data_note(exp: Experiment, root: Path | None, fingerprint: str,
               log: Callable[[str], None]) -> str:
    """retest.md's line on the data, with a warning (also logged) when the data changed
    since the search."""
    searched = str(((exp.space or {}).get("resolved") or {}).get("data_fingerprint") or "")
    note = f"Data: {root} ({fingerprint})."
    if searched and searched != fingerprint:
        warning = (f"warning: the data changed since the search (search: {searched}; "
                   f"retest: {fingerprint}): files were added, removed or rewritten")
        log(warning)
        note += f" **{warning}**"
    return note


def split_ranks(result: dict[str, dict[str, Any]]
                ) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """An evaluator's result as (what the JSON cache keeps, ``{set: ranks}``): the ranks
    leave the metrics, their sha1 (None: the evaluator gave none) stays."""
    entry, ranks = {}, {}
    for set_name, values in result.items():
        values = dict(values)
        got = values.pop(RANKS_KEY, None)
        if got is not None:
            ranks[set_name] = np.asarray(got, dtype=np.uint8)
        values[RANKS_SHA1] = _sha1(ranks[set_name]) if got is not None else None
        entry[set_name] = values
    return entry, ranks


def kept_ranks(entry: dict[str, dict[str, Any]], path: Path) -> dict[str, np.ndarray] | None:
    """The test ranks of a cached retest, from ``path``; None when they must be measured
    again (a cache entry from before ranks were kept, or a missing or different file)."""
    wanted = {s: v.get(RANKS_SHA1, "") for s, v in entry.items()}
    if any(sha == "" for sha in wanted.values()):
        return None  # cached before retest kept ranks: evaluate again to get intervals
    on_disk = load_set_ranks(path) if any(wanted.values()) else {}
    kept = {}
    for set_name, sha in wanted.items():
        if sha is None:
            continue  # the evaluator gave no ranks for this set
        if set_name not in on_disk or _sha1(on_disk[set_name]) != sha:
            return None
        kept[set_name] = on_disk[set_name]
    return kept


def _sha1(ranks: np.ndarray) -> str:
    import hashlib

    return hashlib.sha1(np.asarray(ranks, dtype=np.uint8).tobytes()).hexdigest()


def _root_is_synthetic(root: Path | None) -> bool:
    if root is None:
        return False
    from vpr_tune.data.splits import is_synthetic

    return bool(is_synthetic(root))


def write_retest(folder: Path, table: pd.DataFrame, synthetic: bool,
                 metric: str = metrics.DEFAULT_METRIC, data_note: str = "",
                 front: bool = False) -> tuple[Path, Path]:
    """Write ``retest.csv`` and ``retest.md`` (with the synthetic note when it applies and
    ``data_note``: the data root and its fingerprint; ``front``: the rows are a Pareto
    front)."""
    csv_path, md_path = folder / "retest.csv", folder / "retest.md"
    write_csv(table, csv_path)
    lines = [f"# Retest of {folder.name}" + (f" — {SYNTHETIC_LABEL}" if synthetic else ""), ""]
    if synthetic:
        lines += [SYNTHETIC_MD, ""]
    lines += [
        f"Best checkpoint of each {'trial on the Pareto front' if front else 'top trial'} "
        f"(ranked by best {metric}), Recall@N in percent (25 m rule); {INTERVAL_NOTE}.",
        "",
        markdown_table(display(table)),
        "",
        *(f"- {line}" for line in [*noise_lines(table), *transfer_lines(table)]),
        "",
    ]
    if data_note:
        lines += [data_note, ""]
    write_text(md_path, "\n".join(lines))
    return csv_path, md_path


def transfer_lines(table: pd.DataFrame) -> list[str]:
    """What a reader of the retest needs besides the table: each test set's queries without a
    positive (they cap R@N), and how well the val ranking transferred to each test set."""
    from vpr_tune.analysis import rank_transfer

    lines = []
    for name, c in table.attrs.get("test_sets", {}).items():
        q, miss = c.get("queries"), c.get("queries_without_positive")
        if q:
            lines.append(f"{name}: {q} queries, {miss} without a positive within 25 m "
                         f"(R@N cannot exceed {100 * (q - miss) / q:.1f} %)")
        if c.get(PROTOCOL_KEY):
            lines.append(f"{name} protocol: {describe(c[PROTOCOL_KEY])}")
    for row in rank_transfer(table).itertuples(index=False):
        if math.isnan(row.spearman):
            lines.append(f"val -> {row.test_set} ranking: needs 3+ configs with different "
                         f"recalls (retested {row.configs}; use --top)")
        else:
            lines.append(f"val -> {row.test_set} ranking over {row.configs} configs (R@1): "
                         f"Spearman {row.spearman:+.2f}, Kendall's tau {row.kendall:+.2f}")
    return lines
