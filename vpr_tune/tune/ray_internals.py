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


def set_callbacks(tuner: Any, callbacks: list[Any]) -> None:
    """Hand a restored Tuner its callbacks: Ray does not save them with the experiment."""
    tuner._local_tuner._run_config.callbacks = callbacks
