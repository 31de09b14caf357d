"""``vpr-tune run``: a YAML search space -> a Ray Tune experiment in ``results/<name>/``.

Modules: ``search`` (sampling, Optuna, Tuner, resume), ``trainable`` (one trial),
``results`` (experiment folders, trials.csv / metrics.csv). Reading an experiment back
(``vpr_tune.analysis``, ``vpr_tune.retest``) sits above this package and is never imported here.
Imports of Ray/torch happen inside functions so ``import vpr_tune.tune`` stays cheap.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vpr_tune import SYNTHETIC_NOTE
from vpr_tune.errors import SearchFailed, UserError


def load_run_space(space_path: Path, num_samples: int | None = None,
                   max_concurrent: int | None = None) -> Any:
    """The validated space with ``--num-samples`` / ``--max-concurrent`` applied."""
    from vpr_tune.config import load_space

    space = apply_overrides(load_space(space_path), num_samples, max_concurrent)
    check_image_sizes(space)
    return space


def check_image_sizes(space: Any) -> None:
    """Every backbone the space can choose takes every image size it can choose (a ViT:
    sides that are multiples of its patch size), checked before anything starts; a leaf with
    a ``when`` is left to the trial (its pairings depend on other keys)."""
    from vpr_tune.components import image_size_problem
    from vpr_tune.leaf_values import possible_values

    def values(dotted: str) -> list[Any]:
        leaves = [p for p in space.params.values() if p.path == dotted]
        if not leaves:
            section, _, key = dotted.partition(".")
            return [space.base[section][key]]
        return [v for p in leaves if not p.when for v in possible_values(p)]

    for backbone in values("model.backbone"):
        for size in values("data.image_size"):
            problem = image_size_problem(backbone, size)
            if problem:
                raise UserError(f"{space.source}: {problem}")


def apply_overrides(space: Any, num_samples: int | None, max_concurrent: int | None) -> Any:
    """Set ``search.num_samples`` / ``search.max_concurrent`` from the command line."""
    sconf = space.base["search"]
    if num_samples is not None:
        if num_samples < 1:
            raise UserError(f"--num-samples must be at least 1, got {num_samples}")
        sconf["num_samples"] = num_samples
    if max_concurrent is not None:
        if max_concurrent < 1:
            raise UserError(f"--max-concurrent must be at least 1, got {max_concurrent}")
        sconf["max_concurrent"] = max_concurrent
    return space


def run_experiment(
    space_path: Path, name: str | None = None, data: str | None = None,
    num_samples: int | None = None, max_concurrent: int | None = None, resume: bool = False,
    address: str | None = None, storage: str | None = None, dry_run: bool = False,
    time_budget: str | None = None, warm_start: str | None = None,
    log: Callable[[str], Any] = print, mlflow: str | None = None,
) -> Path | None:
    """Everything ``vpr-tune run`` does; returns the experiment folder (None for dry runs)."""
    import yaml

    from vpr_tune.config import load_space
    from vpr_tune.data.splits import is_synthetic, resolve_data_root
    from vpr_tune.tune import search
    from vpr_tune.tune import storage as storage_mod
    from vpr_tune.tune.results import (
        check_name,
        experiment_dir,
        lock_experiment,
        running_pid,
        storage_root,
    )

    space = load_space(space_path)  # on --resume replaced by the recorded space below
    storage = storage or space.base.get("storage")
    if name is not None:
        check_name(name, "--name")
    elif space.base.get("name"):
        name = check_name(str(space.base["name"]), f"{space_path}: name:")
    name = name or f"{Path(space_path).stem}-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    remote = None  # a URI (s3://...): Ray writes there, our tables go to results/<name>
    if storage_mod.is_remote(storage):
        from ray import tune as ray_tune

        remote = storage_mod.join(storage, name)
        exp_dir = experiment_dir(name, None)
        try:
            exists = ray_tune.Tuner.can_restore(remote)
        except Exception as exc:  # pyarrow: unknown scheme, no credentials, no network
            raise UserError(f"storage {storage_mod.public(storage)}: cannot open ({exc})"
                            ) from exc
        shown = storage_mod.public(remote)
        if resume and not exists:
            raise UserError(f"--resume: no experiment {name!r} at {shown}")
        if not resume and not dry_run and exists:
            raise UserError(f"experiment {name!r} already exists at {shown}: pass --resume")
        if resume and not (exp_dir / "space.yaml").exists():  # resumed on another machine
            storage_mod.pull(remote, exp_dir)
    else:
        exp_dir = experiment_dir(name, storage)
    pid = running_pid(exp_dir) if exp_dir.is_dir() else None
    if pid is not None and not dry_run:
        raise UserError(f"experiment {name!r} is already running, pid {pid} ({exp_dir})")
    if resume and remote is None and not exp_dir.exists():
        known = sorted(p.name for p in storage_root(storage).glob("*") if p.is_dir())
        raise UserError(f"--resume: no experiment {name!r} in {exp_dir.parent} "
                        f"(there: {', '.join(known) or 'none'})")
    if not resume and exp_dir.exists() and any(exp_dir.iterdir()) and not dry_run and (
            remote is None):
        raise UserError(f"experiment {name!r} already exists at {exp_dir}: pass --resume to "
                        "continue it or --name for a new one")
    if resume and (exp_dir / "space.yaml").is_file():
        space, data = _recorded_inputs(exp_dir, space, data)
    if not space.params:
        raise UserError(f"{space_path}: no searched parameter, so every trial would be the "
                        f"same run; use `vpr-tune train {space_path}` for one run, or search "
                        "the seed for repeats: seed: {choice: [0, 1, 2]}")
    sconf = apply_overrides(space, num_samples, max_concurrent).base["search"]
    mlflow = mlflow or space.base["tracking"]["mlflow"]
    if mlflow:
        from vpr_tune.config import TRACKING_URI_HELP, is_tracking_uri

        if not is_tracking_uri(mlflow):
            raise UserError(f"--mlflow: {TRACKING_URI_HELP}, got {mlflow!r}")
    if time_budget is not None:
        from vpr_tune.config import parse_duration

        try:
            parse_duration(time_budget)
        except ValueError as exc:
            raise UserError(f"--time-budget: {exc}") from None
        sconf["time_budget"] = time_budget
    notes = search.check_plan(space)
    check_image_sizes(space)
    data_root = resolve_data_root(data or space.base["data"]["root"],
                                  size=space.base["data"]["synth_size"], log=log)
    n = search.count_trials(space, int(sconf["num_samples"]))
    summary = search.prepare_data(space, data_root, build_cache=not dry_run, log=log)
    log(f"space {space_path}: {search.plan_line(space, n)}")
    log("data " + str(data_root) + ": " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    for note in notes:
        log(note)
    warm = None
    if warm_start and not resume:
        warm = search.load_warm_start(space, experiment_dir(warm_start, storage
                                                            if remote is None else None))
        log(f"warm start: {len(warm)} finished trial(s) of {warm_start} given to the sampler")
    if dry_run:
        # the cluster it would use: this machine, or the one --address names
        if address or os.environ.get("RAY_ADDRESS"):
            started = search.init_ray(address)
            try:
                search.check_cluster_resources(space, int(sconf["max_concurrent"]))
            finally:
                if started:
                    search.stop_ray()
        else:
            search.check_cluster_resources(space, int(sconf["max_concurrent"]),
                                           search.local_node())
        log(yaml.safe_dump({"base": space.base, "params": {
            p.id: {p.kind: p.args, **({"when": {k: list(v) for k, v in p.when.items()}}
                                        if p.when else {})}
            for p in space.params.values()}}, sort_keys=False))
        log("dry run: nothing started")
        return None

    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")
    started_ray = search.init_ray(address)
    search.quiet_trial_tracebacks()
    created = not exp_dir.exists()
    lock = None
    try:
        search.check_cluster_resources(space, int(sconf["max_concurrent"]))
        try:
            lock = lock_experiment(exp_dir)  # from here on the folder is ours
        except UserError:
            created = False  # the folder belongs to the run that holds the lock
            raise
        if not resume:
            from vpr_tune.atomic import write_text
            from vpr_tune.data.fingerprint import data_fingerprint

            if (exp_dir / "space.yaml").exists():  # another run won the race to this name
                raise UserError(f"experiment {name!r} already exists at {exp_dir}: pass "
                                "--resume to continue it or --name for a new one")
            resolved = {**space.raw, "resolved": {
                "data_root": str(data_root), "trials": n, "experiment": str(exp_dir),
                "data_fingerprint": data_fingerprint(data_root)}}
            if remote:
                resolved["resolved"]["storage"] = storage_mod.public(remote)
            write_text(exp_dir / "space.yaml", yaml.safe_dump(resolved, sort_keys=False))
            if remote:
                storage_mod.push(exp_dir, remote, ("space.yaml",))
        created = False  # a started search keeps its folder, whatever happens next
        from vpr_tune.tune.optuna_study import STUDY_FILE, storage_url
        from vpr_tune.tune.tracking import tracking_callbacks

        callbacks = [search.progress_callback(exp_dir, space, n, log),
                     *tracking_callbacks(space, name, mlflow)]
        if remote:
            callbacks.append(storage_mod.sync_callback(exp_dir, remote))
        log(f"experiment {name}: {exp_dir}")
        if remote:
            log(f"Ray storage: {storage_mod.public(remote)} (tables also in {exp_dir})")
        resume_cmd = f"vpr-tune run {space_path} --name {name} --resume"
        try:
            with search.sigterm_stops_search() as stop:
                search.run_tuner(space, remote or exp_dir, data_root,
                                 int(sconf["num_samples"]), int(sconf["max_concurrent"]),
                                 resume, callbacks, tables_dir=exp_dir, warm=warm,
                                 study_db=exp_dir / STUDY_FILE
                                 if sconf["algorithm"] == "optuna" else None)
        finally:
            finished = _report_best(exp_dir, sconf["metric"], sconf["mode"], log)
            if is_synthetic(data_root):
                log(f"note: {SYNTHETIC_NOTE}")
            log(f"tensorboard --logdir {exp_dir}   |   vpr-tune best {name}   |   "
                f"resume: {resume_cmd}")
            if (exp_dir / STUDY_FILE).exists():
                log(f"optuna-dashboard {storage_url(exp_dir / STUDY_FILE)}")
        if stop["terminated"]:
            raise SearchFailed(f"stopped by SIGTERM; tables saved in {exp_dir}; continue "
                               f"with: {resume_cmd}", exit_code=143)
        if finished is not None:
            raise SearchFailed(f"experiment {name}: no trial finished: {finished}")
    finally:
        if lock is not None:
            lock.close()
        if created and exp_dir.is_dir():  # refused before it started: leave nothing behind
            import shutil

            shutil.rmtree(exp_dir, ignore_errors=True)
        if started_ray:  # a Ray we started is ours to stop; a joined cluster keeps running
            search.stop_ray()
    return exp_dir


def _recorded_inputs(exp_dir: Path, space: Any, data: str | None) -> tuple[Any, str]:
    """``--resume`` continues the search as it was recorded in ``space.yaml``: its space and
    data root. A changed YAML or a different ``--data`` is a UserError showing the change."""
    from vpr_tune.config import read_yaml, space_from_dict

    path = exp_dir / "space.yaml"
    recorded = read_yaml(path.read_text(), str(path)) or {}
    resolved = recorded.pop("resolved", {}) or {}
    diff = _diff(recorded, space.raw)
    if diff:
        raise UserError(f"--resume: {space.source} differs from the space the search was "
                        f"started with ({path}): {'; '.join(diff[:5])}; resume without "
                        "editing it, or start a new --name")
    root = resolved.get("data_root")
    if data is not None and root and Path(data).expanduser().resolve() != Path(root):
        raise UserError(f"--resume: --data {data} differs from the data the search used "
                        f"({root}, recorded in {path}); drop --data to resume on it")
    return space_from_dict(recorded, str(path)), root or data


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``key: was X, now Y`` for every leaf that differs between two parsed YAML trees."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in [*old, *(k for k in new if k not in old)]:
            out += _diff(old.get(key, "(absent)"), new.get(key, "(absent)"), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: was {old!r}, now {new!r}"]


def _report_best(exp_dir: Path, metric: str, mode: str, log: Callable[[str], Any]) -> str | None:
    """Print the best trial; returns the failure summary when every trial failed."""
    import pandas as pd

    from vpr_tune.metrics import best_index, summary_column
    from vpr_tune.tune.results import all_failed, failure_summary, read_table

    path = exp_dir / "trials.csv"
    if not path.exists():
        return None
    frame = read_table(path)
    if all_failed(frame):
        return failure_summary(frame)
    ok = frame[~frame["status"].isin(["ERROR", "DIVERGED"])]
    col = summary_column(metric)
    best = best_index(ok[col], mode) if col in ok else None
    if best is None:
        log("no trial finished an epoch")
        return None
    row = ok.iloc[best]
    params = {c: row[c] for c in frame.columns if "." in c and pd.notna(row[c])}
    log(f"best trial {row['trial_id']}: {metric} {row[col]:.4g} after {row['epochs']} "
        f"epochs; " + ", ".join(f"{k}={v}" for k, v in params.items()))
    log(f"checkpoint: {row['checkpoint']}")
    return None
