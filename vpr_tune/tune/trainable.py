"""The Ray Tune function trainable: one trial = one :class:`vpr_tune.train.Trainer`.

Reports after every epoch (``metrics.REPORTED``: ``train/loss``, ``lr``, ``val/R@N``, the
costs ``descriptor_dim``, ``query_ms``, ``params_m``; plus ``epoch``, ``node_id``) with a
checkpoint (PBT/PB2: every perturbation interval), so ASHA can stop it, PBT can clone it,
and a restarted trial resumes from its checkpoint.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vpr_tune.config import materialize
from vpr_tune.errors import DivergedError, UserError
from vpr_tune.metrics import RANKS, objectives_of, with_mean_recall, worst
from vpr_tune.tune.scratch import trial_scratch
from vpr_tune.uncertainty import encode

CHECKPOINT_FILE = "checkpoint.pt"  # everything to resume: model, optimizer, RNG, epoch
# the model of the trial's best epoch so far (what retest evaluates): Trainer.save_model, the
# format of `vpr-tune train`'s best.pt too
BEST_FILE = "best.pt"
# Tests may swap the trainer class (a fake that trains in milliseconds).
TRAINER_FACTORY: Callable[..., Any] | None = None


def _trainer_factory() -> Callable[..., Any]:
    if TRAINER_FACTORY is not None:
        return TRAINER_FACTORY
    from vpr_tune.train import Trainer

    return Trainer


def train_trial(config: dict[str, Any], base: dict[str, Any], data_root: str,
                trainer_factory: Callable[..., Any] | None = None) -> None:
    """Ray function trainable: ``config`` holds the sampled dotted parameters."""
    import ray
    import torch
    from ray import tune

    cfg = materialize(base, {k: v for k, v in config.items() if v is not None})
    ctx = ray.get_runtime_context()
    resources = ctx.get_assigned_resources()
    threads = max(1, int(resources.get("CPU", 1)))
    torch.set_num_threads(threads)
    gpu_ids = ray.get_gpu_ids()
    device = "cuda" if gpu_ids and torch.cuda.is_available() else "cpu"
    factory = trainer_factory or _trainer_factory()
    if not Path(data_root).exists():
        raise UserError(f"node {ray.util.get_node_ip_address()} cannot see the data at "
                        f"{data_root}: on a cluster the data path must exist on every node")
    trainer = factory(cfg, Path(data_root), device=device, num_threads=threads,
                      log=lambda *_a, **_k: None)
    # Every Ray checkpoint folder holds the latest state *and* the best model so far, so Ray
    # can keep only the newest folders (recency retention: a resumed experiment never points
    # at a deleted checkpoint) while the best model is never lost.
    scratch = trial_scratch()  # a stopped trial's worker is killed: see tune/scratch.py
    best = scratch / BEST_FILE
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as folder:
            folder = _load_newest_good(trainer, Path(folder))
            if (folder / BEST_FILE).exists():
                shutil.copy2(folder / BEST_FILE, best)
    extra = {"node_id": ctx.get_node_id(), "gpu_ids": ",".join(map(str, gpu_ids))}
    # what a trial that diverges before its first report says: the worst of every objective
    last: dict[str, Any] = {m: worst(mode) for m, mode in objectives_of(cfg["search"])}
    max_epochs = int(cfg["budget"]["max_epochs"])
    # PBT exploits (and resumes) at perturbation epochs: checkpoint there, not every epoch.
    every = (int(cfg["pbt"]["perturbation_interval"])
             if cfg["search"]["scheduler"] in ("pbt", "pb2") else 1)
    try:
        while trainer.epoch < max_epochs:
            try:
                row = trainer.run_epoch()
            except DivergedError as exc:
                # A marker row then stop: the search goes on, the trial is DIVERGED.
                tune.report({**last, "epoch": trainer.epoch + 1, "diverged": 1,
                             "error": str(exc)[:500], **extra})
                return
            last = {k: float(v) for k, v in with_mean_recall(row).items()
                    if isinstance(v, (int, float))}
            with _disk_full_names_file(best):
                if trainer.is_best or not best.exists():
                    trainer.save_model(best)
            report = {**last, "epoch": int(row["epoch"]), "diverged": 0, **extra}
            if getattr(trainer, "val_ranks", None) is not None:  # per-query, for intervals
                report[RANKS] = encode(trainer.val_ranks)
            if trainer.epoch % every and trainer.epoch < max_epochs:
                tune.report(report)
                continue
            with tempfile.TemporaryDirectory(prefix="ckpt-", dir=scratch) as tmp:
                with _disk_full_names_file(Path(tmp) / CHECKPOINT_FILE):
                    trainer.save_checkpoint(Path(tmp) / CHECKPOINT_FILE)
                    _link_or_copy(best, Path(tmp) / BEST_FILE)
                with _disk_full_names_file(Path(tune.get_context().get_trial_dir())):
                    tune.report(report, checkpoint=tune.Checkpoint.from_directory(tmp))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _load_newest_good(trainer: Any, folder: Path) -> Path:
    """Load ``folder``'s checkpoint; a truncated or corrupt one falls back to the trial's
    previous kept checkpoint folder (Ray keeps two). Returns the folder loaded from."""
    tried = []
    older = sorted((p for p in folder.parent.glob("checkpoint_*") if p.name < folder.name),
                   reverse=True)
    for candidate in (folder, *older):
        try:
            trainer.load_checkpoint(candidate / CHECKPOINT_FILE)
        except UserError as exc:
            tried.append(str(exc))
            continue
        if tried:
            print(f"warning: {'; '.join(tried)}; resumed from {candidate}", flush=True)
        return candidate
    raise UserError(f"no usable checkpoint to resume the trial from: {'; '.join(tried)}")


@contextmanager
def _disk_full_names_file(path: Path) -> Iterator[None]:
    """A full disk while writing ``path`` ends the trial as ERROR with one clear line."""
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise UserError(f"no space left on device: {path}") from exc
        raise


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # same filesystem: no copy
    except OSError:
        shutil.copy2(src, dst)


def make_trainable(base: dict[str, Any], data_root: Path, cpu: float, gpu: float) -> Any:
    """``train_trial`` bound to the base config and data, with per-trial resources."""
    from ray import tune

    from vpr_tune.tune.ray_env import set_ray_environment

    set_ray_environment()
    fn = tune.with_parameters(train_trial, base=base, data_root=str(data_root),
                              trainer_factory=TRAINER_FACTORY)
    return tune.with_resources(fn, {"cpu": cpu, "gpu": gpu})
