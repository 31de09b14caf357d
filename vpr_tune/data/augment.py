"""Training augmentation as hyperparameters (``data.augment``), drawn per batch.

``data.augment`` is ``true``/``false`` or a section whose keys a search may vary::

    data:
      augment:
        crop_min: {uniform: [0.6, 0.9]}   # random crop of crop_min..crop_max of the side
        jitter: {uniform: [0.0, 0.4]}     # brightness/contrast in 1 +- jitter
        perspective: 0.1                  # corners move up to 10 % of the side (0 = off)

Everything is drawn from a numpy generator seeded by (seed, epoch, batch) and applied to the
cached uint8 tensors by ``vpr_tune.data.loader``: the crop while copying out of the memmap,
jitter inside the normalisation lookup table, perspective as one batched ``grid_sample``
(only when ``perspective > 0``). No flips: a mirrored street is another place.

>>> params = augment_params({"jitter": 0.1})
>>> params["crop_min"], params["jitter"], params["perspective"]
(0.8, 0.1, 0.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vpr_tune import config as _config

# ``augment: true`` means these (config.DEFAULTS is where they are written).
DEFAULTS: dict[str, Any] = _config.DEFAULTS["data"]["augment"]


def augment_params(value: Any) -> dict[str, Any]:
    """The full ``data.augment`` mapping of a config value (a bool or a partial mapping)."""
    if isinstance(value, dict):
        return {**DEFAULTS, **value}
    return {**DEFAULTS, "enabled": bool(value)}


@dataclass
class Aug:
    """Per-batch augmentation: one crop size, per-image offsets, colour affine and warp."""

    crop_hw: tuple[int, int]
    offsets: np.ndarray  # (B, 2) top-left y, x
    gain: np.ndarray  # (B, 3): value = clip(pixel * gain + bias, 0, 1) before normalising
    bias: np.ndarray  # (B, 3)
    warp: np.ndarray | None = None  # (B, 4, 2) corner shifts in [-1, 1] units, or None


def identity(b: int, hw: tuple[int, int]) -> Aug:
    """No augmentation: full image, pixel / 255."""
    return Aug(hw, np.zeros((b, 2), np.int64), np.full((b, 3), 1 / 255, np.float32),
               np.zeros((b, 3), np.float32))


def draw_augmentation(rng: np.random.Generator, b: int, hw: tuple[int, int],
                      params: dict[str, Any] | None = None) -> Aug:
    """One batch's augmentation under ``params`` (see :data:`DEFAULTS`): a crop of
    crop_min..crop_max of the side resized back, brightness/contrast and white balance,
    and (``perspective > 0``) a random perspective per image."""
    p = augment_params(params if params is not None else True)
    h, w = hw
    scale = rng.uniform(float(p["crop_min"]), max(float(p["crop_min"]), float(p["crop_max"])))
    aspect = float(p["aspect"])
    ch = max(1, min(h, round(h * scale)))
    cw = max(1, min(w, round(w * scale * rng.uniform(1 - aspect, 1 + aspect))))
    offsets = np.stack([rng.integers(0, h - ch + 1, b), rng.integers(0, w - cw + 1, b)], 1)
    j, wb = float(p["jitter"]), float(p["white_balance"])
    bright = rng.uniform(1 - j, 1 + j, (b, 1))
    contrast = rng.uniform(1 - j, 1 + j, (b, 1))
    gain = bright * rng.uniform(1 - wb, 1 + wb, (b, 3)) * contrast / 255.0
    bias = np.repeat(0.5 * (1 - contrast), 3, axis=1)  # contrast pivots on mid-grey
    warp = None
    if float(p["perspective"]) > 0:
        # corners in grid_sample units ([-1, 1] spans the side): a shift of d of the side
        warp = rng.uniform(-1, 1, (b, 4, 2)) * 2 * float(p["perspective"])
    return Aug((ch, cw), offsets, gain.astype(np.float32), bias.astype(np.float32),
               None if warp is None else warp.astype(np.float32))


def _homographies(dst: np.ndarray) -> np.ndarray:
    """(B, 3, 3) maps taking the output square's corners to the (moved) corners ``dst``."""
    src = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)
    out = np.empty((len(dst), 3, 3))
    for b, d in enumerate(dst.astype(np.float64)):
        rows, rhs = [], []
        for (x, y), (u, v) in zip(src, d, strict=True):
            rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
            rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
            rhs += [u, v]
        out[b] = np.append(np.linalg.solve(np.asarray(rows), np.asarray(rhs)), 1).reshape(3, 3)
    return out


def perspective(x: Any, warp: np.ndarray) -> Any:
    """Warp a (B, C, H, W) float tensor: output corner k samples input corner + ``warp[:, k]``
    (bilinear, border pixels repeated). One batched ``grid_sample``."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    b, _, h, w = x.shape
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32)
    hom = torch.from_numpy(_homographies(corners[None] + warp)).to(x.device, torch.float32)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=x.device),
                            torch.linspace(-1, 1, w, device=x.device), indexing="ij")
    base = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(1, -1, 3)  # (1, HW, 3)
    mapped = base @ hom.transpose(1, 2)  # (B, HW, 3)
    grid = (mapped[..., :2] / mapped[..., 2:].clamp_min(1e-6)).reshape(b, h, w, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
