"""One training run: the ``Trainer`` (one epoch, validation, checkpoints) and ``vpr-tune train``.

An epoch is ``budget.batches_per_epoch`` P x K batches (at ``data.image_size``) followed by
an eval on the val split (at ``config.eval_image_size``); the scheduler steps after it.
Same config + seed -> same curve on CPU (init is seeded here, sampling/augmentation by the
loader per (seed, epoch)); checkpoints hold everything needed for a resumed run to continue
exactly. The parts (splits, model, loss, optimizer...) are built by
``vpr_tune.train_setup`` from the registries in ``vpr_tune.components``; a ``replay``
schedule (an exported PBT trial) is applied by ``vpr_tune.pbt_replay``.

>>> trainer = Trainer(load_train_config("search_spaces/train_demo.yaml"), data_root)
>>> row = trainer.run_epoch()     # {"epoch": 1, "train/loss": ..., "val/R@1": ..., ...}
>>> trainer.save_checkpoint("last.pt")
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vpr_tune.atomic import write_text
from vpr_tune.checkpoint import (
    read_checkpoint,
    rng_state,
    seed_everything,
    set_rng_state,
    write_checkpoint,
)
from vpr_tune.components import build_miner, eval_image_size_problem
from vpr_tune.config import eval_image_size, load_space
from vpr_tune.errors import DivergedError, UserError
from vpr_tune.evaluate import evaluate_split
from vpr_tune.metrics import (
    DESCRIPTOR_DIM,
    LOSS,
    MRR,
    PARAMS_M,
    QUERY_MS,
    RECALLS,
    REPORTED,
    is_better,
    ranking,
    with_mean_recall,
)
from vpr_tune.model.aggregators import NetVLAD
from vpr_tune.pbt_replay import apply_optimizer_config, reconfigure, replayed_values
from vpr_tune.precision import autocast
from vpr_tune.train_setup import (
    build_loss,
    build_model_on,
    build_optimizer,
    build_train_loader,
    grad_scaler,
    init_netvlad,
    load_splits,
    pick_precision,
    torch_device,
    warm_val_cache,
)
from vpr_tune.uncertainty import first_hit_ranks, mean_reciprocal_rank


# ------------------------------------------------------------------------------ trainer
class Trainer:
    """Trains one config on ``data_root``; see the module docstring.

    >>> t = Trainer(cfg, root); t.validate(); t.run_epoch(); t.save_checkpoint("last.pt")
    """

    def __init__(self, cfg: dict[str, Any], data_root: Path, device: str | None = None,
                 num_threads: int | None = None, log: Callable[[str], Any] = print) -> None:
        self.cfg = copy.deepcopy(cfg)
        self.log = log
        self.device = torch_device(device, num_threads)
        self.cuda = self.device.type == "cuda"
        self.seed = int(cfg["seed"])
        seed_everything(self.seed)  # before the model: its init is seeded
        data, budget = cfg["data"], cfg["budget"]
        self.image_size = (int(data["image_size"][0]), int(data["image_size"][1]))  # training
        self.eval_size = tuple(eval_image_size(cfg))  # val (and query_ms) resize to this
        problem = eval_image_size_problem(cfg["model"]["backbone"],
                                          cfg["model"]["aggregator"]["name"],
                                          self.image_size, data.get("eval_image_size"))
        if problem:  # before the data and the model: one line, nothing built
            raise UserError(problem)
        self.max_epochs = int(budget["max_epochs"])
        self.batches_per_epoch = int(budget["batches_per_epoch"])
        self.eval_batch_size = int(budget["eval_batch_size"])
        self.cache = bool(data["cache"])

        self.train_split, self.val_split = load_splits(data, data_root)
        self.precision = str(cfg["resources"]["precision"])
        self.amp_dtype, self.channels_last = pick_precision(self.precision, self.device, log)
        self.model = build_model_on(cfg["model"], self.image_size, self.device,
                                    self.channels_last)
        self.loss_fn = build_loss(self.cfg, self.train_split.num_places, self.model,
                                  self.device)
        self.miner = build_miner(cfg["miner"])
        self.loader = build_train_loader(cfg, self.train_split, self.image_size, self.device,
                                         log)
        if self.cache:
            warm_val_cache(self.val_split, self.eval_size, bool(data["skip_bad_files"]), log)
        if isinstance(self.model.aggregator, NetVLAD):
            init_netvlad(self.model, self.train_split.paths, image_size=self.image_size,
                         batch_size=self.eval_batch_size, cache=self.cache, seed=self.seed,
                         device=self.device, log=log)
        self.optimizer, self.schedule = build_optimizer(
            self.cfg, self.model, self.loss_fn, self.max_epochs, self.batches_per_epoch)
        self.scaler = grad_scaler(self.device, self.amp_dtype)
        self.best_metric, self.best_mode = ranking(cfg.get("search"))  # what best.pt follows

        self.epoch = 0
        self.train_loss: float | None = None  # mean loss of the last train_epoch()
        self.best: dict[str, Any] | None = None  # {"metric", "value", "epoch"}
        self.is_best = False  # the last validate()/run_epoch() set a new best
        self.history: list[dict[str, Any]] = []
        self.timings: dict[str, float] = {}
        self._query_index: Any = None  # the val-sized database query_ms searches

    # ---------------------------------------------------------------------------- steps
    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def validate(self) -> dict[str, float]:
        """Recall@N on the val split (at the eval size) as ``{"val/R@1": ..., ...}``; tracks
        the best epoch by ``search.metric`` (``is_best``)."""
        start = time.perf_counter()
        metrics, predictions = evaluate_split(
            self.model, self.val_split, self.eval_size, self.eval_batch_size, self.device,
            cache=self.cache, precision=self.precision)
        # per query: the rank of its first positive, kept for intervals (uncertainty.py)
        self.val_ranks = first_hit_ranks(predictions, self.val_split.positives)
        self.timings["val_s"] = time.perf_counter() - start
        out = {f"val/{r}": float(metrics[r]) for r in RECALLS}
        out[MRR] = round(mean_reciprocal_rank(self.val_ranks), 4)
        out = with_mean_recall(out)
        value = {**out, LOSS: self.train_loss}[self.best_metric]
        self.is_best = (self.best is None or self.best.get("metric") != self.best_metric
                        or is_better(value, self.best["value"], self.best_mode))
        if self.is_best:
            self.best = {"metric": self.best_metric, "value": value, "epoch": self.epoch}
        return out

    def train_epoch(self, on_batch: Callable[[int, float], Any] | None = None) -> float:
        """One epoch of P x K batches; returns the mean loss. NaN/inf -> DivergedError."""
        self.model.train()
        start = time.perf_counter()
        total, count = 0.0, 0
        for b, (images, labels) in enumerate(self.loader.epoch(self.epoch)):
            self.schedule.before_batch(self.epoch, b)
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(self.device, self.amp_dtype):
                desc = self.model(images)
            desc = desc.float()
            tuples = self.miner(desc, labels) if self.miner is not None else None
            loss = self.loss_fn(desc, labels, tuples)
            value = float(loss.detach())
            if not np.isfinite(value):
                raise DivergedError(
                    f"loss is {value} at epoch {self.epoch + 1}, batch {b + 1} (lr {self.lr:g})")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += value
            count += 1
            if on_batch is not None:
                on_batch(b, value)
        self.timings["train_s"] = time.perf_counter() - start
        self.train_loss = total / max(1, count)
        return self.train_loss

    def run_epoch(self, on_batch: Callable[[int, float], Any] | None = None) -> dict[str, Any]:
        """Train one epoch, validate, step the scheduler; returns the epoch's metrics."""
        self.reconfigure(replayed_values(self.cfg, self.epoch + 1))
        loss = self.train_epoch(on_batch)
        lr = self.lr
        self.epoch += 1
        metrics = self.validate()
        self.schedule.after_epoch(self.epoch, metrics["val/R@1"])
        row = {"epoch": self.epoch, "train/loss": loss, "lr": lr, **metrics, **self.costs()}
        self.history.append(row)
        return row

    def costs(self) -> dict[str, float]:
        """What the model costs to serve (``metrics.COSTS``): descriptor size, parameters in
        millions, and median ms per query on this device (see vpr_tune/query_time.py)."""
        from vpr_tune.query_time import database_index, params_m, query_ms

        if self._query_index is None:  # built once: the descriptor size never changes
            self._query_index = database_index(len(self.val_split.db_paths), self.model.dim)
        ms = query_ms(self.model, self.eval_size, self._query_index, self.device,
                      self.precision)
        return {DESCRIPTOR_DIM: int(self.model.dim), QUERY_MS: round(ms, 4),
                PARAMS_M: params_m(self.model)}

    # ----------------------------------------------------------------------- checkpoints
    def save_checkpoint(self, path: Path | str) -> Path:
        """Write everything needed to resume (atomic: a tmp file then ``os.replace``)."""
        return self._save(path, optimizer=self.optimizer.state_dict(),
                          schedule=self.schedule.state_dict(), loss=self.loss_fn.state_dict(),
                          scaler=self.scaler.state_dict(), history=self.history,
                          rng=rng_state())

    def save_model(self, path: Path | str) -> Path:
        """Write the model alone (config, weights, epoch, best; no optimizer or RNG state):
        the one format of every ``best.pt``, ``vpr-tune train``'s and a search trial's, which
        eval, retest, export and ``model.pretrained`` read. Atomic like
        :meth:`save_checkpoint`, which writes a superset of it."""
        return self._save(path)

    def _save(self, path: Path | str, **extra: Any) -> Path:
        return write_checkpoint(path, {
            "config": self.cfg, "image_size": list(self.image_size), "dim": self.model.dim,
            "epoch": self.epoch, "model": self.model.state_dict(), "best": self.best, **extra})

    def load_checkpoint(self, path: Path | str) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint` (same model config)."""
        state = read_checkpoint(path)
        try:
            self.model.load_state_dict(state["model"])
            self.loss_fn.load_state_dict(state["loss"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise UserError(f"{path}: checkpoint does not match this config ({exc})") from exc
        self.schedule.load_state_dict(state["schedule"])
        apply_optimizer_config(self.optimizer, self.schedule, self.cfg)
        self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.best = state["best"]
        self.history = list(state["history"])
        self.reconfigure(replayed_values(self.cfg, self.epoch))  # a resumed replay
        set_rng_state(state["rng"])

    def reconfigure(self, values: dict[str, Any]) -> None:
        """Train on with these dotted optimizer/loss/miner values (a PBT exploit in
        process); see :func:`vpr_tune.pbt_replay.reconfigure`."""
        reconfigure(self, values)


# ------------------------------------------------------------------------- train command
METRIC_COLUMNS = ["epoch", *REPORTED, "time_s"]


def load_train_config(path: Path | str) -> dict[str, Any]:
    """The resolved config of a train YAML (search-space schema, every value fixed)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"config {path} is a directory; expected a YAML file")
    if not path.is_file():
        raise UserError(f"config {path} does not exist")
    space = load_space(path)
    if space.params:
        raise UserError(f"{path}: train needs fixed values; these vary: "
                        f"{', '.join(sorted(space.params))} (use `vpr-tune run` to search)")
    return copy.deepcopy(space.base)


def yaml_threads(path: Path | str) -> int | None:
    """The torch threads a train YAML asks for: its ``resources.cpu`` as a search trial gets
    them (Ray hands a trial ``int(cpu)`` threads, at least one); None when it names none.
    A trial exported with ``best --export`` then trains on as many threads as it ran on,
    which is what makes its curve repeat (thread counts change float sums)."""
    from vpr_tune.config import read_yaml

    raw = read_yaml(Path(path).read_text(), str(path))
    resources = raw.get("resources") if isinstance(raw, dict) else None
    cpu = resources.get("cpu") if isinstance(resources, dict) else None
    return max(1, int(cpu)) if isinstance(cpu, (int, float)) and cpu > 0 else None


def train_run(
    cfg: dict[str, Any], data_root: Path, out_dir: Path, resume: bool = False,
    device: str | None = None, num_threads: int | None = None,
    log: Callable[[str], Any] = print,
    on_epoch: Callable[[dict[str, Any]], Any] | None = None,
    on_batch: Callable[[int, float], Any] | None = None,
) -> list[dict[str, Any]]:
    """Train ``cfg`` into ``out_dir``: config.yaml, metrics.csv (epoch 0 = untrained val
    recall), TensorBoard events, last.pt (everything to resume) and best.pt (the best
    epoch's model, :meth:`Trainer.save_model`). Returns the metric rows."""
    import csv
    import io

    import yaml
    from torch.utils.tensorboard import SummaryWriter

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    trainer = Trainer(cfg, data_root, device=device, num_threads=num_threads, log=log)
    metrics_path = out_dir / "metrics.csv"
    rows: list[dict[str, Any]] = []
    if resume and (out_dir / "last.pt").is_file():
        trainer.load_checkpoint(out_dir / "last.pt")
        if metrics_path.is_file():
            with metrics_path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= trainer.epoch]
        log(f"resumed from {out_dir / 'last.pt'} after epoch {trainer.epoch}")
    elif resume:
        log(f"--resume: nothing to resume in {out_dir} (no last.pt): starting fresh")
    writer = SummaryWriter(log_dir=str(out_dir))

    def record(row: dict[str, Any]) -> None:
        rows.append(row)
        text = io.StringIO(newline="")
        table = csv.DictWriter(text, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        table.writeheader()
        table.writerows(rows)
        write_text(metrics_path, text.getvalue())  # rewritten whole, atomically
        for key, value in row.items():
            if key != "epoch" and value not in ("", None):
                writer.add_scalar(key, float(value), int(row["epoch"]))
        writer.flush()
        if on_epoch is not None:
            on_epoch(row)

    try:
        if trainer.epoch == 0:
            start = time.perf_counter()
            row = {"epoch": 0, "train/loss": "", "lr": trainer.lr, **trainer.validate(),
                   **trainer.costs(), "time_s": round(time.perf_counter() - start, 2)}
            trainer.save_model(out_dir / "best.pt")  # the untrained model is the best so far
            record(row)
        while trainer.epoch < trainer.max_epochs:
            start = time.perf_counter()
            row = trainer.run_epoch(on_batch)
            row["time_s"] = round(time.perf_counter() - start, 2)
            if trainer.is_best:
                trainer.save_model(out_dir / "best.pt")
            trainer.save_checkpoint(out_dir / "last.pt")
            record(row)
    finally:
        writer.close()
    return rows
