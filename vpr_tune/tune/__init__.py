"""``vpr-tune run``: a YAML search space -> a Ray Tune experiment in ``results/<name>/``.

Here: ``run_experiment`` (resolve, then a dry run or the search), the best trial at the
end. The modules:

- ``sampling``: trials drawn from the space (grid points, Optuna define-by-run, warm start)
- ``searchers``: the plan's checks and notes, the Ray search algorithm, the trial scheduler
- ``samplers``: Optuna samplers by name; ``optuna_study``: the study in optuna.db
- ``pbt``: PBT/PB2 on the declared space; ``lineage``: what a PBT trial trained with
- ``moasha``: multi-objective ASHA; ``pareto``: Pareto fronts, hypervolume
- ``ray_session``: start/join/stop Ray, resources per node, log filter, SIGTERM
- ``tuner``: the Ray Tune Tuner, started or restored
- ``trial_progress``: the progress callback (tables at trial ends, one line each)
- ``prepare``: the data checked and cached before Ray starts
- ``trainable``: one trial; ``results``: experiment folders, trials.csv / metrics.csv
- ``checkpoints``, ``ray_internals``: checkpoint retention, the private Ray parts relied on
- ``storage``: object stores; ``tracking``: MLflow; ``tensorboard_log``: TensorBoard
- ``space_record``: space.yaml, written at the start and checked by ``--resume``
- ``estimate``: ``run --estimate``; ``estimate_model``: its arithmetic; ``estimate_timing``:
  its timings on this machine

Reading an experiment back (``vpr_tune.analysis``, ``vpr_tune.retest``) sits above this
package and is never imported here. Imports of Ray/torch happen inside functions so
``import vpr_tune.tune`` stays cheap.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable
from dataclasses import dataclass
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
    sides that are multiples of its patch size), and every eval size fits the backbone and
    the aggregator (``components.eval_image_size_problem``), checked before anything starts;
    a leaf with a ``when`` is left to the trial (its pairings depend on other keys)."""
    from itertools import product

    from vpr_tune.components import eval_image_size_problem, image_size_problem
    from vpr_tune.leaf_values import possible_values

    def values(dotted: str) -> list[Any]:
        leaves = [p for p in space.params.values() if p.path == dotted]
        if not leaves:
            node = space.base
            for key in dotted.split("."):
                node = node[key]
            return [node]
        return [v for p in leaves if not p.when for v in possible_values(p)]

    for backbone, size in product(values("model.backbone"), values("data.image_size")):
        problem = image_size_problem(backbone, size)
        for aggregator, eval_size in product(values("model.aggregator.name"),
                                             values("data.eval_image_size")):
            problem = problem or eval_image_size_problem(backbone, aggregator, size, eval_size)
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
    log: Callable[[str], Any] = print, mlflow: str | None = None, reproducible: bool = False,
) -> Path | None:
    """Everything ``vpr-tune run`` does; returns the experiment folder (None for dry runs):
    resolve (where, what, on which data; every refusal before anything starts), then a dry
    run (the plan and the cluster check) or the search itself. ``reproducible``: set
    ``search.reproducible`` (``--reproducible``)."""
    run = _locate(space_path, name, storage, resume, dry_run)
    _resolve(run, data, num_samples, max_concurrent, time_budget, mlflow, resume, log,
             reproducible)
    if warm_start and not resume:
        from vpr_tune.tune.results import experiment_dir
        from vpr_tune.tune.sampling import load_warm_start

        run.warm = load_warm_start(run.space, experiment_dir(
            warm_start, run.storage if run.remote is None else None))
        log(f"warm start: {len(run.warm)} finished trial(s) of {warm_start} given to the "
            "sampler")
    if dry_run:
        _dry_run(run, address, log)
        return None
    return _start(run, address, resume, log)


@dataclass
class _Run:
    """One ``vpr-tune run``, resolved: the space, the experiment's name and places, the data."""

    space_path: Path
    space: Any
    name: str
    storage: str | None
    exp_dir: Path  # our tables (and Ray's experiment, unless remote)
    remote: str | None = None  # Ray's experiment on an object store (s3://...)
    remote_exists: bool = False
    data_root: Path = Path()
    trials: int = 0
    mlflow: str | None = None
    warm: list[tuple[dict[str, Any], float]] | None = None
    dry_run: bool = False


def _locate(space_path: Path, name: str | None, storage: str | None, resume: bool,
            dry_run: bool) -> _Run:
    """The experiment's name and folders; refused when it is running, missing for
    ``--resume``, or taken for a new search."""
    from vpr_tune.config import load_space
    from vpr_tune.tune import storage as storage_mod
    from vpr_tune.tune.results import check_name, experiment_dir, running_pid, storage_root

    space = load_space(space_path)  # on --resume replaced by the recorded space (_resolve)
    storage = storage or space.base.get("storage")
    if name is not None:
        check_name(name, "--name")
    elif space.base.get("name"):
        name = check_name(str(space.base["name"]), f"{space_path}: name:")
    name = name or f"{Path(space_path).stem}-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    remote = storage_mod.is_remote(storage)  # Ray writes there, our tables go to results/<name>
    run = _Run(space_path, space, name, storage,
               experiment_dir(name, None if remote else storage), dry_run=dry_run)
    if remote:
        run.remote = storage_mod.join(storage, name)
        run.remote_exists = _remote_exists(run)
        if resume and not run.remote_exists:
            raise UserError(f"--resume: no experiment {name!r} at "
                            f"{storage_mod.public(run.remote)}")
        if resume and not (run.exp_dir / "space.yaml").exists():  # resumed on another machine
            storage_mod.pull(run.remote, run.exp_dir)
    pid = running_pid(run.exp_dir) if run.exp_dir.is_dir() else None
    if pid is not None and not dry_run:
        raise UserError(f"experiment {name!r} is already running, pid {pid} ({run.exp_dir})")
    if resume and run.remote is None and not run.exp_dir.exists():
        known = sorted(p.name for p in storage_root(storage).glob("*") if p.is_dir())
        raise UserError(f"--resume: no experiment {name!r} in {run.exp_dir.parent} "
                        f"(there: {', '.join(known) or 'none'})")
    if not resume and not dry_run:
        _refuse_taken(run)
    return run


def _remote_exists(run: _Run) -> bool:
    from ray import tune as ray_tune

    from vpr_tune.tune import storage as storage_mod

    try:
        return ray_tune.Tuner.can_restore(run.remote)
    except Exception as exc:  # pyarrow: unknown scheme, no credentials, no network
        raise UserError(f"storage {storage_mod.public(run.storage)}: cannot open ({exc})"
                        ) from exc


def _refuse_taken(run: _Run, locked: bool = False) -> None:
    """A new search needs a name no experiment has: on the object store, or here (a folder
    with files in it; once we hold the folder's lock, one with a space.yaml: another run
    won the race to this name)."""
    from vpr_tune.tune import storage as storage_mod

    exp_dir = run.exp_dir
    if locked:
        taken = exp_dir if (exp_dir / "space.yaml").exists() else None
    elif run.remote is not None:
        taken = storage_mod.public(run.remote) if run.remote_exists else None
    else:
        taken = exp_dir if exp_dir.exists() and any(exp_dir.iterdir()) else None
    if taken is not None:
        raise UserError(f"experiment {run.name!r} already exists at {taken}: pass --resume "
                        "to continue it or --name for a new one")


def _resolve(run: _Run, data: str | None, num_samples: int | None,
             max_concurrent: int | None, time_budget: str | None, mlflow: str | None,
             resume: bool, log: Callable[[str], Any], reproducible: bool = False) -> None:
    """The space as it will run (the recorded one on --resume, the command line's
    overrides), checked with the plan; the data checked (and cached); the plan printed."""
    from vpr_tune.config import TRACKING_URI_HELP, is_tracking_uri, parse_duration
    from vpr_tune.data.splits import resolve_data_root
    from vpr_tune.resolution import log_resolution
    from vpr_tune.tune.prepare import prepare_data
    from vpr_tune.tune.sampling import count_trials
    from vpr_tune.tune.searchers import check_plan, plan_line
    from vpr_tune.tune.space_record import recorded_inputs, recorded_reproducible
    from vpr_tune.tune.tracking import tracking_uri_problem

    recorded = None
    if resume and (run.exp_dir / "space.yaml").is_file():
        run.space, data = recorded_inputs(run.exp_dir, run.space, data)
        recorded = recorded_reproducible(run.exp_dir)
    space = run.space
    sconf = apply_overrides(space, num_samples, max_concurrent).base["search"]
    if recorded is not None:  # --resume keeps what the search was started with
        if reproducible and not recorded:
            raise UserError("--reproducible: the search was started without it; a search "
                            "cannot become reproducible half-way (start a new --name)")
        sconf["reproducible"] = recorded
    elif reproducible:
        sconf["reproducible"] = True
    run.mlflow = mlflow or space.base["tracking"]["mlflow"]
    if run.mlflow and not is_tracking_uri(run.mlflow):
        raise UserError(f"--mlflow: {TRACKING_URI_HELP}, got {run.mlflow!r}")
    if run.mlflow and (problem := tracking_uri_problem(run.mlflow)):
        # before anything is written: a refused run leaves no experiment folder behind
        raise UserError(f"--mlflow {run.mlflow}: {problem}")
    if time_budget is not None:
        try:
            parse_duration(time_budget)
        except ValueError as exc:
            raise UserError(f"--time-budget: {exc}") from None
        sconf["time_budget"] = time_budget
    notes = check_plan(space)
    check_image_sizes(space)
    run.data_root = resolve_data_root(data or space.base["data"]["root"],
                                      size=space.base["data"]["synth_size"], log=log)
    run.trials = count_trials(space, int(sconf["num_samples"]))
    summary = prepare_data(space, run.data_root, build_cache=not run.dry_run, log=log)
    log(f"space {run.space_path}: {plan_line(space, run.trials)}")
    log(f"data {run.data_root}: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    for note in notes:
        log(note)
    if run.dry_run:  # what the val split can resolve; a warning when coarse (noise.py)
        log_resolution(summary["val queries"], space.base["search"], log)


def _dry_run(run: _Run, address: str | None, log: Callable[[str], Any]) -> None:
    """Check the cluster it would use (this machine, or the one --address names) and print
    the resolved space."""
    import yaml

    from vpr_tune.tune.ray_session import (
        check_cluster_resources,
        init_ray,
        local_node,
        stop_ray,
    )

    space = run.space
    concurrent = int(space.base["search"]["max_concurrent"])
    if address or os.environ.get("RAY_ADDRESS"):
        started = init_ray(address)
        try:
            check_cluster_resources(space, concurrent)
        finally:
            if started:
                stop_ray()
    else:
        check_cluster_resources(space, concurrent, local_node())
    log(yaml.safe_dump({"base": space.base, "params": {
        p.id: {p.kind: p.args, **({"when": {k: list(v) for k, v in p.when.items()}}
                                    if p.when else {})}
        for p in space.params.values()}}, sort_keys=False))
    log("dry run: nothing started")


def _start(run: _Run, address: str | None, resume: bool, log: Callable[[str], Any]) -> Path:
    """Start Ray, take the experiment folder (its lock, space.yaml) and run the search;
    a folder this call created is removed when the search is refused before it starts."""
    from vpr_tune.tune.ray_env import set_ray_environment
    from vpr_tune.tune.ray_session import (
        check_cluster_resources,
        init_ray,
        quiet_trial_tracebacks,
        stop_ray,
    )
    from vpr_tune.tune.results import lock_experiment
    from vpr_tune.tune.space_record import record_space

    set_ray_environment()
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")
    exp_dir = run.exp_dir
    started_ray = init_ray(address)
    quiet_trial_tracebacks()
    created = not exp_dir.exists()
    lock = None
    try:
        check_cluster_resources(run.space, int(run.space.base["search"]["max_concurrent"]))
        try:
            lock = lock_experiment(exp_dir)  # from here on the folder is ours
        except UserError:
            created = False  # the folder belongs to the run that holds the lock
            raise
        if not resume:
            _refuse_taken(run, locked=True)
            record_space(run.exp_dir, run.space, run.data_root, run.trials, run.remote)
        created = False  # a started search keeps its folder, whatever happens next
        _search(run, resume, log)
    finally:
        if lock is not None:
            lock.close()
        if created and exp_dir.is_dir():  # refused before it started: leave nothing behind
            import shutil

            shutil.rmtree(exp_dir, ignore_errors=True)
        if started_ray:  # a Ray we started is ours to stop; a joined cluster keeps running
            stop_ray()
    return exp_dir


def _search(run: _Run, resume: bool, log: Callable[[str], Any]) -> None:
    """The Ray Tune search with our callbacks; then the best trial and the next commands.
    SearchFailed on SIGTERM and when no trial finished."""
    from vpr_tune.data.splits import is_synthetic
    from vpr_tune.tune import storage as storage_mod
    from vpr_tune.tune.optuna_study import STUDY_FILE, storage_url
    from vpr_tune.tune.ray_session import sigterm_stops_search
    from vpr_tune.tune.tracking import tracking_callbacks
    from vpr_tune.tune.trial_progress import progress_callback
    from vpr_tune.tune.tuner import run_tuner

    space, exp_dir, name, remote = run.space, run.exp_dir, run.name, run.remote
    sconf = space.base["search"]
    callbacks = [progress_callback(exp_dir, space, run.trials, log),
                 *tracking_callbacks(space, name, run.mlflow)]
    if remote:
        callbacks.append(storage_mod.sync_callback(exp_dir, remote))
    log(f"experiment {name}: {exp_dir}")
    if remote:
        log(f"Ray storage: {storage_mod.public(remote)} (tables also in {exp_dir})")
    resume_cmd = f"vpr-tune run {run.space_path} --name {name} --resume"
    try:
        with sigterm_stops_search() as stop:
            run_tuner(space, remote or exp_dir, run.data_root, int(sconf["num_samples"]),
                      int(sconf["max_concurrent"]), resume, callbacks, tables_dir=exp_dir,
                      warm=run.warm, study_db=exp_dir / STUDY_FILE
                      if sconf["algorithm"] == "optuna" else None)
    finally:
        finished = _report_best(exp_dir, sconf["metric"], sconf["mode"], log)
        log("reproducible: yes (decisions in sampling order; search.reproducible)"
            if sconf.get("reproducible") else "reproducible: no (results decide in the order "
            "they arrive; search.reproducible: true or --reproducible to fix it)")
        if is_synthetic(run.data_root):
            log(f"note: {SYNTHETIC_NOTE}")
        log(f"tensorboard --logdir {exp_dir}   |   vpr-tune best {name}   |   "
            f"resume: {resume_cmd}")
        if (exp_dir / STUDY_FILE).exists():
            log(f"optuna-dashboard {storage_url(exp_dir / STUDY_FILE)}")
    if stop["terminated"]:
        raise SearchFailed(f"stopped by SIGTERM; tables saved in {exp_dir}; continue "
                           f"with: {resume_cmd}", exit_code=143)
    if callbacks[0].interrupted:  # Ctrl-C: Ray stopped the search gracefully
        raise SearchFailed(f"interrupted; tables saved in {exp_dir}; continue with: "
                           f"{resume_cmd}", exit_code=130)
    if finished is not None:
        raise SearchFailed(f"experiment {name}: no trial finished: {finished}")


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
