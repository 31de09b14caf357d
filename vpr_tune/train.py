"""One training run: registries (loss, miner, optimizer, scheduler) and the ``Trainer``.

Each registry maps the YAML name to a ``Spec(build, defaults)``; ``defaults`` lists every
parameter the YAML may set for that name, so adding an entry is one line and
``allowed_params(family, name)`` answers the config validator.

An epoch is ``budget.batches_per_epoch`` P x K batches followed by an eval on the val split;
the scheduler steps after it. Same config + seed -> same curve on CPU (init is seeded here,
sampling/augmentation by the loader per (seed, epoch)); checkpoints hold everything needed
for a resumed run to continue exactly.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from vpr_tune.atomic import atomic_path
from vpr_tune.config import SEARCH_METRICS
from vpr_tune.errors import DivergedError, UserError
from vpr_tune.evaluate import NS, evaluate
from vpr_tune.model import VPRModel, aggregator_params, build_model
from vpr_tune.model.aggregators import NetVLAD
from vpr_tune.precision import autocast, autocast_dtype, channels_last

CHECKPOINT_FORMAT = "vpr-tune-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class Spec:
    """A registry entry: ``build(**params)`` and every allowed parameter with its default."""

    build: Callable[..., Any]
    defaults: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- registries
# ArcFace/CosFace also get num_classes and embedding_size, and `lr` for their param group
# (None -> optimizer.lr).
LOSSES: dict[str, Spec] = {
    "contrastive": Spec(pml_losses.ContrastiveLoss, {"pos_margin": 0.0, "neg_margin": 1.0}),
    "triplet": Spec(pml_losses.TripletMarginLoss, {"margin": 0.05, "swap": False,
                                                   "smooth_loss": False}),
    "multisimilarity": Spec(pml_losses.MultiSimilarityLoss, {"alpha": 2.0, "beta": 50.0,
                                                             "base": 0.5}),
    "circle": Spec(pml_losses.CircleLoss, {"m": 0.4, "gamma": 80.0}),
    "arcface": Spec(pml_losses.ArcFaceLoss, {"margin": 28.6, "scale": 64.0, "lr": None}),
    "cosface": Spec(pml_losses.CosFaceLoss, {"margin": 0.35, "scale": 64.0, "lr": None}),
}
CLASSIFIER_LOSSES = ("arcface", "cosface")

MINERS: dict[str, Spec] = {
    "none": Spec(lambda: None),
    "multisimilarity": Spec(pml_miners.MultiSimilarityMiner, {"epsilon": 0.1}),
    "batchhard": Spec(pml_miners.BatchHardMiner),
    "tripletmargin": Spec(pml_miners.TripletMarginMiner, {"margin": 0.2,
                                                          "type_of_triplets": "all"}),
    "pairmargin": Spec(pml_miners.PairMarginMiner, {"pos_margin": 0.2, "neg_margin": 0.8}),
}


def _sgd(params: Any, lr: float, weight_decay: float, momentum: float, nesterov: bool) -> Any:
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum,
                           nesterov=bool(nesterov) and momentum > 0)


def _adam(cls: type) -> Callable[..., Any]:
    def build(params: Any, lr: float, weight_decay: float, beta1: float, beta2: float,
              eps: float) -> Any:
        return cls(params, lr=lr, weight_decay=weight_decay, betas=(beta1, beta2), eps=eps)

    return build


_ADAM = {"lr": 1e-3, "weight_decay": 0.0, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
OPTIMIZERS: dict[str, Spec] = {
    "sgd": Spec(_sgd, {"lr": 0.0025, "weight_decay": 0.0, "momentum": 0.9, "nesterov": False}),
    "adam": Spec(_adam(torch.optim.Adam), _ADAM),
    "adamw": Spec(_adam(torch.optim.AdamW), {**_ADAM, "weight_decay": 0.01}),
    "asgd": Spec(torch.optim.ASGD, {"lr": 0.01, "weight_decay": 0.0, "lambd": 1e-4,
                                    "alpha": 0.75, "t0": 1e6}),
}

_sched = torch.optim.lr_scheduler
# Builders get (optimizer, epochs after warm-up, warm-up epochs, **params).
SCHEDULERS: dict[str, Spec] = {
    "none": Spec(lambda opt, epochs, warmup: None),
    "cosine": Spec(lambda opt, epochs, warmup, eta_min: _sched.CosineAnnealingLR(
        opt, T_max=max(1, epochs), eta_min=eta_min), {"eta_min": 0.0}),
    "plateau": Spec(lambda opt, epochs, warmup, factor, patience, threshold, min_lr:
                    _sched.ReduceLROnPlateau(opt, mode="max", factor=factor, patience=patience,
                                             threshold=threshold, min_lr=min_lr),
                    {"factor": 0.1, "patience": 2, "threshold": 1e-4, "min_lr": 0.0}),
    # milestones count epochs from the start of training, warm-up included
    "multistep": Spec(lambda opt, epochs, warmup, milestones, gamma: _sched.MultiStepLR(
        opt, milestones=[max(1, int(m) - warmup) for m in milestones], gamma=gamma),
        {"milestones": [6, 8], "gamma": 0.1}),
}
SCHEDULER_COMMON = {"warmup_epochs": 0, "warmup_per_batch": True}

FAMILIES: dict[str, dict[str, Spec]] = {
    "loss": LOSSES, "miner": MINERS, "optimizer": OPTIMIZERS, "scheduler": SCHEDULERS,
}


def allowed_params(family: str, name: str) -> set[str]:
    """Parameter keys (besides ``name``) the YAML section ``family`` may set for ``name``.

    ``family`` is one of loss, miner, optimizer, scheduler, aggregator."""
    if family == "aggregator":
        return aggregator_params(name)
    if family not in FAMILIES:
        raise UserError(f"unknown config section {family!r}; one of {', '.join(FAMILIES)}, "
                        "aggregator")
    registry = FAMILIES[family]
    if name not in registry:
        raise UserError(f"{family}.name: {name!r} is not one of {', '.join(registry)}")
    extra = set(SCHEDULER_COMMON) if family == "scheduler" else set()
    return set(registry[name].defaults) | extra


def resolve_params(family: str, section: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """``(name, params)`` with defaults filled in; unknown keys -> UserError listing allowed."""
    section = dict(section or {})
    name = section.pop("name", "none" if family in ("miner", "scheduler") else None)
    allowed = allowed_params(family, name)
    unknown = set(section) - allowed
    if unknown:
        raise UserError(f"{family}: {', '.join(sorted(unknown))} not a parameter of {name!r} "
                        f"(allowed: {', '.join(sorted(allowed)) or 'none'})")
    defaults = {**(SCHEDULER_COMMON if family == "scheduler" else {}),
                **FAMILIES[family][name].defaults}
    params = {**defaults, **section}
    for key, value in params.items():  # YAML 1.1 reads "1e-3" as a string
        if isinstance(defaults.get(key), float) and isinstance(value, str | int):
            try:
                params[key] = float(value)
            except ValueError as exc:
                raise UserError(f"{family}.{key}: {value!r} is not a number") from exc
    return name, params


def build_loss(section: dict[str, Any], num_places: int, dim: int) -> torch.nn.Module:
    """Loss module; classifier losses get a (num_places x dim) weight matrix."""
    name, params = resolve_params("loss", section)
    params.pop("lr", None)
    if name in CLASSIFIER_LOSSES:
        params.update(num_classes=int(num_places), embedding_size=int(dim))
    return LOSSES[name].build(**params)


def build_miner(section: dict[str, Any] | None) -> Any:
    """PML miner, or None for ``none``."""
    name, params = resolve_params("miner", section)
    return MINERS[name].build(**params)


def build_optimizer(
    section: dict[str, Any], model: torch.nn.Module, loss_fn: torch.nn.Module | None = None,
    loss_lr: float | None = None,
) -> torch.optim.Optimizer:
    """Optimizer over trainable model parameters; loss parameters (ArcFace/CosFace weights)
    form a second param group with ``loss_lr`` (default: the optimizer lr)."""
    name, params = resolve_params("optimizer", section)
    groups: list[dict[str, Any]] = [
        {"params": [p for p in model.parameters() if p.requires_grad]}
    ]
    loss_params = [p for p in loss_fn.parameters()] if loss_fn is not None else []
    if loss_params:
        groups.append({"params": loss_params,
                       "lr": float(params["lr"] if loss_lr is None else loss_lr)})
    return OPTIMIZERS[name].build(groups, **params)


class LRSchedule:
    """Linear warm-up (per batch or per epoch) then the torch scheduler, stepped per epoch.

    During warm-up the scheduler is not stepped; each group's lr is its base lr times the
    warm-up fraction. Cosine then spans the remaining epochs; plateau watches val R@1."""

    def __init__(self, optimizer: torch.optim.Optimizer, section: dict[str, Any] | None,
                 max_epochs: int, batches_per_epoch: int) -> None:
        name, params = resolve_params("scheduler", section)
        self.name = name
        self.optimizer = optimizer
        self.warmup = int(params.pop("warmup_epochs") or 0)
        self.per_batch = bool(params.pop("warmup_per_batch"))
        self.batches = max(1, int(batches_per_epoch))
        self.base = [float(g["lr"]) for g in optimizer.param_groups]
        self.scheduler = SCHEDULERS[name].build(
            optimizer, max(1, int(max_epochs) - self.warmup), self.warmup, **params)

    def _scale(self, factor: float) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base, strict=True):
            group["lr"] = base * factor

    def before_batch(self, epoch: int, batch: int) -> None:
        """Set the warm-up lr for batch ``batch`` of epoch ``epoch`` (0-based)."""
        if epoch < self.warmup:
            done = epoch * self.batches + batch + 1 if self.per_batch else epoch + 1
            self._scale(done / (self.warmup * (self.batches if self.per_batch else 1)))

    def after_epoch(self, epochs_done: int, val_r1: float) -> None:
        """Step after ``epochs_done`` completed epochs with their val R@1."""
        if epochs_done < self.warmup:
            return
        if epochs_done == self.warmup and self.warmup > 0:
            self._scale(1.0)  # warm-up over: the scheduler starts from the base lr
            return
        if isinstance(self.scheduler, _sched.ReduceLROnPlateau):
            self.scheduler.step(val_r1)
        elif self.scheduler is not None:
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {"base": self.base,
                "scheduler": self.scheduler.state_dict() if self.scheduler else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base = list(state["base"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])


# ------------------------------------------------------------------------------ helpers
def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    random.setstate(state["python"])


def read_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load a vpr-tune checkpoint dict; anything else -> UserError."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"checkpoint {path} is a directory; expected a .pt file")
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"checkpoint {path} is truncated or corrupt, or not a vpr-tune "
                        f"checkpoint (cannot load: {type(exc).__name__})") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a vpr-tune checkpoint (written by train or run)")
    if state.get("version", 0) > CHECKPOINT_VERSION:
        raise UserError(f"{path} was written by a newer vpr-tune (format "
                        f"{state['version']} > {CHECKPOINT_VERSION})")
    return state


def load_model_from_checkpoint(
    path: Path | str, device: str | torch.device = "cpu"
) -> tuple[VPRModel, dict[str, Any]]:
    """``(model in eval mode, config)`` from a checkpoint written by ``Trainer``."""
    state = read_checkpoint(path)
    cfg = state["config"]
    model_cfg = {**cfg["model"], "pretrained": "none"}  # weights come from the checkpoint
    model = build_model(model_cfg, tuple(state["image_size"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg


# ------------------------------------------------------------------------------ trainer
class Trainer:
    """Trains one config on ``data_root``; see the module docstring.

    >>> t = Trainer(cfg, root); t.validate(); t.run_epoch(); t.save_checkpoint("last.pt")
    """

    def __init__(self, cfg: dict[str, Any], data_root: Path, device: str | None = None,
                 num_threads: int | None = None, log: Callable[[str], Any] = print) -> None:
        from vpr_tune.data import datasets

        self.cfg = copy.deepcopy(cfg)
        self.log = log
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.cuda = self.device.type == "cuda"
        if num_threads and not self.cuda:
            torch.set_num_threads(int(num_threads))
        self.seed = int(cfg.get("seed") or 0)
        seed_everything(self.seed)

        data, budget = cfg["data"], cfg["budget"]
        self.image_size = (int(data["image_size"][0]), int(data["image_size"][1]))
        self.max_epochs = int(budget["max_epochs"])
        self.eval_batch_size = int(budget.get("eval_batch_size", 64))
        self.cache = bool(data.get("cache", True))
        root = Path(data_root)
        skip = bool(data.get("skip_bad_files", False))
        self.train_split = datasets.load_train_split(
            datasets.find_split(root, data["train"]),
            min_images_per_place=int(data.get("min_images_per_place", 4)), skip_bad_files=skip)
        self.val_split = datasets.load_eval_split(
            datasets.find_split(root, data["val"]), skip_bad_files=skip)

        self.model = build_model(cfg["model"], self.image_size).to(self.device)
        self.precision = str((cfg.get("resources") or {}).get("precision") or "auto")
        self.amp_dtype = autocast_dtype(self.precision, self.device)
        self.channels_last = channels_last(self.device, self.amp_dtype)
        amp = f"{str(self.amp_dtype)[len('torch.'):]} autocast" if self.amp_dtype else "float32"
        log(f"precision: {self.precision} -> {amp} on {self.device.type}")
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.loss_fn = build_loss(cfg["loss"], self.train_split.num_places,
                                  self.model.dim).to(self.device)
        self.miner = build_miner(cfg.get("miner"))

        places = int(budget["places_per_batch"])
        if places > self.train_split.num_places:
            log(f"budget.places_per_batch {places} > {self.train_split.num_places} places "
                "in the train split: using all places per batch")
            places = self.train_split.num_places
        self.batches_per_epoch = int(budget["batches_per_epoch"])
        self.loader = datasets.TrainLoader(
            self.train_split, self.image_size, places, int(budget["images_per_place"]),
            self.batches_per_epoch, self.seed, augment=bool(data.get("augment", True)),
            cache=self.cache, device=str(self.device))

        if isinstance(self.model.aggregator, NetVLAD):
            self._init_netvlad()
        self.optimizer = build_optimizer(cfg["optimizer"], self.model, self.loss_fn,
                                         (cfg["loss"] or {}).get("lr"))
        self.schedule = LRSchedule(self.optimizer, cfg.get("scheduler"), self.max_epochs,
                                   self.batches_per_epoch)
        # Only float16 needs loss scaling (bfloat16 has float32's range).
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.amp_dtype == torch.float16)
        self.epoch = 0
        # best.pt follows the search's metric (val/R@1 unless the YAML says otherwise).
        search = cfg.get("search") or {}
        self.best_metric = str(search.get("metric") or "val/R@1")
        if self.best_metric not in SEARCH_METRICS:
            self.best_metric = "val/R@1"
        self.best_sign = -1.0 if search.get("mode") == "min" else 1.0
        self.best: dict[str, Any] | None = None  # {"metric", "value", "epoch"}
        self.is_best = False  # the last validate()/run_epoch() set a new best
        self.history: list[dict[str, Any]] = []
        self.timings: dict[str, float] = {}

    # -------------------------------------------------------------------------- netvlad
    def _init_netvlad(self, images: int = 500, per_image: int = 64) -> None:
        """k-means on local features of (up to) ``images`` training images (seeded)."""
        from vpr_tune.data.datasets import eval_batches

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
        out = {f"val/R@{n}": float(metrics[f"R@{n}"]) for n in NS}
        value = out[self.best_metric]
        self.is_best = (self.best is None or self.best.get("metric") != self.best_metric
                        or self.best_sign * (value - self.best["value"]) > 0)
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
        return total / max(1, count)

    def run_epoch(self, on_batch: Callable[[int, float], Any] | None = None) -> dict[str, Any]:
        """Train one epoch, validate, step the scheduler; returns the epoch's metrics."""
        loss = self.train_epoch(on_batch)
        lr = self.lr
        self.epoch += 1
        metrics = self.validate()
        self.schedule.after_epoch(self.epoch, metrics["val/R@1"])
        row = {"epoch": self.epoch, "train/loss": loss, "lr": lr, **metrics}
        self.history.append(row)
        return row

    # ----------------------------------------------------------------------- checkpoints
    def save_checkpoint(self, path: Path | str) -> Path:
        """Write everything needed to resume (atomic: a tmp file then ``os.replace``)."""
        return self._save(path, optimizer=self.optimizer.state_dict(),
                          schedule=self.schedule.state_dict(), loss=self.loss_fn.state_dict(),
                          scaler=self.scaler.state_dict(), history=self.history,
                          rng=_rng_state())

    def save_model(self, path: Path | str) -> Path:
        """Write the model alone (no optimizer or RNG state): enough for ``eval`` and retest,
        a third of a full checkpoint with Adam. Atomic like :meth:`save_checkpoint`."""
        return self._save(path)

    def _save(self, path: Path | str, **extra: Any) -> Path:
        path = Path(path)
        state = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                 "config": self.cfg, "image_size": list(self.image_size), "dim": self.model.dim,
                 "epoch": self.epoch, "model": self.model.state_dict(), "best": self.best,
                 **extra}
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        return path

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
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.best = state.get("best")
        self.history = list(state.get("history") or [])
        _set_rng_state(state["rng"])


# ------------------------------------------------------------------------- train command
METRIC_COLUMNS = ["epoch", "train/loss", "lr", *[f"val/R@{n}" for n in NS], "time_s"]


_FREE_SECTIONS = ("aggregator", "loss", "miner", "optimizer", "scheduler", "test")


def _deep_merge(base: dict[str, Any], over: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Overlay ``over`` on ``base``; unknown keys are errors except inside sections whose
    keys depend on the chosen name (loss params, aggregator params, ...)."""
    for key, value in over.items():
        if key not in base:
            raise UserError(f"{where}{key}: unknown key (allowed: {', '.join(sorted(base))})")
        if isinstance(base[key], dict) and isinstance(value, dict):
            if key in _FREE_SECTIONS:
                base[key] = {**base[key], **value}
            else:
                _deep_merge(base[key], value, f"{where}{key}.")
        else:
            base[key] = value
    return base


def load_train_config(path: Path | str) -> dict[str, Any]:
    """The resolved config of a train YAML (search-space schema, every value fixed)."""
    from vpr_tune import config as config_mod

    path = Path(path)
    if path.is_dir():
        raise UserError(f"config {path} is a directory; expected a YAML file")
    if not path.is_file():
        raise UserError(f"config {path} does not exist")
    if hasattr(config_mod, "load_space"):
        space = config_mod.load_space(path)
        if space.params:
            raise UserError(f"{path}: train needs fixed values; these vary: "
                            f"{', '.join(sorted(space.params))} (use `vpr-tune run` to search)")
        return copy.deepcopy(space.base)
    import yaml

    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of config sections at the top")
    return _deep_merge(config_mod.defaults(), raw, f"{path}: ")


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

    import yaml
    from torch.utils.tensorboard import SummaryWriter

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
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
        with metrics_path.open("w", newline="") as f:  # rewritten whole: always consistent
            w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
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
                   "time_s": round(time.perf_counter() - start, 2)}
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
