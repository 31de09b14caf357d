"""The Ray Tune ``Tuner`` of a search: started, or restored for ``--resume``, with the
searcher, the scheduler, the callbacks and the checkpoint retention."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vpr_tune import metrics
from vpr_tune.config import POPULATION_SCHEDULERS, Space
from vpr_tune.errors import UserError
from vpr_tune.tune.ray_internals import has_saved_state
from vpr_tune.tune.searchers import build_search_alg, trial_scheduler

KEPT_ON_RESTART = ("space.yaml",)  # and dotfiles (the .running lock)


def set_aside_unsaved_run(folders: list[Path]) -> str:
    """Move what a run stopped before Ray's first saved state left in ``folders`` (tables,
    epochs.jsonl, trial folders, optuna.db, tuner.pkl) into ``.unsaved-<n>/`` of each, so a
    fresh start sees none of it and nothing written is lost. Returns where, in words."""
    where = []
    for folder in dict.fromkeys(folders):
        if not folder.is_dir():
            continue
        items = [p for p in folder.iterdir()
                 if p.name not in KEPT_ON_RESTART and not p.name.startswith(".")]
        if not items:
            continue
        n = sum(1 for p in folder.glob(".unsaved-*")) + 1
        target = folder / f".unsaved-{n}"
        target.mkdir()
        for path in items:
            shutil.move(str(path), target / path.name)
        where.append(f"{len(items)} file(s) in {target}")
    return "; ".join(where)


def run_tuner(space: Space, exp_dir: Path | str, data_root: Path, num_samples: int,
              max_concurrent: int, resume: bool, callbacks: list[Any],
              tables_dir: Path | None = None,
              warm: list[tuple[dict[str, Any], float]] | None = None,
              study_db: Path | None = None, log: Callable[[str], None] = print) -> Any:
    """Start (or restore) the Ray Tune experiment at ``exp_dir`` (a path or a URI such as
    ``s3://bucket/vpr/<name>``); returns the ResultGrid. ``tables_dir``: where our tables
    go (default ``exp_dir``); ``warm``: earlier (params, value) pairs for the sampler;
    ``study_db``: the Optuna study file."""
    from ray import tune

    from vpr_tune.config import parse_duration
    from vpr_tune.tune.checkpoints import retention_callback
    from vpr_tune.tune.ranks_log import ranks_callback
    from vpr_tune.tune.trainable import make_trainable

    search, res = space.base["search"], space.base["resources"]
    trainable = make_trainable(space.base, data_root, res["cpu"], res["gpu"])
    population = search["scheduler"] in POPULATION_SCHEDULERS
    # Ray keeps every checkpoint folder; the retention callback deletes the ones no resume
    # can need (checkpoints.py says why not Ray's num_to_keep). PBT: all are kept, a trial
    # that cloned another restores from the other's folder.
    retention = [] if population else [retention_callback(
        metrics.objectives_of(search), int(search["keep_checkpoints"]))]
    # first: the ranks a result carries are on disk before any table is written from it
    callbacks = [ranks_callback(Path(tables_dir or exp_dir)), *callbacks]
    if resume and not has_saved_state(str(exp_dir)):
        moved = set_aside_unsaved_run([Path(tables_dir or exp_dir)] + (
            [] if "://" in str(exp_dir) else [Path(exp_dir)]))
        log(f"nothing to resume: the search was stopped before Ray saved its first state; "
            f"starting it from the beginning ({moved or 'no files'} set aside)")
        resume = False
    if resume:
        if not tune.Tuner.can_restore(str(exp_dir)):
            raise UserError(f"{exp_dir}: no Ray experiment state to resume from")
        tuner = tune.Tuner.restore(str(exp_dir), trainable, resume_unfinished=True,
                                   resume_errored=True)
        from vpr_tune.tune.ray_internals import set_callbacks, set_scheduler

        set_callbacks(tuner, [*callbacks, *retention])
        if not population:  # its rungs and decisions, from epochs.jsonl (ray#30838)
            set_scheduler(tuner, trial_scheduler(space, Path(tables_dir or exp_dir),
                                                 resume=True))
        return tuner.fit()
    from vpr_tune.tune.storage import split

    parent, name = split(str(exp_dir))  # a URI's parameters (endpoint) stay on the parent
    alg, n = build_search_alg(space, num_samples, max_concurrent, warm, study_db, name)
    tuner = tune.Tuner(
        trainable,
        # PBT's points: Ray checks every preset key against param_space; a key a point lacks
        # (a conditional one) stays None and is dropped by the trial.
        param_space={k: None for k in getattr(alg, "_points", ())},
        tune_config=tune.TuneConfig(
            search_alg=alg, num_samples=n,
            scheduler=trial_scheduler(space, Path(tables_dir or exp_dir)),
            time_budget_s=parse_duration(search["time_budget"]),
            # Reuse a worker process for the next trial (no process start, no imports): PBT
            # restarts a trial at every exploit; FIFO trials end by returning. Safe because
            # train_trial builds all its state (seeded trainer, threads, scratch) per call.
            # Not under ASHA: a stopped trial is still training its next epoch, Ray's reset
            # waits 2 s for it and then fails the *new* trial.
            reuse_actors=population or search["scheduler"] == "fifo"),
        run_config=tune.RunConfig(
            name=name, storage_path=parent, callbacks=[*callbacks, *retention],
            verbose=0, checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            failure_config=tune.FailureConfig(max_failures=int(search["max_failures"]))),
    )
    return tuner.fit()
