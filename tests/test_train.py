"""Training: Trainer determinism, resume, divergence, best checkpoint, the train command."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import CliRun, group_alive, make_tiny_root, tiny_cfg
from vpr_tune.errors import UserError


# ----------------------------------------------------------------------- Trainer on disk
@pytest.fixture
def tiny_root(tmp_path, monkeypatch):
    monkeypatch.setenv("VPR_TUNE_CACHE", str(tmp_path / "cache"))
    return make_tiny_root(tmp_path / "data")


def _curve(cfg, root, epochs):
    """The epoch rows without ``query_ms`` (a timing: the one value that may differ)."""
    from vpr_tune.train import Trainer

    t = Trainer(cfg, root, device="cpu", num_threads=1, log=lambda *_: None)
    return [_trained(t.run_epoch()) for _ in range(epochs)], t


def _trained(row: dict) -> dict:
    assert row["query_ms"] > 0
    return {k: v for k, v in row.items() if k != "query_ms"}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_same_seed_same_curve(tiny_root, precision) -> None:
    cfg = tiny_cfg(scheduler={"name": "cosine"}, resources={"precision": precision})
    a, ta = _curve(cfg, tiny_root, 2)
    assert ta.amp_dtype == (torch.bfloat16 if precision == "bf16" else None)
    assert not ta.scaler.is_enabled()  # only float16 scales the loss
    b, tb = _curve(cfg, tiny_root, 2)
    assert a == b
    assert all(torch.equal(x, y) for x, y in zip(ta.model.state_dict().values(),
                                                 tb.model.state_dict().values(), strict=True))
    c, _ = _curve({**cfg, "seed": 1}, tiny_root, 1)
    assert c[0]["train/loss"] != a[0]["train/loss"]
    assert set(a[0]) == {"epoch", "train/loss", "lr", "val/R@1", "val/R@5", "val/R@10",
                         "val/R@25", "val/MRR", "val/R@mean", "descriptor_dim",
                         "params_m"}  # + query_ms
    assert a[0]["descriptor_dim"] == ta.model.dim and a[0]["params_m"] > 10  # ResNet-18


@pytest.mark.parametrize("extra", [
    {"scheduler": {"name": "plateau", "patience": 0}},
    {"loss": {"name": "cosface", "lr": 0.1}, "optimizer": {"name": "adam", "lr": 1e-3}},
    {"model": {"aggregator": {"name": "netvlad", "clusters": 4}}},
])
def test_resume_equals_uninterrupted(tiny_root, tmp_path, extra) -> None:
    from vpr_tune.train import Trainer

    cfg = tiny_cfg(**extra)
    full, t_full = _curve(cfg, tiny_root, 3)
    part, t_part = _curve(cfg, tiny_root, 2)
    t_part.save_checkpoint(tmp_path / "ck" / "last.pt")
    assert not list((tmp_path / "ck").glob(".*tmp*"))  # atomic write leaves no tmp file
    resumed = Trainer(cfg, tiny_root, device="cpu", num_threads=1, log=lambda *_: None)
    resumed.load_checkpoint(tmp_path / "ck" / "last.pt")
    assert resumed.epoch == 2 and [_trained(r) for r in resumed.history] == part
    assert _trained(resumed.run_epoch()) == full[2]
    for x, y in zip(resumed.model.state_dict().values(), t_full.model.state_dict().values(),
                    strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize(("metric", "mode", "best_epoch"), [
    ("val/R@1", "max", 1), ("val/R@5", "max", 2), ("val/R@5", "min", 0)])
def test_best_follows_the_search_metric(tiny_root, monkeypatch, metric, mode,
                                        best_epoch) -> None:
    """best.pt is the best epoch by ``search.metric``/``mode``, not always by R@1."""
    from vpr_tune import train
    from vpr_tune.train import Trainer

    scripted = iter([{"R@1": 10, "R@5": 30, "R@10": 40, "R@25": 50},
                     {"R@1": 20, "R@5": 35, "R@10": 40, "R@25": 50},
                     {"R@1": 15, "R@5": 45, "R@10": 40, "R@25": 50}])
    monkeypatch.setattr(train, "evaluate_split", lambda _model, split, *a, **k: (
        next(scripted), np.zeros((len(split.q_paths), 5), dtype=np.int64)))
    cfg = tiny_cfg(search={"metric": metric, "mode": mode})
    t = Trainer(cfg, tiny_root, device="cpu", num_threads=1, log=lambda *_: None)
    marks = []
    for epoch in range(3):
        t.epoch = epoch
        t.validate()
        marks.append(t.is_best)
    assert t.best["metric"] == metric and t.best["epoch"] == best_epoch
    assert marks[0] and marks[best_epoch]


def test_diverged_on_absurd_lr(tiny_root) -> None:
    from vpr_tune.errors import DivergedError
    from vpr_tune.train import Trainer

    cfg = tiny_cfg(optimizer={"name": "sgd", "lr": 1e12, "momentum": 0.9},
                   loss={"name": "multisimilarity"},
                   budget={"batches_per_epoch": 8})
    t = Trainer(cfg, tiny_root, device="cpu", num_threads=1, log=lambda *_: None)
    with pytest.raises(DivergedError, match="loss is"):
        for _ in range(3):
            t.run_epoch()


def test_not_our_checkpoint(tmp_path) -> None:
    from vpr_tune.checkpoint import load_model_from_checkpoint

    (tmp_path / "x.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a vpr-tune checkpoint"):
        load_model_from_checkpoint(tmp_path / "x.pt")
    torch.save({"state_dict": {}}, tmp_path / "y.pt")
    with pytest.raises(UserError, match="not a vpr-tune checkpoint"):
        load_model_from_checkpoint(tmp_path / "y.pt")


# --------------------------------------------------------------------- best.pt format
MODEL_ONLY = {"format", "version", "config", "image_size", "dim", "epoch", "model", "best"}


def test_train_and_a_search_trial_write_best_pt_in_one_format(tiny_root, tmp_path,
                                                              monkeypatch) -> None:
    """``vpr-tune train``'s best.pt and a search trial's (what ``train_trial`` hands Ray) are
    the same format: the model alone, which every reader of best.pt loads."""
    import shutil
    from types import SimpleNamespace

    import ray
    from ray import tune

    from vpr_tune.checkpoint import load_model_from_checkpoint, read_checkpoint
    from vpr_tune.train import Trainer, train_run
    from vpr_tune.tune import trainable

    cfg = tiny_cfg(budget={"max_epochs": 1})
    train_run(cfg, tiny_root, tmp_path / "train", num_threads=1, log=lambda *_: None)
    # one trial in this process, Ray's side stubbed: keep what the trial checkpoints
    kept = tmp_path / "trial"

    def report(_metrics, checkpoint=None):
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                shutil.copytree(folder, kept, dirs_exist_ok=True)

    context = SimpleNamespace(get_assigned_resources=lambda: {"CPU": 1},
                              get_node_id=lambda: "n0")
    monkeypatch.setattr(ray, "get_runtime_context", lambda: context)
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    monkeypatch.setattr(tune, "report", report)
    monkeypatch.setattr(tune, "get_context",
                        lambda: SimpleNamespace(get_trial_dir=lambda: str(tmp_path)))
    trainable.train_trial({}, cfg, str(tiny_root), trainer_factory=Trainer)

    from_train = read_checkpoint(tmp_path / "train" / "best.pt")
    from_trial = read_checkpoint(kept / trainable.BEST_FILE)
    assert set(from_train) == set(from_trial) == MODEL_ONLY
    assert set(read_checkpoint(tmp_path / "train" / "last.pt")) > MODEL_ONLY  # resumable
    for path in (tmp_path / "train" / "best.pt", kept / trainable.BEST_FILE):
        model, config = load_model_from_checkpoint(path)  # eval, retest; export reads config
        assert config == cfg and model.dim == from_train["dim"]


@pytest.mark.slow
def test_a_real_search_trial_best_pt_is_the_train_format(searched_experiment, tiny_root,
                                                        tmp_path) -> None:
    from vpr_tune.checkpoint import read_checkpoint
    from vpr_tune.train import train_run
    from vpr_tune.tune.results import read_table

    train_run(tiny_cfg(budget={"max_epochs": 1}), tiny_root, tmp_path / "train",
              num_threads=1, log=lambda *_: None)
    trials = read_table(searched_experiment / "trials.csv")
    for checkpoint in trials["checkpoint"].dropna():
        assert set(read_checkpoint(checkpoint)) == MODEL_ONLY, checkpoint
    assert set(read_checkpoint(tmp_path / "train" / "best.pt")) == MODEL_ONLY


def test_cli_train_writes_run_folder(tiny_root, tmp_path, capsys) -> None:
    import csv

    import yaml

    from vpr_tune.cli import main

    cfg_path = tmp_path / "t.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "data": {"image_size": [32, 32]}, "model": {"freeze_stages": 0},
        "miner": {"name": "multisimilarity"},
        "budget": {"max_epochs": 2, "batches_per_epoch": 2, "places_per_batch": 4,
                   "images_per_place": 2, "eval_batch_size": 8},
    }))
    out = tmp_path / "run"
    args = ["train", str(cfg_path), "--data", str(tiny_root), "--out", str(out)]
    assert main(args) == 0
    for name in ("metrics.csv", "config.yaml", "last.pt", "best.pt"):
        assert (out / name).is_file(), name
    assert list(out.glob("events.out.tfevents*"))
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert rows[0]["train/loss"] == "" and float(rows[1]["train/loss"]) > 0
    assert yaml.safe_load((out / "config.yaml").read_text())["budget"]["max_epochs"] == 2
    assert main(args) == 2  # refuses to clobber a run without --resume / --overwrite
    assert "--resume" in capsys.readouterr().err
    # --resume on a finished run trains nothing more and keeps the rows
    assert main([*args, "--resume"]) == 0
    assert len(list(csv.DictReader((out / "metrics.csv").open()))) == 3


def test_cli_train_bad_key(tmp_path, capsys) -> None:
    from vpr_tune.cli import main

    (tmp_path / "t.yaml").write_text("optimiser: {name: sgd}\n")
    assert main(["train", str(tmp_path / "t.yaml")]) == 2
    assert "optimiser" in capsys.readouterr().err


def _epochs_written(metrics_csv) -> list[int]:
    import csv

    if not metrics_csv.is_file():
        return []
    with metrics_csv.open() as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def test_train_killed_mid_run_resumes_after_its_last_epoch(tiny_root, tmp_path) -> None:
    """SIGKILL during ``vpr-tune train`` loses at most the epoch in progress: ``--resume``
    goes on from last.pt, each epoch in metrics.csv once; nothing of the run is left."""
    import signal

    import yaml

    from vpr_tune.checkpoint import read_checkpoint
    from vpr_tune.cli import main

    space = {"data": {"image_size": [32, 32], "augment": False}, "model": {"freeze_stages": 0},
             "budget": {"max_epochs": 100, "batches_per_epoch": 2, "places_per_batch": 4,
                        "images_per_place": 2, "eval_batch_size": 8},
             "resources": {"precision": "fp32"}}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(space))
    out = tmp_path / "run"
    args = ["train", str(tmp_path / "t.yaml"), "--data", str(tiny_root), "--out", str(out),
            "--threads", "1"]
    with CliRun(args, tmp_path / "train.log") as run:
        run.wait_for(lambda: 1 in _epochs_written(out / "metrics.csv"), 300,
                     "epoch 1 in metrics.csv")
        run.signal(signal.SIGKILL)
        run.wait(30)
    assert run.returncode == -signal.SIGKILL
    assert not group_alive(run.pid)
    done = int(read_checkpoint(out / "last.pt")["epoch"])
    assert 1 <= done < 100 and max(_epochs_written(out / "metrics.csv")) <= done

    space["budget"]["max_epochs"] = done + 1  # one epoch more
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(space))
    assert main([*args, "--resume"]) == 0
    epochs = _epochs_written(out / "metrics.csv")
    assert epochs[-1] == done + 1 and epochs == sorted(set(epochs)), epochs
    assert int(read_checkpoint(out / "last.pt")["epoch"]) == done + 1
