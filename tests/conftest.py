"""Shared fixtures. Engineers: ADD fixtures below; do not rewrite this file."""

from __future__ import annotations

import os

import pytest

# Ray and torch must not grab every core of the 2-core test machine per process.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
os.environ.setdefault("MPLBACKEND", "Agg")


# ---------------------------------------------------------------- issue 7 (best / analysis)
def write_hand_experiment(folder, trials=None):
    """A small hand-made experiment folder in the results/<name>/ layout of docs/CONTRACTS.md.

    Six trials over 4 epochs: three finish (one stopped early by ASHA at epoch 1, one at 2),
    one ERROR and one DIVERGED with the *highest* R@1 (they must never rank), and one whose
    momentum is conditional. Checkpoints are placeholder files (retest tests that need real
    ones overwrite them). Returns the folder.
    """
    import pandas as pd
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    rows = trials or [
        # id, status, opt, lr, wd, sched, epochs, R@1 per epoch
        ("t0", "TERMINATED", "sgd", 0.01, 1e-3, "cosine", [20.0, 40.0, 55.0, 60.0]),
        ("t1", "TERMINATED", "adam", 1e-3, 1e-4, "none", [10.0]),
        ("t2", "ERROR", "sgd", 0.05, 1e-2, "none", [70.0]),
        ("t3", "DIVERGED", "adam", 0.1, 1e-5, "cosine", [80.0, 5.0]),
        ("t4", "TERMINATED", "adamw", 3e-3, 1e-2, "cosine", [25.0, 45.0, 50.0, 58.0]),
        ("t5", "TERMINATED", "sgd", 5e-4, 1e-3, "none", [15.0, 30.0]),
    ]
    trial_rows, curve_rows = [], []
    for tid, status, opt, lr, wd, sched, r1s in rows:
        ckpt = folder / f"train_{tid}" / "checkpoint_best" / "checkpoint.pt"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        ckpt.write_bytes(f"placeholder {tid}".encode())
        for epoch, r1 in enumerate(r1s, start=1):
            curve_rows.append({
                "trial_id": tid, "epoch": epoch, "train/loss": 1.0 / epoch, "lr": lr,
                "val/R@1": r1, "val/R@5": min(100.0, r1 + 15), "val/R@10": min(100.0, r1 + 25),
                "val/R@25": min(100.0, r1 + 35),
            })
        best = max(r1s)
        trial_rows.append({
            "trial_id": tid, "status": status, "optimizer.name": opt, "optimizer.lr": lr,
            "optimizer.weight_decay": wd,
            "optimizer.momentum": 0.9 if opt == "sgd" else None,
            "scheduler.name": sched, "budget.max_epochs": 4,
            "best_val/R@1": best, "last_val/R@1": r1s[-1], "best_val/R@5": min(100.0, best + 15),
            "last_val/R@5": min(100.0, r1s[-1] + 15), "epochs": len(r1s),
            "time_s": 3.0 * len(r1s), "node_id": "n0",
            "error": "boom" if status == "ERROR" else "", "checkpoint": str(ckpt.resolve()),
        })
    pd.DataFrame(trial_rows).to_csv(folder / "trials.csv", index=False)
    pd.DataFrame(curve_rows).to_csv(folder / "metrics.csv", index=False)
    space = {
        "optimizer": {
            "name": {"choice": ["sgd", "adam", "adamw"]},
            "lr": {"loguniform": [1e-4, 1e-1]},
            "weight_decay": {"loguniform": [1e-5, 1e-2]},
            "momentum": {"uniform": [0.8, 0.99], "when": {"name": "sgd"}},
        },
        "scheduler": {"name": {"choice": ["none", "cosine"]}},
        "budget": {"max_epochs": 4},
        "search": {"scheduler": "asha", "metric": "val/R@1", "mode": "max"},
        "asha": {"grace_period": 1, "reduction_factor": 2},
    }
    (folder / "space.yaml").write_text(yaml.safe_dump(space))
    return folder


@pytest.fixture
def hand_experiment(tmp_path, monkeypatch):
    """``results/hand`` under a tmp storage (also the cwd's results/), street-world data."""
    monkeypatch.delenv("VPR_TUNE_DATA", raising=False)
    return write_hand_experiment(tmp_path / "results" / "hand")


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory, street_world_tiny):
    """(street-world tiny root, [3 real checkpoints]) made with ``Trainer.save_checkpoint``:
    untrained ResNet-18 + GeM at 32 px with seeds 0..2, so their Recall@N differ."""
    from vpr_tune.config import defaults
    from vpr_tune.train import Trainer

    base = tmp_path_factory.mktemp("retest")
    root = street_world_tiny
    paths = []
    for seed in range(3):
        cfg = defaults()
        cfg["seed"] = seed
        cfg["data"].update(image_size=[32, 32], augment=False)
        cfg["budget"].update(max_epochs=1, batches_per_epoch=1, places_per_batch=4,
                             images_per_place=2, eval_batch_size=32)
        trainer = Trainer(cfg, root, device="cpu", log=lambda _m: None)
        paths.append(trainer.save_checkpoint(base / f"seed{seed}.pt"))
    return root, paths


# ---------------------------------------------------------------- issue 4 (data)
@pytest.fixture(scope="session")
def street_world_tiny(tmp_path_factory):
    """Root of a street-world ``tiny`` dataset (seed 0), generated once per test session.

    Read-only for tests: copy it (``shutil.copytree``) before changing anything.
    """
    from vpr_tune.data.street_world import synthesize

    base = tmp_path_factory.mktemp("street_world")
    return synthesize(base / "tiny", size="tiny", seed=0, log=lambda _m: None)


TINY_SPACE = """
data: {image_size: [32, 32], augment: false}
model: {aggregator: {name: gem}}
optimizer:
  name: {choice: [sgd, adam]}
  lr: {loguniform: [1.0e-3, 1.0e-1]}
budget: {max_epochs: 2, batches_per_epoch: 2, places_per_batch: 4, images_per_place: 2,
         eval_batch_size: 32}
search: {algorithm: random, num_samples: 3, max_concurrent: 1, seed: 0}
asha: {grace_period: 1, reduction_factor: 2}
resources: {cpu: 1, gpu: 0}
"""


@pytest.fixture(scope="session")
def searched_experiment(tmp_path_factory, street_world_tiny):
    """An experiment made by a real tiny search through the CLI (3 trials, 2 epochs, 32 px)."""
    base = tmp_path_factory.mktemp("search")
    space = base / "tiny.yaml"
    space.write_text(TINY_SPACE)
    storage = base / "results"
    from vpr_tune.cli import main

    rc = main(["run", str(space), "--name", "tiny", "--storage", str(storage),
               "--data", str(street_world_tiny)])
    assert rc == 0
    return storage / "tiny"
