"""Per-trial resources: logical GPUs (``ray.init(num_gpus=2)``) with ``gpu: 0.5`` pack four
trials at once, each seeing its GPU id; a fake trainer keeps it fast."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vpr_tune.analysis import read_table
from vpr_tune.tune import trainable


class FakeTrainer:
    """Trains nothing: sleeps, logs what Ray gave it, reports R@1 from the lr."""

    def __init__(self, cfg, data_root, device=None, num_threads=None, log=print):
        import ray

        self.cfg, self.epoch, self.is_best = cfg, 0, True
        self.log_file = Path(cfg["data"]["root"]) / f"{os.getpid()}-{time.time_ns()}.json"
        self.record = {"gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                       "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                       "threads": num_threads, "device": device, "start": time.time()}

    def run_epoch(self):
        time.sleep(1.5)
        self.epoch += 1
        self.record["end"] = time.time()
        self.log_file.write_text(json.dumps(self.record))
        r1 = 100 * self.cfg["optimizer"]["lr"] * self.epoch
        return {"epoch": self.epoch, "train/loss": 1.0 / self.epoch, "lr": 0.01,
                "val/R@1": r1, "val/R@5": r1, "val/R@10": r1, "val/R@25": r1}

    def save_checkpoint(self, path):
        Path(path).write_text(json.dumps({"epoch": self.epoch}))
        return Path(path)

    def save_model(self, path):
        return self.save_checkpoint(path)

    def load_checkpoint(self, path):
        self.epoch = json.loads(Path(path).read_text())["epoch"]


@pytest.fixture
def fake_trainer(monkeypatch):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(trainable, "TRAINER_FACTORY", FakeTrainer)
    yield FakeTrainer
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_half_gpus_run_four_trials_at_once(tmp_path, fake_trainer, street_world_tiny, capsys):
    import ray

    from vpr_tune.cli import main

    logs = tmp_path / "logs"
    logs.mkdir()
    space = tmp_path / "gpu.yaml"
    # data.root doubles as the fake trainer's log folder; --data points at the real data
    space.write_text(textwrap.dedent(f"""
        data: {{root: {logs}, image_size: [32, 32], cache: false}}
        optimizer: {{lr: {{uniform: [0.1, 0.9]}}}}
        budget: {{max_epochs: 2}}
        search: {{algorithm: random, num_samples: 4, max_concurrent: 4, scheduler: fifo}}
        resources: {{cpu: 1, gpu: 0.5}}
    """))
    ray.init(num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rc = main(["run", str(space), "--data", str(street_world_tiny), "--name", "gpu",
                   "--storage", str(tmp_path / "res")])
    finally:
        ray.shutdown()
    assert rc == 0, capsys.readouterr()
    records = [json.loads(p.read_text()) for p in logs.glob("*.json")]
    assert len(records) == 4
    for r in records:
        assert len(r["gpu_ids"]) == 1 and r["gpu_ids"][0] in ("0", "1")
        assert r["cuda_visible"] == r["gpu_ids"][0]  # the trial sees only its GPU
        assert r["threads"] == 1
    assert sorted(r["gpu_ids"][0] for r in records) == ["0", "0", "1", "1"]
    # all four overlap in time: the last start is before the first end
    assert max(r["start"] for r in records) < min(r["end"] for r in records)
    trials = read_table(tmp_path / "res" / "gpu" / "trials.csv")
    assert (trials["status"] == "TERMINATED").all() and (trials["epochs"] == 2).all()


def test_more_gpus_than_the_cluster_has_is_a_user_error(tmp_path, capsys, street_world_tiny):
    import ray

    from vpr_tune.cli import main

    space = tmp_path / "big.yaml"
    space.write_text("resources: {cpu: 1, gpu: 4}\nsearch: {num_samples: 1}\n"
                     "data: {image_size: [32, 32]}\nseed: {choice: [0, 1]}\n")
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rc = main(["run", str(space), "--data", str(street_world_tiny), "--name", "big",
                   "--storage", str(tmp_path / "res")])
    finally:
        ray.shutdown()
    assert rc == 2
    err = capsys.readouterr().err
    assert f"{space}: resources.gpu: 4 GPUs per trial but the largest Ray node has 2 CPU, " \
        "2 GPU" in err
    # refused before it started: no folder, so the same name works once the YAML is fixed
    assert not (tmp_path / "res" / "big").exists()


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
    import ray
    import ray.cloudpickle

    from vpr_tune.cli import main

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(trainable, "TRAINER_FACTORY", FailingTrainer)
    logs = tmp_path / "logs"
    logs.mkdir()
    space = tmp_path / "fail.yaml"
    space.write_text(textwrap.dedent(f"""
        data: {{root: {logs}, image_size: [32, 32], cache: false}}
        optimizer: {{lr: {{grid: [0.1, 0.5, 0.9]}}}}
        budget: {{max_epochs: 3}}
        search: {{algorithm: grid, num_samples: 1, max_concurrent: 2, scheduler: fifo}}
    """))
    try:
        rc = main(["run", str(space), "--data", str(street_world_tiny), "--name", "f",
                   "--storage", str(tmp_path / "res")])
    finally:
        ray.shutdown()
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    out = capsys.readouterr().out
    assert rc == 0, out
    trials = read_table(tmp_path / "res" / "f" / "trials.csv").set_index("optimizer.lr")
    assert trials.loc[0.1, "status"] == "ERROR"
    assert "out of memory" in trials.loc[0.1, "error"]
    assert trials.loc[0.5, "status"] == "TERMINATED" and trials.loc[0.5, "epochs"] == 3
    assert trials.loc[0.9, "status"] == "DIVERGED"
    assert "nan" in trials.loc[0.9, "error"] and trials.loc[0.9, "epochs"] == 1
    assert f"best trial {trials.loc[0.5, 'trial_id']}" in out  # failed trials never rank
