"""Per-trial resources: logical GPUs (``ray.init(num_gpus=2)``) with ``gpu: 0.5`` pack four
trials at once, each seeing its GPU id; more GPUs or CPUs per trial than the machine has are
refused, by a dry run as by a run; a fake trainer keeps it fast."""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.helpers import (
    SMALL_SPACE_YAML,
    FakeTrainer,
    error_line,
    run_cli,
    use_trainer,
    write_space,
    write_yaml,
)
from vpr_tune.analysis import read_table
from vpr_tune.cli import main


class PackedTrainer(FakeTrainer):
    """Waits in its first epoch until four trials run at once (a barrier of files in the log
    folder) and records how many it saw: fewer than four when Ray does not pack them."""

    def run_epoch(self):
        if self.epoch == 0:
            folder = self.log_file.parent
            (folder / f"alive-{self.log_file.stem}").touch()
            deadline = time.monotonic() + 120  # only a broken packing waits this long
            while len(list(folder.glob("alive-*"))) < 4 and time.monotonic() < deadline:
                time.sleep(0.1)
            self.record["peers"] = len(list(folder.glob("alive-*")))
        return super().run_epoch()


@pytest.mark.slow  # four Ray workers at once: ~1-2 min on 2 cores
def test_half_gpus_run_four_trials_at_once(tmp_path, monkeypatch, street_world_tiny, capsys):
    import ray

    logs = tmp_path / "logs"
    logs.mkdir()
    # data.root doubles as the fake trainer's log folder; --data points at the real data
    space = write_space(tmp_path / "gpu.yaml", data={"root": str(logs), "cache": False},
                        optimizer={"lr": {"uniform": [0.1, 0.9]}},
                        search={"num_samples": 4, "max_concurrent": 4},
                        resources={"gpu": 0.5})
    ray.init(num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False)
    with use_trainer(monkeypatch, PackedTrainer):
        rc = run_cli(["run", str(space), "--data", str(street_world_tiny), "--name", "gpu",
                      "--storage", str(tmp_path / "res")])
    assert rc == 0, capsys.readouterr()
    records = [json.loads(p.read_text()) for p in logs.glob("*.json")]
    assert len(records) == 4
    for r in records:
        assert len(r["gpu_ids"]) == 1 and r["gpu_ids"][0] in ("0", "1")
        assert r["cuda_visible"] == r["gpu_ids"][0]  # the trial sees only its GPU
        assert r["threads"] == 1
    assert sorted(r["gpu_ids"][0] for r in records) == ["0", "0", "1", "1"]
    assert [r["peers"] for r in records] == [4] * 4  # all four ran at once
    trials = read_table(tmp_path / "res" / "gpu" / "trials.csv")
    assert (trials["status"] == "TERMINATED").all() and (trials["epochs"] == 2).all()


def test_more_gpus_than_the_cluster_has_is_a_user_error(tmp_path, capsys, street_world_tiny):
    import ray

    space = tmp_path / "big.yaml"
    space.write_text("resources: {cpu: 1, gpu: 4}\nsearch: {num_samples: 1}\n"
                     "data: {image_size: [32, 32]}\nseed: {choice: [0, 1]}\n")
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    rc = run_cli(["run", str(space), "--data", str(street_world_tiny), "--name", "big",
                  "--storage", str(tmp_path / "res")])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"{space}: resources.gpu: 4 GPUs per trial but the largest Ray node has 2 CPU, " \
        "2 GPU" in err
    # refused before it started: no folder, so the same name works once the YAML is fixed
    assert not (tmp_path / "res" / "big").exists()


def test_dry_run_checks_resources_like_a_run(tmp_path, capsys, street_world_tiny):
    space = write_yaml(tmp_path, SMALL_SPACE_YAML.replace("gpu: 0", "gpu: 1"))
    rc = main(["run", str(space), "--data", str(street_world_tiny), "--dry-run", "--name", "g",
               "--storage", str(tmp_path / "res")])
    import torch

    if torch.cuda.device_count() >= 1:
        assert rc == 0
        return
    assert rc == 2
    line = error_line(capsys)
    assert f"{space}: resources.gpu: 1 GPUs per trial but the largest Ray node has" in line
    assert not (tmp_path / "res" / "g").exists()
    space = write_yaml(tmp_path,
                       SMALL_SPACE_YAML.replace("cpu: 1", f"cpu: {os.cpu_count() + 2}"))
    assert main(["run", str(space), "--data", str(street_world_tiny), "--dry-run"]) == 2
    assert "resources.cpu" in error_line(capsys)


class FailingTrainer(FakeTrainer):
    """Diverges (lr > 0.6) or raises (lr < 0.3) in its second epoch."""

    def run_epoch(self):
        from vpr_tune.errors import DivergedError

        if self.epoch == 1 and self.cfg["optimizer"]["lr"] > 0.6:
            raise DivergedError("loss is nan at batch 3")
        if self.epoch == 1 and self.cfg["optimizer"]["lr"] < 0.3:
            raise RuntimeError("CUDA out of memory (simulated)")
        return super().run_epoch()


def test_error_and_diverged_trials_are_recorded(tmp_path, monkeypatch, street_world_tiny,
                                                capsys):

    logs = tmp_path / "logs"
    logs.mkdir()
    space = write_space(tmp_path / "fail.yaml", data={"root": str(logs), "cache": False},
                        optimizer={"lr": {"grid": [0.1, 0.5, 0.9]}},
                        budget={"max_epochs": 3},
                        search={"algorithm": "grid", "num_samples": 1, "max_concurrent": 2})
    with use_trainer(monkeypatch, FailingTrainer):
        rc = run_cli(["run", str(space), "--data", str(street_world_tiny), "--name", "f",
                      "--storage", str(tmp_path / "res")])
    out = capsys.readouterr().out
    assert rc == 0, out
    trials = read_table(tmp_path / "res" / "f" / "trials.csv").set_index("optimizer.lr")
    assert trials.loc[0.1, "status"] == "ERROR"
    assert "out of memory" in trials.loc[0.1, "error"]
    assert trials.loc[0.5, "status"] == "TERMINATED" and trials.loc[0.5, "epochs"] == 3
    assert trials.loc[0.9, "status"] == "DIVERGED"
    assert "nan" in trials.loc[0.9, "error"] and trials.loc[0.9, "epochs"] == 1
    assert f"best trial {trials.loc[0.5, 'trial_id']}" in out  # failed trials never rank
