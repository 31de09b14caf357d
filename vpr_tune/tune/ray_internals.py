"""The private parts of Ray Tune vpr-tune relies on, each behind one small function.

Ray offers no public API for these; when a Ray upgrade moves one, the matching test in
tests/test_ray_internals.py fails with the name of the function here, and only this file
changes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

CHECKPOINT_PREFIX = "checkpoint_"  # Ray's checkpoint folder names: checkpoint_000005


class SavedTrial(NamedTuple):
    """What Ray's saved experiment state says of one trial."""

    checkpoint: str | None  # the folder a resume restores from (None: restarts from scratch)
    status: str  # TERMINATED trials are not resumed at all


def saved_checkpoints(fs: Any, experiment_fs_path: str) -> dict[str, SavedTrial] | None:
    """trial id -> :class:`SavedTrial`: the checkpoint folder name (``checkpoint_000005``)
    that Ray's newest saved experiment state on ``fs`` would resume the trial from, and its
    status there. Empty when no state has been saved yet; None when the state cannot be
    read now (Ray is rewriting it: a local copy is not atomic).

    This is exactly what ``Tuner.restore`` reads: the newest ``experiment_state-*.json``
    of the experiment folder, its trials and their checkpoint managers."""
    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint
    from ray.tune.trainable.metadata import _TrainingRunMetadata
    from ray.tune.utils.serialization import _loads_with_cloudpickle

    path = _find_newest_experiment_checkpoint(experiment_fs_path, fs=fs)
    if path is None:
        return {}
    try:
        with fs.open_input_stream(path) as src:
            state = _loads_with_cloudpickle(src.readall())
    except (OSError, ValueError):  # torn or vanished mid-rewrite (JSONDecodeError: ValueError)
        return None
    named: dict[str, SavedTrial] = {}
    for trial_json, run_metadata_json in state["trial_data"]:
        trial = _loads_with_cloudpickle(trial_json)
        manager = _TrainingRunMetadata.from_json_state(run_metadata_json).checkpoint_manager
        latest = manager.latest_checkpoint_result if manager is not None else None
        named[trial["trial_id"]] = SavedTrial(
            latest.checkpoint.path.rstrip("/").rpartition("/")[2] if latest is not None
            else None, str(trial["status"]))
    return named


def registered_checkpoint(trial: Any) -> str | None:
    """The folder name (``checkpoint_000005``) of the newest checkpoint the driver has
    registered for ``trial`` (what the next saved experiment state will name), None when it
    has registered none since the trial (re)started."""
    manager = getattr(trial.run_metadata, "checkpoint_manager", None)
    latest = manager.latest_checkpoint_result if manager is not None else None
    return latest.checkpoint.path.rstrip("/").rpartition("/")[2] if latest is not None else None


def has_saved_state(experiment_dir: str) -> bool:
    """True when Ray saved an experiment state at ``experiment_dir`` (a path or URI): what
    ``Tuner.restore`` needs. ``tuner.pkl`` alone (``Tuner.can_restore``) is written at
    start-up, before any state: a driver killed in between leaves a folder Ray cannot
    resume (it logs a traceback and starts over with the old files around)."""
    from ray.train._internal.storage import get_fs_and_path
    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint

    fs, fs_path = get_fs_and_path(experiment_dir)
    try:
        return _find_newest_experiment_checkpoint(fs_path, fs=fs) is not None
    except (OSError, FileNotFoundError):
        return False


def set_callbacks(tuner: Any, callbacks: list[Any]) -> None:
    """Hand a restored Tuner its callbacks: Ray does not save them with the experiment."""
    tuner._local_tuner._run_config.callbacks = callbacks


def set_scheduler(tuner: Any, scheduler: Any) -> None:
    """Hand a restored Tuner a trial scheduler: Ray restores the one pickled when the search
    started, with none of its state (ray#30838)."""
    tuner._local_tuner._tune_config.scheduler = scheduler


def sampling_index(trial: Any) -> int | None:
    """A key that sorts trials in the order they were sampled: the counter Ray's search
    algorithms put in front of a trial's experiment tag (``3_optimizer.lr=0.01,...``), which
    a restore keeps (Ray re-adds restored trials by last result time). None when the tag has
    no counter."""
    head = str(getattr(trial, "experiment_tag", "") or "").partition("_")[0]
    return int(head) if head.isdigit() else None


def execute_decision(controller: Any, trial: Any, decision: str) -> None:
    """Act on a scheduler decision (CONTINUE, STOP) for a trial whose report the scheduler
    answered with NOOP earlier: what Ray does with a decision returned at once, including
    waiting for a checkpoint the report carried to be saved first."""
    tune_controller = getattr(controller, "_tune_controller", controller)  # Ray's wrapper
    if trial.is_saving:
        tune_controller._cached_trial_decisions[trial.trial_id] = decision
    else:
        tune_controller._execute_action(trial, decision)


def hold_trial(trial: Any) -> None:
    """Mark a trial being added (``on_trial_add`` of a restore) PAUSED, so that Ray starts it
    only when the scheduler's ``choose_trial_to_run`` picks it: Ray starts PENDING trials on
    its own. Only while it is being added (Ray files it by the status it then has)."""
    trial.set_status("PAUSED")
