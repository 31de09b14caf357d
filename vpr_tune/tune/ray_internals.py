"""The private parts of Ray Tune vpr-tune relies on, each behind one small function.

Ray offers no public API for these; when a Ray upgrade moves one, the matching test in
tests/test_ray_internals.py fails with the name of the function here, and only this file
changes.
"""

from __future__ import annotations

from typing import Any

CHECKPOINT_PREFIX = "checkpoint_"  # Ray's checkpoint folder names: checkpoint_000005


def saved_checkpoints(fs: Any, experiment_fs_path: str) -> dict[str, str | None] | None:
    """trial id -> the checkpoint folder name (``checkpoint_000005``) that Ray's newest
    saved experiment state on ``fs`` would resume the trial from (None: the trial would
    restart from scratch). Empty when no state has been saved yet; None when the state
    cannot be read now (Ray is rewriting it: a local copy is not atomic).

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
    named: dict[str, str | None] = {}
    for trial_json, run_metadata_json in state["trial_data"]:
        trial_id = _loads_with_cloudpickle(trial_json)["trial_id"]
        manager = _TrainingRunMetadata.from_json_state(run_metadata_json).checkpoint_manager
        latest = manager.latest_checkpoint_result if manager is not None else None
        named[trial_id] = (latest.checkpoint.path.rstrip("/").rpartition("/")[2]
                           if latest is not None else None)
    return named


def set_callbacks(tuner: Any, callbacks: list[Any]) -> None:
    """Hand a restored Tuner its callbacks: Ray does not save them with the experiment."""
    tuner._local_tuner._run_config.callbacks = callbacks
