"""The parts a :class:`vpr_tune.train.Trainer` is built from, one function each.

``Trainer.__init__`` calls them in order: device (and CPU threads), seed, splits, precision,
model, loss and miner, train loader (and the val image cache), NetVLAD's k-means init,
optimizer and lr schedule, gradient scaler (the metric ``best.pt`` follows is
``metrics.ranking``). Each takes the config section (or the values) it needs and returns its
part; none keeps state.

>>> device = torch_device("cpu", num_threads=1)
>>> train_split, val_split = load_splits(cfg["data"], data_root)
>>> optimizer, schedule = build_optimizer(cfg, model, loss_fn, max_epochs=10, batches=50)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vpr_tune.components import build_loss as registry_loss
from vpr_tune.components import build_optimizer as registry_optimizer
from vpr_tune.device import pick_device
from vpr_tune.model import VPRModel, build_model
from vpr_tune.precision import autocast_dtype, channels_last
from vpr_tune.schedule import LRSchedule

Log = Callable[[str], Any]


def torch_device(device: str | None, num_threads: int | None) -> torch.device:
    """``device``, else :func:`vpr_tune.device.pick_device`; on CPU, torch gets
    ``num_threads`` threads."""
    picked = torch.device(device or pick_device())
    if num_threads and picked.type != "cuda":
        torch.set_num_threads(int(num_threads))
    return picked


def load_splits(data: dict[str, Any], data_root: Path | str) -> tuple[Any, Any]:
    """``(train split, val split)`` of the ``data`` section under ``data_root``."""
    from vpr_tune.data.splits import find_split, load_eval_split, load_train_split

    root = Path(data_root)
    skip = bool(data["skip_bad_files"])
    train = load_train_split(find_split(root, data["train"]),
                             min_images_per_place=int(data["min_images_per_place"]),
                             skip_bad_files=skip)
    val = load_eval_split(find_split(root, data["val"]), skip_bad_files=skip)
    return train, val


def pick_precision(precision: str, device: torch.device,
                   log: Log) -> tuple[torch.dtype | None, bool]:
    """``(autocast dtype or None for float32, channels-last memory format?)``; logs it."""
    amp_dtype = autocast_dtype(precision, device)
    amp = f"{str(amp_dtype)[len('torch.'):]} autocast" if amp_dtype else "float32"
    log(f"precision: {precision} -> {amp} on {device.type}")
    return amp_dtype, channels_last(device, amp_dtype)


def build_model_on(model: dict[str, Any], image_size: tuple[int, int], device: torch.device,
                   use_channels_last: bool) -> VPRModel:
    """The ``model`` section's network on ``device`` (channels-last when asked)."""
    net = build_model(model, image_size).to(device)
    if use_channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def build_loss(cfg: dict[str, Any], num_places: int, model: VPRModel,
               device: torch.device) -> torch.nn.Module:
    """The ``loss`` section's loss on ``device`` (classifier losses: one class per place)."""
    return registry_loss(cfg["loss"], num_places, model.dim).to(device)


def build_optimizer(cfg: dict[str, Any], model: VPRModel, loss_fn: torch.nn.Module,
                    max_epochs: int, batches: int) -> tuple[torch.optim.Optimizer, LRSchedule]:
    """The ``optimizer`` section's optimizer (a classifier loss's weights in a group of their
    own, at ``loss.lr``) and the ``scheduler`` section's lr schedule over it."""
    optimizer = registry_optimizer(cfg["optimizer"], model, loss_fn, cfg["loss"].get("lr"))
    return optimizer, LRSchedule(optimizer, cfg["scheduler"], max_epochs, batches)


def build_train_loader(cfg: dict[str, Any], train_split: Any, image_size: tuple[int, int],
                       device: torch.device, log: Log) -> Any:
    """The P x K ``TrainLoader`` of the ``budget`` and ``data`` sections, seeded by ``seed``.
    More places per batch than the split has -> all of them (logged)."""
    from vpr_tune.data.loader import TrainLoader
    from vpr_tune.progress import log_progress

    data, budget = cfg["data"], cfg["budget"]
    places = int(budget["places_per_batch"])
    if places > train_split.num_places:
        log(f"budget.places_per_batch {places} > {train_split.num_places} places "
            "in the train split: using all places per batch")
        places = train_split.num_places
    return TrainLoader(
        train_split, image_size, places, int(budget["images_per_place"]),
        int(budget["batches_per_epoch"]), int(cfg["seed"]), augment=data["augment"],
        cache=bool(data["cache"]), device=str(device),
        skip_bad_files=bool(data["skip_bad_files"]),
        progress=log_progress(log, f"image cache (train, {_size(image_size)})"))


def warm_val_cache(val_split: Any, image_size: tuple[int, int], skip_bad_files: bool,
                   log: Log) -> None:
    """Build the val images' decode-once cache now, with progress (not silently at the
    first validation)."""
    from vpr_tune.data.cache import cached_images
    from vpr_tune.progress import log_progress

    cached_images([*val_split.db_paths, *val_split.q_paths], image_size,
                  skip_bad_files=skip_bad_files,
                  progress=log_progress(log, f"image cache (val, {_size(image_size)})"))


def init_netvlad(model: VPRModel, paths: list[Path], *, image_size: tuple[int, int],
                 batch_size: int, cache: bool, seed: int, device: torch.device, log: Log,
                 images: int = 500, per_image: int = 64) -> None:
    """NetVLAD's clusters by k-means on local features of (up to) ``images`` of ``paths``
    (``per_image`` features each; seeded)."""
    from vpr_tune.data.loader import eval_batches

    rng = np.random.default_rng(seed)
    pick = rng.choice(len(paths), size=min(images, len(paths)), replace=False)
    chunks: list[np.ndarray] = []
    model.eval()
    with torch.inference_mode():
        for batch in eval_batches([paths[i] for i in sorted(pick)], image_size, batch_size,
                                  cache=cache, device="cpu"):
            feats = torch.nn.functional.normalize(
                model.features(batch.to(device)).float(), dim=1)
            feats = feats.flatten(2).transpose(1, 2).reshape(-1, feats.shape[1])
            take = rng.choice(len(feats), size=min(len(feats), per_image * len(batch)),
                              replace=False)
            chunks.append(feats[torch.from_numpy(take).to(feats.device)].cpu().numpy())
    model.train()
    features = np.concatenate(chunks)
    log(f"NetVLAD: k-means on {len(features)} local features")
    model.aggregator.init_from_descriptors(features, seed=seed)


def grad_scaler(device: torch.device, amp_dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """Loss scaling, enabled for float16 only (bfloat16 has float32's range)."""
    return torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)


def _size(image_size: tuple[int, int]) -> str:
    return f"{image_size[0]}x{image_size[1]}"
