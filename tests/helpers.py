"""What several test files share: tiny search spaces (a dict, or YAML text), a hand-made
experiment, a fake trainer, the CLI in a subprocess, the check for a one-line error.

>>> from tests.helpers import CliRun, FakeTrainer, tiny_space, use_trainer, write_space
>>> path = write_space(tmp_path / "s.yaml", search={"num_samples": 4})
>>> with use_trainer(monkeypatch, FakeTrainer): ...   # Ray trials train nothing
>>> with CliRun(["run", path, "--name", "x"], tmp_path / "run.log") as run:
...     run.wait_for(lambda: (tmp_path / "results/x/trials.csv").exists(), 300, "trials.csv")
...     run.signal(signal.SIGKILL)

Fixtures built on these live in ``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

# The smallest space that really trains: 32 px, ResNet-18 cut at layer3 + GeM, 2 epochs of
# 2 batches of 4 places x 2 images, one trial at a time on 1 CPU, in float32 everywhere
# (``auto`` picks bfloat16 on some CPUs: other curves, other speed, and tests that stop or
# kill a search part-way are sized for float32).
TINY: dict[str, Any] = {
    "seed": 0,
    "data": {"image_size": [32, 32], "augment": False},
    "model": {"backbone": "resnet18", "cut": "layer3", "freeze_stages": 0,
              "aggregator": {"name": "gem"}},
    "loss": {"name": "multisimilarity"},
    "miner": {"name": "multisimilarity"},
    "optimizer": {"name": "adam", "lr": {"loguniform": [1.0e-3, 1.0e-2]}},
    "budget": {"max_epochs": 2, "batches_per_epoch": 2, "places_per_batch": 4,
               "images_per_place": 2, "eval_batch_size": 32},
    "search": {"algorithm": "random", "num_samples": 3, "seed": 0, "max_concurrent": 1,
               "scheduler": "fifo"},
    "asha": {"grace_period": 1, "reduction_factor": 2},
    "resources": {"cpu": 1, "gpu": 0, "precision": "fp32"},
}


def tiny_space(**sections: dict[str, Any]) -> dict[str, Any]:
    """:data:`TINY` with the keys of each given section replaced, e.g.
    ``tiny_space(optimizer={"lr": {"grid": [0.1, 0.5]}})`` keeps ``optimizer.name``."""
    space = copy.deepcopy(TINY)
    for name, keys in sections.items():
        space.setdefault(name, {}).update(copy.deepcopy(keys))
    return space


def write_space(path: Path, **sections: dict[str, Any]) -> Path:
    """Write ``tiny_space(**sections)`` as YAML to ``path``; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(tiny_space(**sections), sort_keys=False))
    return path


# A two-trial search as YAML text, for tests that edit it as text (``.replace``).
SMALL_SPACE_YAML = """
data: {image_size: [32, 32], augment: false}
optimizer:
  name: adam
  lr: {loguniform: [1.0e-3, 1.0e-2]}
budget: {max_epochs: 2, batches_per_epoch: 2, places_per_batch: 4, images_per_place: 2}
search: {algorithm: random, num_samples: 2, max_concurrent: 1, scheduler: fifo}
resources: {cpu: 1, gpu: 0}
"""


def write_yaml(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    """Write ``text`` (dedented) to ``tmp_path / name``; returns the path."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_line(capsys: Any) -> str:
    """The one non-blank line on stderr; fails on several lines or a traceback."""
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


class FakeTrainer:
    """Trains nothing: sleeps, logs what Ray gave it, reports R@1 from the lr.

    ``data.root`` of the space doubles as the folder of its logs (one JSON per trial
    process); pass the real data with ``--data``.
    """

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
        dim = int(self.cfg["model"]["aggregator"].get("dim", 256))
        return {"epoch": self.epoch, "train/loss": 1.0 / self.epoch, "lr": 0.01,
                "val/R@1": r1, "val/R@5": r1, "val/R@10": r1, "val/R@25": r1,
                "descriptor_dim": dim, "query_ms": dim / 100.0, "params_m": 11.0}

    def save_checkpoint(self, path):
        Path(path).write_text(json.dumps({"epoch": self.epoch}))
        return Path(path)

    def save_model(self, path):
        return self.save_checkpoint(path)

    def load_checkpoint(self, path):
        self.epoch = json.loads(Path(path).read_text())["epoch"]


@contextmanager
def use_trainer(monkeypatch: Any, cls: type) -> Iterator[type]:
    """Ray trials build ``cls`` instead of the real Trainer for the block.

    Ray workers cannot import the test modules, so the modules defining ``cls`` (and this
    one) are pickled by value.
    """
    import ray.cloudpickle

    from vpr_tune.tune import trainable

    modules = {sys.modules[__name__], sys.modules[cls.__module__]}
    for module in modules:
        ray.cloudpickle.register_pickle_by_value(module)
    monkeypatch.setattr(trainable, "TRAINER_FACTORY", cls)
    try:
        yield cls
    finally:
        for module in modules:
            ray.cloudpickle.unregister_pickle_by_value(module)


def write_hand_experiment(folder, trials=None):
    """A small hand-made experiment folder in the ``results/<name>/`` layout `run` writes.

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


def make_tiny_root(root, places: int = 8, views: int = 4, size: int = 40, seed: int = 0):
    """A tiny data root in the real on-disk format (GSV-XS train + SF-XS val): each place
    is a random colour pattern, its images noisy shifted copies; val queries look like
    their place and lie within 25 m of its database image."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    patterns = rng.integers(0, 256, size=(places, 5, 5, 3)).astype(np.float32)

    def view(i: int) -> Image.Image:
        img = np.kron(patterns[i], np.ones((size // 5 + 2, size // 5 + 2, 1)))
        dy, dx = rng.integers(0, 4, size=2)
        img = img[dy : dy + size, dx : dx + size] + rng.normal(0, 20, (size, size, 3))
        return Image.fromarray(img.clip(0, 255).astype(np.uint8))

    def name(i: int, j: int, note: str = "") -> str:
        east, north = 500000 + 200 * i + j, 4180000.0 + j
        return f"@{east:.2f}@{north:.2f}@10@S@37.7@-122.5@pano{i}x{j}@@@@@@201904@{note}@.jpg"

    for i in range(places):
        city = root / "gsv_xs" / "train" / "town"
        city.mkdir(parents=True, exist_ok=True)
        for j in range(views):
            view(i).save(city / name(i, j, f"{i}_Town"))
        for sub, j in (("database", 0), ("queries", 5)):
            folder = root / "sf_xs" / "val" / sub
            folder.mkdir(parents=True, exist_ok=True)
            view(i).save(folder / name(i, j))
    return root


def tiny_cfg(**over):
    from vpr_tune.config import defaults

    cfg = defaults()
    cfg["data"].update(image_size=[32, 32])
    cfg["model"].update(freeze_stages=0)
    cfg["optimizer"] = {"name": "sgd", "lr": 0.01, "weight_decay": 0.0}
    cfg["budget"].update(max_epochs=3, batches_per_epoch=2, places_per_batch=4,
                         images_per_place=2, eval_batch_size=8)
    for section, values in over.items():
        cfg[section] = {**cfg[section], **values} if isinstance(values, dict) else values
    return cfg


def run_cli(args: list[str]) -> int:
    """``vpr-tune ARGS`` through ``cli.main``, then Ray shut down whatever happened (the next
    test starts its own)."""
    import ray

    from vpr_tune.cli import main

    try:
        return main(args)
    finally:
        ray.shutdown()


# ------------------------------------------------------------- the CLI in a subprocess
class CliRun:
    """``python -m vpr_tune ARGS`` in a process group of its own, its output in ``log``.

    Use it as a context manager: leaving the block (whatever happened in it) kills the
    process if it still runs and every process left in its group (the Ray processes a
    killed driver leaves behind). Wait on events in files (:meth:`wait_for`), not on time::

        with CliRun(["run", space, "--name", "x", "--storage", storage], log) as run:
            run.wait_for(lambda: rows(storage / "x" / "trials.csv") >= 1, 300,
                         "a trial row in trials.csv")
            run.signal(signal.SIGTERM)
            run.wait(60)
        assert run.returncode == 143, run.output()
    """

    def __init__(self, args: list[Any], log: Path, env: dict[str, str] | None = None) -> None:
        self.command = [sys.executable, "-m", "vpr_tune", *map(str, args)]
        self.log = Path(log)
        self.env = env
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> CliRun:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("w") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT,
                                         env=self.env, start_new_session=True)
        return self

    def __exit__(self, *_exc: Any) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # its group: Ray's processes

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def output(self) -> str:
        """Everything it printed so far (stdout and stderr)."""
        return self.log.read_text(errors="replace")

    def wait_for(self, condition: Callable[[], Any], timeout: float, what: str) -> None:
        """Poll ``condition`` (an event in a file: a row in trials.csv, an epoch in Ray's
        result.json) until it holds; fail if the process ends first or after ``timeout``
        seconds (only a broken run waits that long)."""
        import pytest

        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                pytest.fail(f"vpr-tune exited ({self.proc.returncode}) before {what}:\n"
                            f"{self.output()[-5000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} after {timeout} s:\n{self.output()[-5000:]}")
            time.sleep(0.5)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process itself (not its group: as a user's kill would)."""
        os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> int:
        """Its exit status once it ends (``subprocess.TimeoutExpired`` after ``timeout``)."""
        return self.proc.wait(timeout=timeout)


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` still runs."""
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def live_reports(exp: Path) -> dict[str, list[dict]]:
    """Every epoch row of experiment folder ``exp`` by trial, in order, from the driver's
    live log (``epochs.jsonl``, written as results arrive; Ray's result.json files reach the
    experiment folder only when Ray syncs its state)."""
    from vpr_tune.tune.results import EPOCH_LOG, read_result_rows

    out: dict[str, list[dict]] = {}
    for row in read_result_rows(exp, EPOCH_LOG) if Path(exp).is_dir() else []:
        out.setdefault(str(row["trial_id"]), []).append(row)
    return out


def ray_reports(exp: Path) -> dict[str, list[dict]]:
    """Every epoch row each trial of experiment folder ``exp`` reported, in order, straight
    from Ray's result.json files (repeats included: a trial restarted from epoch 0 reports
    epoch 1 twice)."""
    out: dict[str, list[dict]] = {}
    for path in Path(exp).glob("*/result.json"):
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # the line being written right now
                continue
        rows = [r for r in rows if "epoch" in r]
        if rows:
            out[rows[0]["trial_id"]] = rows
    return out
