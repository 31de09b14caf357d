"""VPR model = ResNet backbone (cut, partly frozen) + aggregator -> L2-normalised descriptor.

>>> model = build_model({"backbone": "resnet18", "aggregator": {"name": "gem"}}, (64, 64))
>>> model(torch.zeros(2, 3, 64, 64)).shape == (2, model.dim)
True
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vpr_tune.errors import UserError
from vpr_tune.model.aggregators import AGGREGATORS
from vpr_tune.model.backbones import BACKBONES, build_backbone, feature_size

__all__ = ["AGGREGATORS", "BACKBONES", "VPRModel", "aggregator_params", "build_model"]


def aggregator_params(name: str) -> set[str]:
    """Keyword parameters the YAML may set for aggregator ``name`` (besides ``name``)."""
    if name not in AGGREGATORS:
        raise UserError(
            f"model.aggregator.name: {name!r} is not one of {', '.join(AGGREGATORS)}"
        )
    sig = inspect.signature(AGGREGATORS[name].__init__)
    return {p for p in sig.parameters if p not in ("self", "in_channels", "feature_size")}


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
    """Build the model from the ``model`` config section for images of ``image_size`` (H, W)."""
    agg_cfg = dict(model_cfg.get("aggregator") or {"name": "gem"})
    name = agg_cfg.pop("name", "gem")
    allowed = aggregator_params(name)
    unknown = set(agg_cfg) - allowed
    if unknown:
        raise UserError(
            f"model.aggregator: {', '.join(sorted(unknown))} not a parameter of {name!r} "
            f"(allowed: {', '.join(sorted(allowed)) or 'none'})"
        )
    image_size = (int(image_size[0]), int(image_size[1]))
    backbone, channels, stride = build_backbone(
        model_cfg.get("backbone", "resnet18"),
        model_cfg.get("pretrained", "none"),
        model_cfg.get("cut", "layer4"),
        model_cfg.get("freeze_stages", 0),
    )
    aggregator = AGGREGATORS[name](channels, feature_size(image_size, stride), **agg_cfg)
    return VPRModel(backbone, aggregator, image_size)
