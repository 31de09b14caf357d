"""One training run: the ``Trainer`` (one epoch, validation, checkpoints) and ``vpr-tune train``.

An epoch is ``budget.batches_per_epoch`` P x K batches followed by an eval on the val split;
the scheduler steps after it. Same config + seed -> same curve on CPU (init is seeded here,
sampling/augmentation by the loader per (seed, epoch)); checkpoints hold everything needed
for a resumed run to continue exactly. The loss, miner, optimizer and scheduler come from
the registries in ``vpr_tune.components``.

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
from vpr_tune.components import (
    build_loss,
    build_miner,
    build_optimizer,
    optimizer_hyperparams,
)
from vpr_tune.config import load_space, materialize
from vpr_tune.errors import DivergedError, UserError
from vpr_tune.evaluate import evaluate
from vpr_tune.metrics import (
    DEFAULT_METRIC,
    DESCRIPTOR_DIM,
    LOSS,
    PARAMS_M,
    QUERY_MS,
    RECALLS,
    REPORTED,
    SEARCHABLE,
    is_better,
    mode_of,
)
from vpr_tune.model import build_model
from vpr_tune.model.aggregators import NetVLAD
from vpr_tune.precision import autocast, autocast_dtype, channels_last
from vpr_tune.schedule import LRSchedule


# ------------------------------------------------------------------------------ trainer
class Trainer:
    """Trains one config on ``data_root``; see the module docstring.

    >>> t = Trainer(cfg, root); t.validate(); t.run_epoch(); t.save_checkpoint("last.pt")
    """

    def __init__(self, cfg: dict[str, Any], data_root: Path, device: str | None = None,
                 num_threads: int | None = None, log: Callable[[str], Any] = print) -> None:
        from vpr_tune.data.cache import cached_images
        from vpr_tune.data.loader import TrainLoader
        from vpr_tune.data.splits import find_split, load_eval_split, load_train_split
        from vpr_tune.progress import log_progress

        self.cfg = copy.deepcopy(cfg)
        self.log = log
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.cuda = self.device.type == "cuda"
        if num_threads and not self.cuda:
            torch.set_num_threads(int(num_threads))
        self.seed = int(cfg["seed"])
        seed_everything(self.seed)

        data, budget = cfg["data"], cfg["budget"]
        self.image_size = (int(data["image_size"][0]), int(data["image_size"][1]))
        self.max_epochs = int(budget["max_epochs"])
        self.eval_batch_size = int(budget["eval_batch_size"])
        self.cache = bool(data["cache"])
        root = Path(data_root)
        skip = bool(data["skip_bad_files"])
        self.train_split = load_train_split(
            find_split(root, data["train"]),
            min_images_per_place=int(data["min_images_per_place"]), skip_bad_files=skip)
        self.val_split = load_eval_split(
            find_split(root, data["val"]), skip_bad_files=skip)

        self.model = build_model(cfg["model"], self.image_size).to(self.device)
        self.precision = str(cfg["resources"]["precision"])
        self.amp_dtype = autocast_dtype(self.precision, self.device)
        self.channels_last = channels_last(self.device, self.amp_dtype)
        amp = f"{str(self.amp_dtype)[len('torch.'):]} autocast" if self.amp_dtype else "float32"
        log(f"precision: {self.precision} -> {amp} on {self.device.type}")
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.loss_fn = self._build_loss()
        self.miner = build_miner(cfg["miner"])

        places = int(budget["places_per_batch"])
        if places > self.train_split.num_places:
            log(f"budget.places_per_batch {places} > {self.train_split.num_places} places "
                "in the train split: using all places per batch")
            places = self.train_split.num_places
        self.batches_per_epoch = int(budget["batches_per_epoch"])
        size = f"{self.image_size[0]}x{self.image_size[1]}"
        self.loader = TrainLoader(
            self.train_split, self.image_size, places, int(budget["images_per_place"]),
            self.batches_per_epoch, self.seed, augment=data["augment"],
            cache=self.cache, device=str(self.device), skip_bad_files=skip,
            progress=log_progress(log, f"image cache (train, {size})"))
        if self.cache:  # the val cache too, now and with progress, not silently at epoch 1
            cached_images([*self.val_split.db_paths, *self.val_split.q_paths], self.image_size,
                          skip_bad_files=skip,
                          progress=log_progress(log, f"image cache (val, {size})"))

        if isinstance(self.model.aggregator, NetVLAD):
            self._init_netvlad()
        self.optimizer, self.schedule = self._build_optimizer()
        # Only float16 needs loss scaling (bfloat16 has float32's range).
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.amp_dtype == torch.float16)
        self.epoch = 0
        # best.pt follows the search's metric (val/R@1 unless the YAML says otherwise).
        search = cfg.get("search") or {}
        self.best_metric = str(search.get("metric") or DEFAULT_METRIC)
        if self.best_metric not in SEARCHABLE:
            self.best_metric = DEFAULT_METRIC
        self.best_mode = mode_of({**search, "metric": self.best_metric})
        self.train_loss: float | None = None  # mean loss of the last train_epoch()
        self.best: dict[str, Any] | None = None  # {"metric", "value", "epoch"}
        self.is_best = False  # the last validate()/run_epoch() set a new best
        self.history: list[dict[str, Any]] = []
        self.timings: dict[str, float] = {}
        self._query_index: Any = None  # the val-sized database query_ms searches

    # -------------------------------------------------------------------------- netvlad
    def _init_netvlad(self, images: int = 500, per_image: int = 64) -> None:
        """k-means on local features of (up to) ``images`` training images (seeded)."""
        from vpr_tune.data.loader import eval_batches

        rng = np.random.default_rng(self.seed)
        paths = self.train_split.paths
        pick = rng.choice(len(paths), size=min(images, len(paths)), replace=False)
        chunks: list[np.ndarray] = []
        self.model.eval()
        with torch.inference_mode():
            for batch in eval_batches([paths[i] for i in sorted(pick)], self.image_size,
                                      self.eval_batch_size, cache=self.cache, device="cpu"):
                feats = torch.nn.functional.normalize(
                    self.model.features(batch.to(self.device)).float(), dim=1)
                feats = feats.flatten(2).transpose(1, 2).reshape(-1, feats.shape[1])
                take = rng.choice(len(feats), size=min(len(feats), per_image * len(batch)),
                                  replace=False)
                chunks.append(feats[torch.from_numpy(take).to(feats.device)].cpu().numpy())
        self.model.train()
        features = np.concatenate(chunks)
        self.log(f"NetVLAD: k-means on {len(features)} local features")
        self.model.aggregator.init_from_descriptors(features, seed=self.seed)

    # ---------------------------------------------------------------------------- steps
    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def validate(self) -> dict[str, float]:
        """Recall@N on the val split as ``{"val/R@1": ..., ...}``; tracks the best epoch by
        ``search.metric`` (``is_best``)."""
        start = time.perf_counter()
        metrics = evaluate(self.model, self.val_split, self.image_size, self.eval_batch_size,
                           self.device, cache=self.cache, precision=self.precision)
        self.timings["val_s"] = time.perf_counter() - start
        out = {f"val/{r}": float(metrics[r]) for r in RECALLS}
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
        ms = query_ms(self.model, self.image_size, self._query_index, self.device,
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
        """Write the model alone (no optimizer or RNG state): enough for ``eval`` and retest,
        a third of a full checkpoint with Adam. Atomic like :meth:`save_checkpoint`."""
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
        self._apply_optimizer_config()
        self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.best = state["best"]
        self.history = list(state["history"])
        self.reconfigure(replayed_values(self.cfg, self.epoch))  # a resumed replay
        set_rng_state(state["rng"])

    def reconfigure(self, values: dict[str, Any]) -> None:
        """Train on with these dotted optimizer/loss/miner values (``{"optimizer.lr": x}``):
        in process what a PBT exploit does through a checkpoint. The loss and miner are
        rebuilt (keeping the loss's learned state), the optimizer's groups get the new
        values and the lr schedule is rebased on the new lr."""
        changed = {k: v for k, v in values.items() if _dotted_get(self.cfg, k) != v}
        if not changed:
            return
        self.cfg = materialize(self.cfg, changed)
        if any(k.startswith("loss.") for k in changed):
            optimizer, schedule = self.optimizer.state_dict(), self.schedule.state_dict()
            loss_state = self.loss_fn.state_dict()
            self.loss_fn = self._build_loss()
            self.loss_fn.load_state_dict(loss_state)
            self.optimizer, self.schedule = self._build_optimizer()
            self.optimizer.load_state_dict(optimizer)
            self.schedule.load_state_dict(schedule)
        if any(k.startswith("miner.") for k in changed):
            self.miner = build_miner(self.cfg["miner"])
        self._apply_optimizer_config()
        self.log(f"epoch {self.epoch + 1}: replay sets "
                 + ", ".join(f"{k}={v:g}" for k, v in changed.items()))

    def _build_loss(self) -> torch.nn.Module:
        return build_loss(self.cfg["loss"], self.train_split.num_places,
                          self.model.dim).to(self.device)

    def _build_optimizer(self) -> tuple[torch.optim.Optimizer, LRSchedule]:
        optimizer = build_optimizer(self.cfg["optimizer"], self.model, self.loss_fn,
                                    self.cfg["loss"].get("lr"))  # only classifier losses
        return optimizer, LRSchedule(optimizer, self.cfg["scheduler"], self.max_epochs,
                                     self.batches_per_epoch)

    def _apply_optimizer_config(self) -> None:
        """Set this config's lr, weight decay, momentum... on the restored optimizer: after a
        PBT exploit the checkpoint holds the source trial's values. The same config -> no-op."""
        base, settings = optimizer_hyperparams(self.cfg["optimizer"], self.cfg["loss"],
                                               len(self.optimizer.param_groups))
        for group in self.optimizer.param_groups:
            group.update({k: v for k, v in settings.items() if k in group})
        if [round(b, 15) for b in base] != [round(b, 15) for b in self.schedule.base]:
            self.schedule.rebase(base)


def replayed_values(cfg: dict[str, Any], epoch: int) -> dict[str, Any]:
    """The values ``cfg["replay"]`` has set by ``epoch`` (1-based; later entries win)."""
    values: dict[str, Any] = {}
    for entry in cfg.get("replay") or []:
        if int(entry["epoch"]) <= epoch:
            values.update({k: v for k, v in entry.items() if k != "epoch"})
    return values


def _dotted_get(cfg: dict[str, Any], key: str) -> Any:
    section, _, name = key.partition(".")
    return cfg.get(section, {}).get(name)


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


def train_run(
    cfg: dict[str, Any], data_root: Path, out_dir: Path, resume: bool = False,
    device: str | None = None, num_threads: int | None = None,
    log: Callable[[str], Any] = print,
    on_epoch: Callable[[dict[str, Any]], Any] | None = None,
    on_batch: Callable[[int, float], Any] | None = None,
) -> list[dict[str, Any]]:
    """Train ``cfg`` into ``out_dir``: config.yaml, metrics.csv (epoch 0 = untrained val
    recall), TensorBoard events, last.pt and best.pt. Returns the metric rows."""
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
            trainer.save_checkpoint(out_dir / "best.pt")  # the untrained model is the best so far
            record(row)
        while trainer.epoch < trainer.max_epochs:
            start = time.perf_counter()
            row = trainer.run_epoch(on_batch)
            row["time_s"] = round(time.perf_counter() - start, 2)
            if trainer.is_best:
                trainer.save_checkpoint(out_dir / "best.pt")
            trainer.save_checkpoint(out_dir / "last.pt")
            record(row)
    finally:
        writer.close()
    return rows
