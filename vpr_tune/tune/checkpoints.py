"""Which checkpoint folders a trial keeps, deleted as the search goes.

Ray's own retention (``CheckpointConfig(num_to_keep=N)``) deletes a trial's oldest folder
the moment the N+1-th is registered, *before* the experiment state that names a newer one
has reached storage (the upload is asynchronous and throttled). A driver killed in between
leaves a saved state that points at a deleted folder, and ``--resume`` then loses the
trial ("Could not recover from checkpoint as it does not exist on storage anymore").

So Ray keeps every folder, and :class:`CheckpointRetention` deletes instead, by one rule
(:func:`deletable`): a trial keeps its ``keep_latest`` newest folders (the trainable falls
back to the older one when the newest is corrupt) and every folder from the one Ray's
newest *saved* experiment state names onward. Newer states only name newer folders, so a
folder deleted by this rule is never needed by any resume.

PBT / PB2 keep every folder: a trial that cloned another restores from the other's folder.
"""

from __future__ import annotations

import time
from typing import Any

from vpr_tune.tune.ray_internals import CHECKPOINT_PREFIX, saved_checkpoints

KEEP_LATEST = 2
SWEEP_EVERY_S = 10.0


def deletable(folders: list[str], named: str | None, keep_latest: int = KEEP_LATEST
              ) -> list[str]:
    """The folders of one trial that no resume can need.

    >>> deletable(["checkpoint_000003", "checkpoint_000004", "checkpoint_000005",
    ...            "checkpoint_000006"], named="checkpoint_000004")
    ['checkpoint_000003']
    >>> deletable(["checkpoint_000000", "checkpoint_000001", "checkpoint_000002"], None)
    ['checkpoint_000000']
    """
    ordered = sorted(folders)  # zero-padded indices: name order is save order
    candidates = ordered[:-keep_latest] if keep_latest > 0 else ordered
    return [f for f in candidates if named is None or f < named]


class _Retention:
    """Deletes a trial's folders that :func:`deletable` allows, on its storage."""

    def __init__(self, keep_latest: int = KEEP_LATEST) -> None:
        self.keep_latest = keep_latest
        self._state_key: tuple[Any, ...] | None = None
        self._named: dict[str, str | None] | None = {}
        self._left: dict[str, int] = {}  # trial id -> folders it kept at its last prune

    def prune(self, trial: Any) -> list[str]:
        """Delete what no resume can need of ``trial``'s folders; returns the names."""
        import pyarrow.fs

        storage = trial.storage
        fs, root = storage.storage_filesystem, storage.trial_fs_path
        infos = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
        folders = [i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory
                   and i.base_name.startswith(CHECKPOINT_PREFIX)]
        if len(folders) <= self.keep_latest:
            self._left[trial.trial_id] = len(folders)
            return []
        saved = self._saved(fs, storage.experiment_fs_path)
        if saved is None:  # unreadable now: delete nothing, the next checkpoint tries again
            return []
        # A trial the saved state does not hold restarts from scratch on resume.
        named = saved.get(trial.trial_id)
        doomed = deletable(folders, named, self.keep_latest)
        for name in doomed:
            fs.delete_dir(f"{root}/{name}")
        self._left[trial.trial_id] = len(folders) - len(doomed)
        return doomed

    def settled(self, trial: Any) -> bool:
        """True when ``trial`` keeps no more than ``keep_latest`` folders."""
        return self._left.get(trial.trial_id, 0) <= self.keep_latest

    def _saved(self, fs: Any, experiment_fs_path: str) -> dict[str, str | None] | None:
        """``saved_checkpoints``, parsed again only when a state file changed."""
        import pyarrow.fs

        infos = fs.get_file_info(pyarrow.fs.FileSelector(experiment_fs_path,
                                                         allow_not_found=True))
        key = tuple(sorted((i.base_name, i.size, i.mtime_ns) for i in infos
                           if i.base_name.startswith("experiment_state")))
        if key != self._state_key:
            named = saved_checkpoints(fs, experiment_fs_path)
            if named is None:
                return None
            self._named, self._state_key = named, key
        return self._named


def retention_callback(keep_latest: int = KEEP_LATEST) -> Any:
    """A Ray Tune callback that prunes a trial's checkpoint folders after each checkpoint.
    Use with ``CheckpointConfig(num_to_keep=None)``: the deleting is done here."""
    from ray.tune import Callback

    class CheckpointRetention(Callback):
        def __init__(self) -> None:
            self.retention = _Retention(keep_latest)
            self.ended: dict[str, Any] = {}  # trials whose last folders await a newer state
            self.last_sweep = 0.0

        def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any,
                          **info: Any) -> None:
            self.retention.prune(trial)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any,
                              **info: Any) -> None:
            self.ended[trial.trial_id] = trial

        on_trial_error = on_trial_complete

        def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
            # Ray saves its state every 10 s or more: sweeping more often finds nothing new.
            if self.ended and time.monotonic() - self.last_sweep > SWEEP_EVERY_S:
                self._sweep()

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            # Ray saved its final state just before: only the newest folders are needed now.
            self.ended.update({t.trial_id: t for t in trials})
            self._sweep()

        def _sweep(self) -> None:
            self.last_sweep = time.monotonic()
            for trial_id, trial in list(self.ended.items()):
                self.retention.prune(trial)
                if self.retention.settled(trial):
                    del self.ended[trial_id]

    return CheckpointRetention()
