"""Experiment folders and the tables written from a Ray Tune search.

``results/<name>/`` (or ``<storage>/<name>/``) holds the Ray experiment, ``space.yaml``,
``trials.csv`` (one row per trial) and ``metrics.csv`` (one row per trial-epoch); the
columns are listed in docs/CONTRACTS.md. Tables are written atomically (tmp + rename).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from vpr_tune import metrics, statuses
from vpr_tune.atomic import LockHeld, file_lock, lock_holder, write_csv
from vpr_tune.config import ALIAS_MARK, materialize
from vpr_tune.errors import UserError
from vpr_tune.tune.lineage import lineage_epochs, read_perturbations
from vpr_tune.tune.storage import remote_checkpoint, remote_trial_file
from vpr_tune.tune.tables import read_table as read_table  # where most callers import it


def storage_root(storage: str | None = None) -> Path:
    """Where experiments live: ``storage`` > ``$VPR_TUNE_RESULTS`` > ``./results`` (absolute)."""
    root = storage or os.environ.get("VPR_TUNE_RESULTS") or "results"
    if "://" in str(root):
        if str(root).startswith("file://"):
            return Path(str(root)[len("file://"):])
        raise UserError(f"storage {root}: only local or shared-filesystem paths can be read "
                        "back here; mount it and pass the path")
    return Path(root).expanduser().resolve()


def experiment_dir(name: str, storage: str | None = None) -> Path:
    """The folder of experiment ``name`` (it may not exist yet)."""
    return storage_root(storage) / check_name(name)


def check_name(name: str, where: str = "experiment name") -> str:
    """``name`` if it is a plain folder name, else UserError: nothing may be created outside
    the results root, whatever the name.

    >>> check_name("demo-1")
    'demo-1'
    """
    bad = ("is empty" if not name.strip()
           else "is . or .." if name.strip() in (".", "..")
           else "contains a path separator" if "/" in name or "\\" in name or os.sep in name
           else "contains a control character" if any(ord(c) < 32 or ord(c) == 127
                                                       for c in name)
           else f"is {len(name.encode())} bytes long (at most 255)"
           if len(name.encode()) > 255 else "")
    if bad:
        raise UserError(f"{where} {name[:60]!r}{'...' if len(name) > 60 else ''} {bad}; use "
                        "a plain name such as optim-lr (letters, digits, - _ .)")
    return name


LOCK_FILE = ".running"  # holds the driver's pid while a search runs


def lock_experiment(exp_dir: Path) -> contextlib.ExitStack:
    """Mark ``exp_dir`` as running (:func:`vpr_tune.atomic.file_lock` on ``.running``, which
    holds our pid) or raise UserError naming the pid of the driver that runs it. The kernel
    drops the lock when the driver exits, even by SIGKILL, so a stale file never blocks
    ``--resume``. ``close()`` the returned stack when the search ends."""
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(file_lock(exp_dir / LOCK_FILE, wait=False))
    except LockHeld as held:
        raise UserError(f"experiment {exp_dir.name!r} is already running, pid {held.holder} "
                        f"({exp_dir}); wait for it or pick another --name") from None
    return stack


def running_pid(exp_dir: Path) -> str | None:
    """The pid of the driver running ``exp_dir`` right now, or None (the file is only read)."""
    return lock_holder(exp_dir / LOCK_FILE)


def failure_summary(trials: pd.DataFrame) -> str:
    """``N ERROR, M DIVERGED; most common error (K trials): MESSAGE`` for the trials of a
    search in which none finished."""
    status = trials["status"].astype(str)
    counts = ", ".join(f"{n} {s}" for s, n in status.value_counts().items())
    errors = trials.get("error", pd.Series(dtype=str)).fillna("").astype(str)
    errors = errors[errors.str.strip() != ""]
    if errors.empty:
        return counts
    top, n = errors.value_counts().index[0], int(errors.value_counts().iloc[0])
    return f"{counts}; most common error ({n} of {len(trials)} trials): {top}"


def all_failed(trials: pd.DataFrame) -> bool:
    """True when every trial ended ERROR or DIVERGED (none left to run or rank)."""
    return not trials.empty and trials["status"].astype(str).isin(statuses.FAILED).all()


def newest_experiment(storage: str | None = None) -> Path:
    """The most recently written experiment with a ``trials.csv``."""
    root = storage_root(storage)
    found = sorted(root.glob("*/trials.csv"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UserError(f"no experiment in {root}: run `vpr-tune run SPACE.yaml` first")
    return found[-1].parent


EPOCH_LOG = "epochs.jsonl"  # every reported row, appended by the driver as it arrives


def read_result_rows(trial_dir: Path, name: str = "result.json") -> list[dict[str, Any]]:
    """The trial's reported rows from Ray's ``result.json`` (JSON lines; torn tail skipped)."""
    path = Path(trial_dir) / name
    return parse_result_rows(path.read_text()) if path.exists() else []


def parse_result_rows(text: str) -> list[dict[str, Any]]:
    """JSON lines -> rows; a torn last line (being written) is skipped."""
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _error_message(trial: Any) -> str:
    path = getattr(trial, "error_file", None)
    if path and Path(path).exists():
        lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
        # our own errors are the whole story: no exception class in front
        return lines[-1].removeprefix("vpr_tune.errors.UserError: ")[:500] if lines else ""
    return ""


def append_epoch_row(exp_dir: Path, result: dict[str, Any]) -> None:
    """Keep a reported row in ``epochs.jsonl``: Ray rewrites a restored trial's result.json
    from its last synced copy (PBT restores often), which can drop recent rows. ``arrived``:
    when the driver received it (Unix seconds, sub-second; Ray's ``timestamp`` is whole
    seconds), the ``timestamp`` of the row in metrics.csv."""
    keep = {k: v for k, v in result.items() if isinstance(v, (int, float, str)) and (
        k in metrics.REPORTED or k in ("trial_id", "epoch", "timestamp", "time_total_s", "diverged",
                              "error", "node_id", "checkpoint_dir_name", "pid", "arrived"))}
    keep.setdefault("arrived", round(time.time(), 6))
    with open(Path(exp_dir) / EPOCH_LOG, "a") as fh:
        fh.write(json.dumps(keep) + "\n")


def trial_rows(trial: Any, logged: list[dict[str, Any]] | None = None
               ) -> list[dict[str, Any]]:
    """Every epoch row a Ray ``Trial`` reported (repeats included; ``logged``: its rows
    from ``epochs.jsonl``)."""
    # The driver writes result.json in its staging folder and syncs it to storage later.
    rows = [r for d in (trial.local_path, trial.path) if d for r in read_result_rows(Path(d))]
    remote = remote_trial_file(trial, "result.json")  # a trial Ray keeps on an object store
    rows += parse_result_rows(remote) if remote else []
    return [r for r in rows + list(logged or []) if "epoch" in r]


def trial_record(trial: Any, base: dict[str, Any], metric: str = metrics.DEFAULT_METRIC,
                 running: bool = False, budget: bool = False,
                 logged: list[dict[str, Any]] | None = None,
                 status: str | None = None) -> dict[str, Any]:
    """One trials.csv row (+ ``_rows`` the per-epoch metrics) from a Ray ``Trial``;
    ``running``: cut short by an interrupt, ``budget``: and the time budget is spent;
    ``logged``: its rows from ``epochs.jsonl``; ``status``: Ray's status when it is known
    before ``trial.status`` says so (trial-end callbacks)."""
    rows = trial_rows(trial, logged)
    # A trial resumed from a checkpoint older than its last report (the driver was killed
    # between two experiment-state saves, or PBT cloned an earlier checkpoint) repeats those
    # epochs: the later row wins.
    rows.sort(key=lambda r: r.get("timestamp", 0))
    rows = sorted({int(r["epoch"]): r for r in rows}.values(), key=lambda r: int(r["epoch"]))
    good = [r for r in rows if not r.get("diverged")]
    config = {k: v for k, v in trial.config.items() if v is not None}  # PBT placeholders
    cfg = materialize(base, config)
    max_epochs = int(cfg["budget"]["max_epochs"])
    status = status or str(trial.status)
    diverged = any(r.get("diverged") for r in rows)
    # Epochs reached, not rows: a row can be lost when a worker dies right after its report
    # (the trial then continues from that checkpoint).
    reached = max((int(r["epoch"]) for r in good), default=0)
    if status == "ERROR":
        pass
    elif diverged:
        status = "DIVERGED"
    elif budget and (running or status != "TERMINATED" or not rows):
        status = "STOPPED_BUDGET"  # ended (or never started) when search.time_budget ran out
    elif status == "TERMINATED" and not rows:  # Ctrl-C before it started: Ray says TERMINATED
        status = "PENDING"
    elif running:  # stopped by Ctrl-C, continues from its checkpoint on --resume
        status = "RUNNING"
    elif status == "TERMINATED":
        status = "STOPPED_EARLY" if reached < max_epochs else "TERMINATED"
    elif status in ("PAUSED", "RUNNING"):
        status = "RUNNING"
    else:
        status = "PENDING"
    error = _error_message(trial) if status == "ERROR" else ""
    if diverged:
        error = next((r.get("error", "") for r in rows if r.get("diverged")), "")
    record: dict[str, Any] = {"trial_id": trial.trial_id, "status": status,
                              **dict(sorted((k, v) for k, v in config.items()
                                            if ALIAS_MARK not in k))}
    record.update(summary_values(good))  # PBT: over its lineage, see trial_tables
    # Costs, one value per trial: descriptor size and parameters at the best epoch of the
    # ranking metric (they never change), query time as the median over the trial's epochs.
    mode = metrics.mode_of({**cfg["search"], "metric": metric})
    best = metrics.best_index([r.get(metric) for r in good], mode)
    for m in metrics.COSTS:
        vals = [float(r[m]) for r in good if r.get(m) is not None]
        record[m] = (None if not vals else float(pd.Series(vals).median())
                     if m == metrics.QUERY_MS else good[best or 0].get(m, vals[-1]))
    record["epochs"] = reached
    record["time_s"] = rows[-1].get("time_total_s") if rows else None
    record["node_id"] = rows[-1].get("node_id", "") if rows else ""
    record["error"] = error
    remote = remote_checkpoint(trial, good)  # s3://... when Ray stores the trial remotely
    record["checkpoint"] = remote if remote is not None else _best_checkpoint(
        Path(trial.path or ""), good, metric, mode)
    record["_rows"] = [{"trial_id": trial.trial_id, "epoch": int(r["epoch"]),
                        **{m: r.get(m) for m in metrics.REPORTED},
                        "timestamp": finished_at(r)} for r in good]
    return record


def summary_values(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``best_``/``last_`` columns of every metric a search may rank on, over ``rows``
    (epoch order; each best in its metric's direction)."""
    out: dict[str, Any] = {}
    for m in metrics.SEARCHABLE:
        vals = [r[m] for r in rows if r.get(m) is not None]
        out[metrics.summary_column(m, "best")] = metrics.best_value(vals, metrics.direction(m))
        out[metrics.summary_column(m, "last")] = vals[-1] if vals else None
    return out


def lineage_rows(exp_dir: Path, records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """PBT/PB2: each record's epoch rows along its lineage (:func:`lineage_epochs`): up to an
    exploit the rows of the trial whose weights it copied, then its own; ``{}`` for other
    searches and before the first exploit. A trial's best is over these epochs: the weights,
    and the best.pt, it goes on from (an exploit restores both), not its dropped ones."""
    moves = read_perturbations(exp_dir)
    if moves is None or moves.empty:
        return {}
    by_key = {(r["trial_id"], int(r["epoch"])): r for rec in records for r in rec["_rows"]}
    epochs = lineage_epochs(moves, {rec["trial_id"]: int(rec["epochs"]) for rec in records})
    return {trial_id: [by_key[key] for epoch, ran_in in path
                       if (key := (ran_in, epoch)) in by_key]
            for trial_id, path in epochs.items()}


def finished_at(row: dict[str, Any]) -> float | None:
    """When a reported epoch finished (Unix seconds): the driver's ``arrived`` time from
    epochs.jsonl, else Ray's whole-second ``timestamp``; None when neither is known."""
    for key in ("arrived", "timestamp"):
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def _best_checkpoint(trial_dir: Path, rows: list[dict[str, Any]], metric: str,
                     mode: str = "max") -> str:
    """The best model of the trial: ``best.pt`` in its newest checkpoint folder (each folder
    carries the best model so far); else the kept ``checkpoint.pt`` with the best ``metric``
    under ``mode``."""
    from vpr_tune.tune.trainable import BEST_FILE, CHECKPOINT_FILE

    kept = [r for r in rows if r.get("checkpoint_dir_name")
            and (trial_dir / r["checkpoint_dir_name"] / CHECKPOINT_FILE).exists()]
    if not kept:
        return ""
    newest = trial_dir / kept[-1]["checkpoint_dir_name"] / BEST_FILE
    if newest.exists():
        return str(newest.resolve())
    best = kept[metrics.best_index([r.get(metric) for r in kept], mode) or 0]  # first of equal
    return str((trial_dir / best["checkpoint_dir_name"] / CHECKPOINT_FILE).resolve())


def trial_tables(exp_dir: Path, trials: list[Any], base: dict[str, Any],
                 metric: str = metrics.DEFAULT_METRIC, running: set[str] | None = None,
                 budget: bool = False, cache: dict[str, tuple[str, dict[str, Any]]] | None = None,
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials frame, metrics frame) of ``trials`` (ids in ``running`` were cut short by an
    interrupt, or by the time budget when ``budget``). With ``cache`` (a dict kept between
    calls) a finished trial's row is built once, not at every call: a search that rewrites
    its tables at every trial end then copies finished rows instead of reading every
    trial's result.json again (which made the writes of a search quadratic in its trials)."""
    def cached(t: Any) -> dict[str, Any] | None:
        hit = cache.get(t.trial_id) if cache is not None else None
        cut = budget or t.trial_id in (running or ())
        return hit[1] if hit is not None and not cut and hit[0] == str(t.status) else None

    # rows in sampling order (a resumed search's Ray re-adds trials by last result time),
    # then by id: the same trials give the same tables whatever order Ray lists them in
    trials = sorted(trials, key=_sampling_key)
    logged: dict[str, list[dict[str, Any]]] = {}
    if any(cached(t) is None for t in trials):
        for row in read_result_rows(Path(exp_dir), EPOCH_LOG):
            logged.setdefault(row.get("trial_id", ""), []).append(row)
    records, fresh = [], []
    for t in trials:
        record = cached(t)
        if record is None:
            cut = t.trial_id in (running or ())
            record = trial_record(t, base, metric, cut, budget, logged.get(t.trial_id))
            if not cut and not budget and str(t.status) in statuses.RAY_FINAL:
                fresh.append(record)
                if cache is not None:
                    cache[t.trial_id] = (str(t.status), record)
        records.append(record)
    lineages = lineage_rows(Path(exp_dir), records)
    for record in records:  # PBT: best_ columns over the lineage (a cached row's too)
        if record["trial_id"] in lineages:
            record.update(summary_values(lineages[record["trial_id"]]))
    for record in fresh:
        record.update(best_intervals(exp_dir, record, lineages.get(record["trial_id"])))
    curves = [row for r in records for row in r["_rows"]]
    fixed = ["trial_id", "status"]
    tail = [*metrics.summary_columns(), *metrics.recall_interval_columns(), *metrics.COSTS,
            "epochs", "time_s", "node_id", "error", "checkpoint"]
    frame = pd.DataFrame([{k: v for k, v in r.items() if k != "_rows"} for r in records],
                         columns=None if records else fixed + tail)
    frame = frame.reindex(columns=[*frame.columns, *(c for c in tail if c not in frame)])
    params = sorted(c for c in frame.columns if c not in fixed + tail)
    frame = frame[fixed + params + tail]
    if base["search"].get("objectives"):  # multi-objective: mark the Pareto-optimal trials
        from vpr_tune.tune.pareto import pareto_flags

        objectives = [(metrics.objective_column(m), mode)
                      for m, mode in metrics.objectives_of(base["search"])]
        frame.insert(frame.columns.get_loc("epochs"), "pareto", pareto_flags(frame, objectives))
    return frame, pd.DataFrame(curves, columns=CURVE_COLUMNS)


# metrics.csv: one row per trial-epoch, by trial (trials.csv order) then epoch; ``timestamp``
# says when the epoch finished, the order best-so-far curves take the rows in.
CURVE_COLUMNS = ["trial_id", "epoch", *metrics.REPORTED, "timestamp"]


def _sampling_key(trial: Any) -> tuple[bool, int, str]:
    from vpr_tune.tune.ray_internals import sampling_index

    index = sampling_index(trial)
    return index is None, index or 0, str(trial.trial_id)


def best_intervals(exp_dir: Path, record: dict[str, Any],
                   rows: list[dict[str, Any]] | None = None) -> dict[str, float]:
    """The 95 % bootstrap interval over val queries of each ``best_val/R@N`` of a trial
    record, at the epoch that value was reached (from the ranks file of the trial that ran
    it; none: no columns); ``rows``: the epochs its best is over (default: its own)."""
    from vpr_tune.uncertainty import load_ranks, ranks_path, recall_interval

    rows = record["_rows"] if rows is None else rows
    ranks: dict[str, dict[int, Any]] = {}  # by the trial that ran the epoch
    out: dict[str, float] = {}
    for m, n in zip(metrics.VAL_RECALLS, metrics.RECALL_NS, strict=True):
        best = metrics.best_index([r.get(m) for r in rows], "max")
        if best is None:
            continue
        ran_in, epoch = str(rows[best]["trial_id"]), int(rows[best]["epoch"])
        if ran_in not in ranks:
            ranks[ran_in] = load_ranks(ranks_path(exp_dir, ran_in))
        if epoch in ranks[ran_in]:
            lo, hi = recall_interval(ranks[ran_in][epoch], n)
            out.update(zip(metrics.interval_columns(metrics.summary_column(m)),
                           (round(lo, 4), round(hi, 4)), strict=True))
    return out


def write_tables(exp_dir: Path, trials: list[Any], base: dict[str, Any],
                 metric: str = metrics.DEFAULT_METRIC, running: set[str] | None = None,
                 budget: bool = False,
                 cache: dict[str, tuple[str, dict[str, Any]]] | None = None) -> pd.DataFrame:
    """Write ``trials.csv`` and ``metrics.csv`` for ``trials`` (see :func:`trial_tables`);
    returns the trials frame."""
    frame, curves = trial_tables(exp_dir, trials, base, metric, running, budget, cache)
    write_table(frame, Path(exp_dir) / "trials.csv")
    write_table(curves, Path(exp_dir) / "metrics.csv")
    return frame


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """``write_csv``; a full disk is a UserError naming the file (the old table stays)."""
    try:
        write_csv(frame, path)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise UserError(f"no space left on device: {path}") from exc
        raise
