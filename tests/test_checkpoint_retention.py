"""Checkpoint retention never deletes a folder that a saved experiment state names.

The fault it guards against (CI on a Xeon, an S3 kill/resume test): Ray's own retention
deleted ``checkpoint_000005`` while the state on storage still named it, so ``--resume``
lost the trial. Whether a kill lands in that window is timing; the invariant is not:
after every checkpoint and every controller step, each folder that the newest saved state
names exists. A callback checks it at each of those moments during a real search.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.helpers import FakeTrainer, use_trainer, write_space
from vpr_tune.tune.checkpoints import KEEP_LATEST, deletable, deletable_finished
from vpr_tune.tune.ray_internals import saved_checkpoints

FOLDERS = [f"checkpoint_{i:06d}" for i in range(8)]


@pytest.mark.parametrize("named", [None, *FOLDERS])
def test_deletable_keeps_the_named_folder_the_ones_after_it_and_the_newest(named):
    doomed = deletable(FOLDERS, named, current=FOLDERS[-1])
    kept = [f for f in FOLDERS if f not in doomed]
    assert kept[-KEEP_LATEST:] == FOLDERS[-KEEP_LATEST:]
    if named is not None:
        assert named in kept and all(f in kept for f in FOLDERS if f > named)
    assert all(f < (named or FOLDERS[-KEEP_LATEST]) for f in doomed)
    assert len(kept) == max(KEEP_LATEST, len(FOLDERS) - FOLDERS.index(named or FOLDERS[-1]))


def test_deletable_does_not_depend_on_listing_order():
    assert deletable(FOLDERS[::-1], "checkpoint_000003", FOLDERS[-1]) == FOLDERS[:3]


@pytest.mark.parametrize("current", [None, *FOLDERS])
def test_deletable_never_touches_what_the_driver_has_not_registered(current):
    # a trial restarted from scratch rewrites checkpoint_000000.. while an earlier life's
    # higher folders are still on disk (or a folder is in flight): the registered one and
    # every folder after it stay, and so does the one before it (the fallback)
    doomed = deletable(FOLDERS, None, current)
    if current is None:
        assert doomed == []
    else:
        assert all(f < current for f in doomed)
        assert [f for f in FOLDERS if f < current and f not in doomed] == [
            f for f in FOLDERS if f < current][-(KEEP_LATEST - 1):] or current == FOLDERS[0]


def test_a_finished_trial_keeps_its_registered_folder_not_the_highest_name():
    assert deletable_finished(FOLDERS[:4], "checkpoint_000001", keep=1) == [
        "checkpoint_000000", "checkpoint_000002", "checkpoint_000003"]
    assert deletable_finished(FOLDERS[:4], "checkpoint_000001", keep=0) == FOLDERS[:4]
    assert deletable_finished(FOLDERS[:4], None, keep=1) == []


class QuickTrainer(FakeTrainer):
    """FakeTrainer at 50 ms an epoch: many checkpoints between two state saves."""

    def run_epoch(self):
        time.sleep(0.05)
        self.epoch += 1
        r1 = 100 * self.cfg["optimizer"]["lr"] * self.epoch
        return {"epoch": self.epoch, "train/loss": 1.0 / self.epoch, "lr": 0.01,
                "val/R@1": r1, "val/R@5": r1, "val/R@10": r1, "val/R@25": r1,
                "descriptor_dim": 256, "query_ms": 2.56, "params_m": 11.0}


def _invariant_checker(violations: list[str], seen: list[int]):
    from ray.tune import Callback

    class SavedStateNamesExistingFolders(Callback):
        def _check(self, trials, **_info):
            if not trials:
                return
            storage = trials[0].storage
            fs = storage.storage_filesystem
            named = saved_checkpoints(fs, storage.experiment_fs_path)
            if named is None:  # Ray is rewriting the state file right now
                return
            seen.append(sum(v.checkpoint is not None for v in named.values()))
            for trial in trials:
                held = named.get(trial.trial_id)
                folder = held.checkpoint if held and held.status != "TERMINATED" else None
                if folder is None:
                    continue
                info = fs.get_file_info(f"{trial.storage.trial_fs_path}/{folder}")
                if info.type.name != "Directory":
                    violations.append(f"{trial.trial_id}: saved state names {folder}, gone")

        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
            self._check(trials)

        def on_step_end(self, iteration, trials, **info):
            self._check(trials)

    return SavedStateNamesExistingFolders()


@pytest.mark.slow
def test_no_saved_state_ever_names_a_deleted_folder(tmp_path, monkeypatch):
    from vpr_tune.config import load_space
    from vpr_tune.tune.ray_session import init_ray, stop_ray
    from vpr_tune.tune.tuner import run_tuner

    # a state save every second, so many saved states name checkpoints during the run
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "1")
    space = load_space(write_space(tmp_path / "s.yaml", data={"root": str(tmp_path)},
                                   budget={"max_epochs": 60},
                                   search={"num_samples": 2, "max_concurrent": 2}))
    violations: list[str] = []
    seen: list[int] = []
    with use_trainer(monkeypatch, QuickTrainer):
        started = init_ray(None, num_cpus=2)
        try:
            results = run_tuner(space, tmp_path / "exp", tmp_path, 2, 2, False,
                                [_invariant_checker(violations, seen)])
        finally:
            if started:
                stop_ray()
    assert not results.errors
    assert max(seen) >= 1, "no saved state named a checkpoint: the test proved nothing"
    assert not violations, violations[:5]
    for trial_dir in (tmp_path / "exp").glob("train_trial_*"):
        folders = sorted(p.name for p in trial_dir.glob("checkpoint_*"))
        # bounded: the end state names the last folder, so only the newest few remain
        assert 1 <= len(folders) <= KEEP_LATEST, folders
    assert os.path.isdir(tmp_path / "exp")


def test_kept_finished_keeps_the_best_and_the_front():
    from vpr_tune.tune.checkpoints import kept_finished

    best = {"a": {"r": 50.0, "d": 512}, "b": {"r": 40.0, "d": 64}, "c": {"r": 30.0, "d": 512},
            "d": {"r": 45.0, "d": 512}}
    assert kept_finished(best, [("r", "max")], 1) == {"a"}
    assert kept_finished(best, [("r", "max"), ("d", "min")], 1) == {"a", "b"}  # + the front
    assert kept_finished(best, [("r", "max")], None) == set(best)


@pytest.mark.slow
def test_finished_trials_outside_the_kept_best_lose_their_checkpoints(tmp_path, monkeypatch):
    """Bounded storage: of 6 finished trials only the 2 best (search.keep_checkpoints)
    keep a folder, and it holds best.pt."""
    import pandas as pd

    from vpr_tune.config import load_space
    from vpr_tune.tune.ray_session import init_ray, stop_ray
    from vpr_tune.tune.tuner import run_tuner

    space = load_space(write_space(tmp_path / "s.yaml", data={"root": str(tmp_path)},
                                   budget={"max_epochs": 4},
                                   search={"num_samples": 6, "max_concurrent": 2,
                                           "keep_checkpoints": 2}))
    with use_trainer(monkeypatch, QuickTrainer):
        started = init_ray(None, num_cpus=2)
        try:
            results = run_tuner(space, tmp_path / "exp", tmp_path, 6, 2, False, [])
        finally:
            if started:
                stop_ray()
    lr = pd.Series({r.path: r.config["optimizer.lr"] for r in results})
    kept = {p for p in lr.index if list(Path(p).glob("checkpoint_*"))}
    assert kept == set(lr.nlargest(2).index)  # R@1 grows with lr in QuickTrainer
    for p in kept:  # one folder each, the newest, with the best model
        folders = sorted(Path(p).glob("checkpoint_*"))
        assert len(folders) == 1 and (folders[0] / "best.pt").exists()
