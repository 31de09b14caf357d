"""A missing, truncated or corrupt checkpoint: ``train --resume`` starts fresh or names the
file, a trial restores its previous kept checkpoint, retest falls back to the previous
best.pt; with none left, one clear error that names the file."""

from __future__ import annotations

import pytest

from tests.helpers import write_yaml
from vpr_tune.cli import main
from vpr_tune.errors import UserError


def test_train_resume_with_nothing_says_it_starts_fresh(tmp_path, street_world_tiny, capsys):
    cfg = write_yaml(tmp_path, """
        data: {image_size: [32, 32], augment: false, cache: false}
        budget: {max_epochs: 1, batches_per_epoch: 1, places_per_batch: 4, images_per_place: 2,
                 eval_batch_size: 32}
    """, "one.yaml")
    rc = main(["train", str(cfg), "--data", str(street_world_tiny), "--out",
               str(tmp_path / "run"), "--resume", "--threads", "1"])
    assert rc == 0
    assert "nothing to resume" in capsys.readouterr().out
    assert (tmp_path / "run" / "last.pt").exists()


def test_train_resume_from_a_truncated_last_pt_names_the_file(tmp_path, street_world_tiny,
                                                               capsys):
    cfg = write_yaml(tmp_path, """
        data: {image_size: [32, 32], augment: false, cache: false}
        budget: {max_epochs: 1, batches_per_epoch: 1, places_per_batch: 4, images_per_place: 2,
                 eval_batch_size: 32}
    """, "one.yaml")
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"PK\x03\x04")
    rc = main(["train", str(cfg), "--data", str(street_world_tiny), "--out", str(run),
               "--resume", "--threads", "1"])
    assert rc == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"checkpoint {run / 'last.pt'} is truncated or corrupt" in line


def test_corrupt_trial_checkpoint_falls_back_to_the_previous_kept_one(tmp_path, capsys):
    from vpr_tune.tune.trainable import CHECKPOINT_FILE, _load_newest_good

    class Loader:
        def load_checkpoint(self, path):
            from vpr_tune.checkpoint import read_checkpoint

            self.state = read_checkpoint(path)

    trial = tmp_path / "trial"
    old, new = trial / "checkpoint_000001", trial / "checkpoint_000002"
    for folder in (old, new):
        folder.mkdir(parents=True)
    import torch

    from vpr_tune.checkpoint import FORMAT as CHECKPOINT_FORMAT

    torch.save({"format": CHECKPOINT_FORMAT, "epoch": 1}, old / CHECKPOINT_FILE)
    (new / CHECKPOINT_FILE).write_bytes(b"PK\x03\x04 truncated")
    loader = Loader()
    assert _load_newest_good(loader, new) == old
    assert loader.state["epoch"] == 1
    assert str(new / CHECKPOINT_FILE) in capsys.readouterr().out
    (old / CHECKPOINT_FILE).write_bytes(b"")
    with pytest.raises(UserError, match="no usable checkpoint") as exc:
        _load_newest_good(loader, new)
    assert str(old / CHECKPOINT_FILE) in str(exc.value)


def test_retest_falls_back_from_a_truncated_best_pt(tmp_path, tiny_checkpoints):
    import shutil

    from vpr_tune.checkpoint import load_model_from_checkpoint
    from vpr_tune.retest import _load_with_fallback

    _, paths = tiny_checkpoints
    trial = tmp_path / "trial"
    for i, name in enumerate(("checkpoint_000001", "checkpoint_000002")):
        (trial / name).mkdir(parents=True)
        shutil.copy(paths[i], trial / name / "best.pt")
    newest = trial / "checkpoint_000002" / "best.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated
    logs: list[str] = []
    model, cfg = _load_with_fallback(load_model_from_checkpoint, newest, "cpu", logs.append)
    assert cfg["seed"] == 0 and str(newest) in logs[0]
    (trial / "checkpoint_000001" / "best.pt").write_bytes(b"")
    with pytest.raises(UserError, match="truncated or corrupt"):
        _load_with_fallback(load_model_from_checkpoint, newest, "cpu", logs.append)
