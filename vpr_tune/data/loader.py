"""Batches for training and evaluation: the P x K sampler and the input pipeline.

This is the performance-critical part of the data code (``vpr-tune bench loader`` and
``eval`` measure it):

- :class:`PKSampler` picks P places x K images per batch, deterministic per seed.
- :class:`TrainLoader` serves those batches from the decode-once cache (or PIL each step),
  augmenting on tensors; the next batch is prepared in a background thread.
- :func:`eval_batches` serves eval images in order, normalised the same way.

>>> loader = TrainLoader(load_train_split(root), [224, 224], places_per_batch=16,
...                      images_per_place=4, batches_per_epoch=100)
>>> for images, labels in loader.epoch(0): ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from vpr_tune.data.augment import Aug, augment_params, draw_augmentation, identity, perspective
from vpr_tune.data.cache import as_hw, cached_images, load_image
from vpr_tune.data.splits import TrainSplit
from vpr_tune.errors import UserError
from vpr_tune.progress import Progress

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ------------------------------------------------------------------------------ sampler
class PKSampler:
    """P places x K images per batch; no place twice in a batch; deterministic per seed.

    Each pass shuffles the places and cuts them into groups of P; every place contributes
    K distinct images drawn at random (places must have at least K images). An epoch has
    ``batches_per_epoch`` batches (default: one pass, ``num_places // P``).
    ``iter(sampler)`` yields the batches of the current epoch (``set_epoch``).
    """

    def __init__(
        self,
        labels: np.ndarray | Sequence[int],
        places_per_batch: int,
        images_per_place: int,
        seed: int = 0,
        batches_per_epoch: int | None = None,
    ) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        self.P, self.K, self.seed = int(places_per_batch), int(images_per_place), int(seed)
        self.places, counts = np.unique(self.labels, return_counts=True)
        if self.P < 1 or self.K < 1:
            raise UserError("budget.places_per_batch and images_per_place must be >= 1")
        if len(self.places) < self.P:
            raise UserError(
                f"budget.places_per_batch={self.P} but the train split has only "
                f"{len(self.places)} places"
            )
        if counts.min() < self.K:
            raise UserError(
                f"budget.images_per_place={self.K} but some places have only {counts.min()} "
                "images (raise data.min_images_per_place to at least K)"
            )
        self.batches_per_epoch = batches_per_epoch or len(self.places) // self.P
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.batches(self.epoch)

    def batches(self, epoch: int) -> Iterator[np.ndarray]:
        """The index arrays (length P*K, grouped by place) of one epoch."""
        rng = np.random.default_rng([self.seed, int(epoch), 7919])
        n_groups = len(self.places) // self.P
        made = 0
        while made < self.batches_per_epoch:
            # One pass: images of each place in random order, then places in random order.
            order = np.lexsort((rng.random(len(self.labels)), self.labels))
            starts = np.searchsorted(self.labels[order], self.places)
            perm = rng.permutation(len(self.places))
            for g in range(min(n_groups, self.batches_per_epoch - made)):
                chosen = perm[g * self.P : (g + 1) * self.P]
                idx = starts[chosen][:, None] + np.arange(self.K)[None, :]
                yield order[idx.reshape(-1)]
                made += 1


# ------------------------------------------------------------------------------ tensors
# The input pipeline keeps per-batch CPU work small: images stay uint8 until the last step,
# the random crop is taken while copying out of the memmap, the resize is one batched uint8
# interpolate, and colour jitter + ImageNet normalisation + uint8->float32 + NHWC->NCHW are
# one lookup table per (image, channel). On CUDA the uint8 crop is copied to the GPU
# (4x fewer bytes) and resize/colour run there. Augmentation parameters come from a numpy
# generator seeded by (seed, epoch, batch), so batches do not depend on thread timing.

def _torch() -> Any:
    import torch  # imported lazily: `vpr-tune data check` and --help stay fast

    return torch


_MEAN = np.asarray(IMAGENET_MEAN, dtype=np.float32)
_STD = np.asarray(IMAGENET_STD, dtype=np.float32)


def _crops(get: Callable[[int], np.ndarray], idx: np.ndarray, aug: Aug) -> np.ndarray:
    """(B, ch, cw, 3) uint8: image ``idx[j]`` cropped at ``aug.offsets[j]`` (one copy)."""
    ch, cw = aug.crop_hw
    out = np.empty((len(idx), ch, cw, 3), dtype=np.uint8)
    for j, i in enumerate(idx):  # B slice copies; cheap next to any per-pixel work
        y, x = aug.offsets[j]
        out[j] = get(int(i))[y : y + ch, x : x + cw]
    return out


def _finish_cpu(crops: np.ndarray, hw: tuple[int, int], aug: Aug) -> Any:
    """uint8 crops -> normalised float32 NCHW on the CPU (resize + one LUT pass)."""
    torch = _torch()
    import torch.nn.functional as F  # noqa: N812

    t = torch.from_numpy(crops).permute(0, 3, 1, 2)  # channels_last view, no copy
    if tuple(t.shape[2:]) != hw:
        t = F.interpolate(t, size=hw, mode="bilinear", align_corners=False)
    if aug.warp is not None:  # only when data.augment.perspective > 0
        t = perspective(t.float(), aug.warp).round_().clamp_(0, 255).to(torch.uint8)
    nhwc = t.permute(0, 2, 3, 1).contiguous().numpy()
    levels = np.arange(256, dtype=np.float32)
    lut = (levels[None, None, :] * aug.gain[:, :, None] + aug.bias[:, :, None]).clip(0, 1)
    lut = ((lut - _MEAN[None, :, None]) / _STD[None, :, None]).astype(np.float32)
    out = np.empty((len(nhwc), 3, *hw), dtype=np.float32)
    for b in range(len(nhwc)):
        for c in range(3):
            np.take(lut[b, c], nhwc[b, :, :, c], out=out[b, c])
    return torch.from_numpy(out)


def _finish_cuda(crops_dev: Any, hw: tuple[int, int], aug: Aug) -> Any:
    """The same on the GPU: uint8 NHWC crops on device -> normalised channels_last float."""
    torch = _torch()
    import torch.nn.functional as F  # noqa: N812

    dev = crops_dev.device
    x = crops_dev.permute(0, 3, 1, 2).float()
    if tuple(x.shape[2:]) != hw:
        x = F.interpolate(x, size=hw, mode="bilinear", align_corners=False)
    if aug.warp is not None:
        x = perspective(x, aug.warp)
    gain = torch.from_numpy(aug.gain).to(dev).view(-1, 3, 1, 1)
    bias = torch.from_numpy(aug.bias).to(dev).view(-1, 3, 1, 1)
    mean = torch.from_numpy(_MEAN).to(dev).view(1, 3, 1, 1)
    std = torch.from_numpy(_STD).to(dev).view(1, 3, 1, 1)
    x = x.mul_(gain).add_(bias).clamp_(0, 1).sub_(mean).div_(std)
    return x.contiguous(memory_format=torch.channels_last)


def _prefetched(make: Callable[[int], Any], n: int) -> Iterator[Any]:
    """``make(0..n-1)`` with the next item prepared in a background thread."""
    if n <= 0:
        return
    with ThreadPoolExecutor(1) as pool:
        nxt = pool.submit(make, 0)
        for i in range(n):
            cur = nxt.result()
            if i + 1 < n:
                nxt = pool.submit(make, i + 1)
            yield cur


class _Source:
    """Images by index: decode-once memmap (``cache=True``) or PIL per request."""

    def __init__(
        self, paths: Sequence[Path], image_size: Any, cache: bool, skip_bad_files: bool = False,
        progress: Progress | None = None,
    ) -> None:
        self.paths, self.hw = list(paths), as_hw(image_size)
        self.array = (
            cached_images(self.paths, self.hw, skip_bad_files=skip_bad_files, progress=progress)
            if cache else None
        )

    def get(self, i: int) -> np.ndarray:
        if self.array is not None:
            return self.array[i]
        return load_image(self.paths[i], self.hw)


class _Pipeline:
    """Host stage (background thread) + device stage shared by train and eval batches."""

    def __init__(self, source: _Source, device: str) -> None:
        self.source, self.device = source, str(device)
        self.cuda = self.device.startswith("cuda")

    def host(self, idx: np.ndarray, aug: Aug) -> Any:
        crops = _crops(self.source.get, idx, aug)
        if not self.cuda:
            return _finish_cpu(crops, self.source.hw, aug)
        return _torch().from_numpy(crops).pin_memory().to(self.device, non_blocking=True)

    def device_stage(self, x: Any, aug: Aug) -> Any:
        return _finish_cuda(x, self.source.hw, aug) if self.cuda else x


class TrainLoader:
    """P x K training batches: ``for images, labels in loader.epoch(e)``.

    ``images`` float32 NCHW normalised with ImageNet mean/std on ``device`` (channels_last on
    CUDA), ``labels`` int64. Deterministic for (seed, epoch). With ``cache=True`` images come
    from the decode-once memmap; the next batch is prepared in a background thread.
    """

    def __init__(
        self,
        split: TrainSplit,
        image_size: int | Sequence[int],
        places_per_batch: int,
        images_per_place: int,
        batches_per_epoch: int | None,
        seed: int = 0,
        augment: bool | dict[str, Any] = True,
        cache: bool = True,
        device: str = "cpu",
        skip_bad_files: bool = False,
        progress: Progress | None = None,
    ) -> None:
        self.split, self.hw, self.seed = split, as_hw(image_size), int(seed)
        self.augment, self.device = augment_params(augment), str(device)
        self.sampler = PKSampler(
            split.labels, places_per_batch, images_per_place, seed, batches_per_epoch
        )
        self.pipe = _Pipeline(_Source(split.paths, self.hw, cache, skip_bad_files, progress),
                              device)

    def __len__(self) -> int:
        return len(self.sampler)

    def epoch(self, epoch: int) -> Iterator[tuple[Any, Any]]:
        torch = _torch()
        batches = list(self.sampler.batches(epoch))
        labels_all = torch.from_numpy(self.split.labels)

        def host(i: int) -> tuple[Any, Any, Aug]:
            idx = batches[i]
            if self.augment["enabled"]:
                rng = np.random.default_rng([self.seed, int(epoch), i, 104729])
                aug = draw_augmentation(rng, len(idx), self.hw, self.augment)
            else:
                aug = identity(len(idx), self.hw)
            x = self.pipe.host(idx, aug)
            y = labels_all[torch.from_numpy(idx)].to(self.device, non_blocking=True)
            return x, y, aug

        for x, y, aug in _prefetched(host, len(batches)):
            yield self.pipe.device_stage(x, aug), y

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        return self.epoch(self.sampler.epoch)


def eval_batches(
    paths: Sequence[str | Path],
    image_size: int | Sequence[int],
    batch_size: int,
    cache: bool = True,
    device: str = "cpu",
    skip_bad_files: bool = False,
) -> Iterator[Any]:
    """Float32 NCHW normalised tensors of ``paths`` in order, ``batch_size`` at a time."""
    source = _Source([Path(p) for p in paths], image_size, cache, skip_bad_files)
    pipe = _Pipeline(source, device)
    n = len(source.paths)
    starts = list(range(0, n, batch_size))

    def host(i: int) -> tuple[Any, Aug]:
        idx = np.arange(starts[i], min(n, starts[i] + batch_size))
        aug = identity(len(idx), source.hw)
        return pipe.host(idx, aug), aug

    for x, aug in _prefetched(host, len(starts)):
        yield pipe.device_stage(x, aug)
