"""VPR model = ResNet backbone (cut, partly frozen) + aggregator -> L2-normalised descriptor.

>>> model = build_model({"backbone": "resnet18", "aggregator": {"name": "gem"}}, (64, 64))
>>> model(torch.zeros(2, 3, 64, 64)).shape == (2, model.dim)
True
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vpr_tune.components import AGGREGATORS, resolve_params
from vpr_tune.config import DEFAULTS
from vpr_tune.model.backbones import build_backbone, feature_size

__all__ = ["VPRModel", "build_model"]


class VPRModel(nn.Module):
    """``model(x) -> (B, dim)`` L2-normalised descriptors; ``features(x)`` the local map."""

    def __init__(
        self, backbone: nn.Module, aggregator: nn.Module, image_size: tuple[int, int]
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.aggregator = aggregator
        self.dim: int = int(aggregator.dim)
        self.image_size = tuple(image_size)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone feature map (B, C, h, w)."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Under autocast only the convolutions run in reduced precision: pooling (GeM's x^p
        # overflows float16) gets a float32 map, and normalising again in float32 keeps the
        # contract (unit norm).
        return F.normalize(self.aggregator(self.backbone(x).float()).float(), dim=1)


def build_model(model_cfg: dict[str, Any], image_size: tuple[int, int] | list[int]) -> VPRModel:
    """Build the model from the ``model`` config section for images of ``image_size`` (H, W);
    keys the section leaves out take their ``config.DEFAULTS``."""
    cfg = {**DEFAULTS["model"], **model_cfg}
    name, params = resolve_params("model.aggregator", cfg["aggregator"])
    image_size = (int(image_size[0]), int(image_size[1]))
    backbone, channels, stride = build_backbone(
        cfg["backbone"], cfg["pretrained"], cfg["cut"], cfg["freeze_stages"])
    aggregator = AGGREGATORS[name].build(channels, feature_size(image_size, stride), **params)
    return VPRModel(backbone, aggregator, image_size)
