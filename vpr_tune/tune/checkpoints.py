"""Which checkpoint folders a trial keeps, deleted as the search goes.

Ray's own retention (``CheckpointConfig(num_to_keep=N)``) deletes a trial's oldest folder
the moment the N+1-th is registered, *before* the experiment state that names a newer one
has reached storage (the upload is asynchronous and throttled). A driver killed in between
leaves a saved state that points at a deleted folder, and ``--resume`` then loses the
trial ("Could not recover from checkpoint as it does not exist on storage anymore").

So Ray keeps every folder, and :func:`retention_callback` deletes instead, by two rules:

- :func:`deletable`: only folders older than the newest one the driver has *registered*
  (which the next saved state will name) can go; a trial keeps its ``keep_latest`` newest
  up to that one (the trainable falls back to the older one when the newest is corrupt) and
  every folder from the one Ray's newest *saved* experiment state names onward. Newer
  states only name registered folders at or after those, so a folder deleted by this rule
  is never needed by any resume. Folders past the registered one are never touched while
  the trial runs: one may be in flight (written by the trial, its result not yet taken by
  the driver), or left by an earlier life of a trial that restarted from scratch (the
  restart writes the same names again).
- bounded storage: once a trial has finished, and the saved state says so (a TERMINATED
  trial is not resumed), only the ``keep_finished`` best finished trials by the search
  metric (and, with several objectives, the Pareto front) keep a folder — the newest,
  which holds ``best.pt`` for ``best --retest`` — and the others none. Disk then grows
  with the trials running and kept, not with the trials run.

PBT / PB2 keep every folder: a trial that cloned another restores from the other's folder.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from vpr_tune import metrics
from vpr_tune.tune.ray_internals import (
    CHECKPOINT_PREFIX,
    SavedTrial,
    registered_checkpoint,
    saved_checkpoints,
)

KEEP_LATEST = 2
KEEP_FINISHED = 5  # search.keep_checkpoints' default
SWEEP_EVERY_S = 10.0


def deletable(folders: list[str], named: str | None, current: str | None,
              keep_latest: int = KEEP_LATEST) -> list[str]:
    """The folders of one running trial that no resume can need: ``current`` is the newest
    folder the driver registered (None: none since the trial started: delete nothing),
    ``named`` the one Ray's newest saved state names.

    >>> deletable(["checkpoint_000003", "checkpoint_000004", "checkpoint_000005",
    ...            "checkpoint_000006"], named="checkpoint_000004", current="checkpoint_000006")
    ['checkpoint_000003']
    >>> deletable(["checkpoint_000000", "checkpoint_000001", "checkpoint_000002"], None,
    ...           current="checkpoint_000002")
    ['checkpoint_000000']
    >>> # restarted from scratch: 000001-2 are an earlier life's (or in flight), 000000 is new
    >>> deletable(["checkpoint_000000", "checkpoint_000001", "checkpoint_000002"], None,
    ...           current="checkpoint_000000")
    []
    """
    if current is None:
        return []
    older = sorted(f for f in folders if f < current)  # zero-padded: name order = save order
    kept_older = keep_latest - 1  # current is one of the kept
    candidates = older[:len(older) - kept_older] if kept_older > 0 else older
    return [f for f in candidates if named is None or f < named]


def deletable_finished(folders: list[str], current: str | None, keep: int) -> list[str]:
    """The folders of a trial that ended (and that the saved state knows ended): all but
    ``current``, its last registered one (best.pt for retest), with ``keep`` 1; all with 0.

    >>> deletable_finished(["checkpoint_000000", "checkpoint_000001", "checkpoint_000003"],
    ...                    current="checkpoint_000001", keep=1)
    ['checkpoint_000000', 'checkpoint_000003']
    """
    if keep > 0 and current is None:  # no registered folder to keep: keep them all
        return []
    return sorted(f for f in folders if keep == 0 or f != current)


def kept_finished(best: dict[str, dict[str, float]], objectives: Sequence[tuple[str, str]],
                  keep: int | None) -> set[str]:
    """The finished trials whose newest folder stays: the ``keep`` best by the first
    objective, plus the Pareto front when there are several (``keep`` None: all).

    >>> kept_finished({"a": {"m": 1.0}, "b": {"m": 3.0}, "c": {"m": 2.0}}, [("m", "max")], 2)
    {'b', 'c'}
    """
    if keep is None:
        return set(best)
    metric, mode = objectives[0]
    scored = [t for t in best if best[t].get(metric) is not None]
    ranked = sorted(scored, key=lambda t: best[t][metric], reverse=mode == "max")
    kept = set(ranked[:keep])
    if len(objectives) > 1 and best:
        import pandas as pd

        from vpr_tune.tune.pareto import pareto_flags

        frame = pd.DataFrame([{**v, "status": "TERMINATED"} for v in best.values()],
                             index=list(best))
        flags = pareto_flags(frame, objectives)
        kept |= {t for t, on_front in zip(best, flags, strict=True) if on_front}
    return kept


class _Retention:
    """Deletes a trial's folders that the rules allow, on its storage."""

    def __init__(self, keep_latest: int = KEEP_LATEST) -> None:
        self.keep_latest = keep_latest
        self._state_key: tuple[Any, ...] | None = None
        self._named: dict[str, SavedTrial] | None = {}
        self._left: dict[str, int] = {}  # trial id -> folders it kept at its last prune

    def prune(self, trial: Any, finished_keep: int | None = None) -> list[str]:
        """Delete what no resume can need of ``trial``'s folders, and, for a finished trial
        (``finished_keep``: how many newest folders retest still needs, 1 or 0), what
        retest does not need once the saved state knows it ended; returns the names."""
        import pyarrow.fs

        storage = trial.storage
        fs, root = storage.storage_filesystem, storage.trial_fs_path
        infos = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
        folders = [i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory
                   and i.base_name.startswith(CHECKPOINT_PREFIX)]
        keep = self.keep_latest if finished_keep is None else finished_keep
        if len(folders) <= keep:
            self._left[trial.trial_id] = len(folders)
            return []
        saved = self._saved(fs, storage.experiment_fs_path)
        if saved is None:  # unreadable now: delete nothing, the next checkpoint tries again
            return []
        # A trial the saved state does not hold restarts from scratch on resume; one it
        # holds as TERMINATED is not resumed at all.
        held = saved.get(trial.trial_id)
        current = registered_checkpoint(trial)
        if finished_keep is not None and held is not None and held.status == "TERMINATED":
            doomed = deletable_finished(folders, current, finished_keep)
        else:  # running, or the saved state does not know it ended yet
            doomed = deletable(folders, held.checkpoint if held is not None else None,
                               current, self.keep_latest)
        for name in doomed:
            fs.delete_dir(f"{root}/{name}")
        self._left[trial.trial_id] = len(folders) - len(doomed)
        return doomed

    def left(self, trial: Any) -> int:
        """How many folders ``trial`` kept at its last prune."""
        return self._left.get(trial.trial_id, 0)

    def _saved(self, fs: Any, experiment_fs_path: str) -> dict[str, SavedTrial] | None:
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


def retention_callback(objectives: Sequence[tuple[str, str]] = ((metrics.DEFAULT_METRIC,
                                                                 "max"),),
                       keep_finished: int | None = KEEP_FINISHED,
                       keep_latest: int = KEEP_LATEST) -> Any:
    """A Ray Tune callback that prunes checkpoint folders as the search goes (see the module
    doc). Use with ``CheckpointConfig(num_to_keep=None)``: the deleting is done here."""
    from ray.tune import Callback

    class CheckpointRetention(Callback):
        def __init__(self) -> None:
            self.retention = _Retention(keep_latest)
            self.best: dict[str, dict[str, float]] = {}  # trial -> best value per objective
            self.finished: dict[str, Any] = {}
            self.pending: dict[str, Any] = {}  # finished trials whose folders may go
            self.last_sweep = 0.0

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                            **info: Any) -> None:
            seen = self.best.setdefault(trial.trial_id, {})
            for m, mode in objectives:
                value = result.get(m)
                if isinstance(value, (int, float)) and (
                        m not in seen or metrics.is_better(value, seen[m], mode)):
                    seen[m] = float(value)

        def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any,
                          **info: Any) -> None:
            self.retention.prune(trial)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any,
                              **info: Any) -> None:
            self.finished[trial.trial_id] = trial
            self.pending.update(self.finished)  # the kept set may change for any of them

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.pending[trial.trial_id] = trial  # resumed with --resume: keep as running

        def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
            # Ray saves its state every 10 s or more: sweeping more often finds nothing new.
            if self.pending and time.monotonic() - self.last_sweep > SWEEP_EVERY_S:
                self._sweep()

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            # Ray saved its final state just before: only what is kept is needed now.
            self.pending.update({t.trial_id: t for t in trials})
            self._sweep()

        def _sweep(self) -> None:
            self.last_sweep = time.monotonic()
            kept = kept_finished({t: self.best.get(t, {}) for t in self.finished},
                                 objectives, keep_finished)
            for trial_id, trial in list(self.pending.items()):
                # a kept finished trial needs its newest folder (best.pt), a dropped one none
                keep = (None if trial_id not in self.finished
                        else 1 if trial_id in kept else 0)
                self.retention.prune(trial, keep)
                if self.retention.left(trial) <= (keep_latest if keep is None else keep):
                    del self.pending[trial_id]

    return CheckpointRetention()
