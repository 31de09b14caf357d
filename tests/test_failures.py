"""Failed trials and a full disk: the summary names the most common error, ``best`` on an
all-failed experiment exits 1 naming it, ENOSPC while writing a table keeps the old table,
and a search whose trials hit a full disk resumes and finishes once space is freed."""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import error_line, write_yaml
from vpr_tune.cli import main
from vpr_tune.errors import UserError
from vpr_tune.tune.results import failure_summary


def test_failure_summary_names_the_most_common_error():
    trials = pd.DataFrame({"trial_id": ["a", "b", "c"], "status": ["ERROR", "ERROR", "DIVERGED"],
                           "error": ["KeyError: 'lrr'", "KeyError: 'lrr'", "loss is nan"]})
    assert failure_summary(trials) == ("2 ERROR, 1 DIVERGED; most common error (2 of 3 "
                                       "trials): KeyError: 'lrr'")


def test_best_on_an_all_failed_experiment_exits_1(tmp_path, capsys):
    from tests.helpers import write_hand_experiment

    write_hand_experiment(tmp_path / "res" / "bad", trials=[
        ("t0", "ERROR", "sgd", 0.01, 1e-3, "none", [10.0]),
        ("t1", "DIVERGED", "adam", 0.1, 1e-3, "none", [5.0]),
    ])
    assert main(["best", "bad", "--storage", str(tmp_path / "res")]) == 1
    line = error_line(capsys)
    assert "no trial finished" in line and "most common error" in line and "boom" in line


def test_full_disk_while_writing_a_table_keeps_the_old_one(tmp_path, monkeypatch):
    from vpr_tune.tune import results

    path = tmp_path / "trials.csv"
    results.write_table(pd.DataFrame({"a": [1]}), path)

    def full(frame, where):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results, "write_csv", full)
    with pytest.raises(UserError, match=f"no space left on device: {path}"):
        results.write_table(pd.DataFrame({"a": [2]}), path)
    assert pd.read_csv(path)["a"].tolist() == [1]


# ------------------------------------------------------ a full disk in a real (fake) search
class DiskFullTrainer:
    """Trains nothing; its checkpoint write fails with ENOSPC from epoch 2 while the file
    ``disk-full`` exists in ``data.root`` (the disk is freed by deleting it)."""

    def __init__(self, cfg, data_root, device=None, num_threads=None, log=print):
        self.cfg, self.epoch, self.is_best = cfg, 0, True
        self.flag = Path(cfg["data"]["root"]) / "disk-full"

    def run_epoch(self):
        self.epoch += 1
        r1 = 10.0 * self.epoch
        return {"epoch": self.epoch, "train/loss": 1.0, "lr": 0.01, "val/R@1": r1,
                "val/R@5": r1, "val/R@10": r1, "val/R@25": r1}

    def save_checkpoint(self, path):
        if self.epoch >= 2 and self.flag.exists():
            raise OSError(errno.ENOSPC, "No space left on device")
        Path(path).write_text(json.dumps({"epoch": self.epoch}))
        return Path(path)

    save_model = save_checkpoint

    def load_checkpoint(self, path):
        self.epoch = json.loads(Path(path).read_text())["epoch"]


def test_full_disk_in_trials_then_resume_finishes(tmp_path, monkeypatch, capsys,
                                                  street_world_tiny):
    import ray.cloudpickle

    from vpr_tune.tune import trainable
    from vpr_tune.tune.results import read_table

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(trainable, "TRAINER_FACTORY", DiskFullTrainer)
    flags = tmp_path / "flags"
    flags.mkdir()
    (flags / "disk-full").write_text("")
    space = write_yaml(tmp_path, f"""
        data: {{root: {flags}, image_size: [32, 32], cache: false}}
        optimizer: {{lr: {{grid: [0.1, 0.2]}}}}
        budget: {{max_epochs: 3}}
        search: {{algorithm: grid, num_samples: 1, max_concurrent: 2, scheduler: fifo}}
    """)
    args = ["run", str(space), "--data", str(street_world_tiny), "--name", "full",
            "--storage", str(tmp_path / "res")]
    try:
        rc = main(args)
        captured = capsys.readouterr()
        assert rc == 1, captured.out + captured.err
        trials = read_table(tmp_path / "res" / "full" / "trials.csv")
        assert (trials["status"] == "ERROR").all() and len(trials) == 2
        assert trials["error"].str.startswith("no space left on device: /").all(), trials["error"]
        assert "no trial finished: 2 ERROR; most common error" in captured.err
        assert "no space left on device" in captured.err
        last = captured.err.strip().splitlines()[-1]
        assert last.startswith("error: experiment full: no trial finished"), last
        assert "Traceback" not in captured.err, captured.err  # in each trial's error.txt

        (flags / "disk-full").unlink()  # space freed
        assert main([*args, "--resume"]) == 0
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    trials = read_table(tmp_path / "res" / "full" / "trials.csv")
    assert (trials["status"] == "TERMINATED").all() and (trials["epochs"] == 3).all(), trials
    metrics = read_table(tmp_path / "res" / "full" / "metrics.csv")
    assert len(metrics) == 6 and not metrics.duplicated(["trial_id", "epoch"]).any()
